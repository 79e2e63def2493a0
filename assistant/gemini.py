"""The `gemini` provider: Google's official `google-genai` SDK and the Gemini API.

`ASSISTANT_PROVIDER=gemini`, `GEMINI_API_KEY` (required), `ASSISTANT_MODEL` (default
`gemini-2.5-flash`), `ASSISTANT_TIMEOUT`, and `GEMINI_BASE_URL` to talk to another endpoint
(the tests point it at a local server that speaks the Gemini REST protocol).

Our message shape is Gemini's own, so the mapping is short: user text is a `user` content,
model text and function calls a `model` content, and function responses a `user` content with
`function_response` parts (Gemini has no `tool` role). Within the turn the model's own contents
are sent back as they came, thought signatures included (Gemini 3 requires them). The SDK's
retries are off (`HttpRetryOptions(attempts=1)`, its default too): a failure is reported at
once, within `ASSISTANT_TIMEOUT`, and retrying is the caller's decision. The SDK's automatic
function calling is off as well: the tool loop is ours (assistant/llm.py).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from assistant import llm, settings
from assistant.errors import ProviderConfigError, ProviderError
from assistant.llm import Round, ToolCall
from assistant.persona import SYSTEM_INSTRUCTION
from assistant.tools import TOOLS

try:
    from google import genai
    from google.genai import errors, types
except ImportError:  # pragma: no cover - the extra is installed with dev
    genai = errors = types = None  # type: ignore[assignment]

DEFAULT_MODEL = "gemini-2.5-flash"
NAME = "gemini"

# Finish reasons (and prompt block reasons) that mean the model would not answer.
REFUSALS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "LANGUAGE",
        "MODEL_ARMOR",
        "JAILBREAK",
        "OTHER",
    }
)
_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _name(value: object) -> str:
    """An SDK enum (or a plain string) as its name, e.g. `SAFETY`."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def to_contents(history: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Our history as Gemini contents (the system instruction is not one of them)."""
    contents = []
    for entry in llm.entries(history):
        parts = [types.Part(text=text) for text in entry.texts]
        parts += [
            types.Part(function_call=types.FunctionCall(name=name, args=args))
            for name, args in entry.calls
        ]
        parts += [
            types.Part(function_response=types.FunctionResponse(name=name, response=response))
            for name, response in entry.responses
        ]
        contents.append(
            types.Content(role="model" if entry.role == "model" else "user", parts=parts)
        )
    return contents


class GeminiProvider(llm.ChatModelProvider):
    """generateContent / streamGenerateContent with the dice tool."""

    name = NAME

    def __init__(self) -> None:
        if genai is None:
            raise ProviderConfigError(
                "ASSISTANT_PROVIDER=gemini needs the `google-genai` package: install the "
                "`gemini` extra (pip install -e '.[gemini]', or uv sync --extra gemini)."
            )
        api_key = settings.required(
            "GEMINI_API_KEY", NAME, " (create one at https://aistudio.google.com/apikey)"
        )
        self.model = settings.model(DEFAULT_MODEL)
        self.timeout = settings.timeout()
        self.client = genai.Client(
            api_key=api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=settings.env("GEMINI_BASE_URL") or None,
                timeout=max(1, round(self.timeout * 1000)),  # milliseconds
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        self.config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=tool["name"],
                            description=tool["description"],
                            parameters_json_schema=tool["parameters"],
                        )
                        for tool in TOOLS
                    ]
                )
            ],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    def conversation(self, history: Sequence[Mapping[str, Any]]) -> list[Any]:
        return to_contents(history)

    def model_round(self, conversation: list[Any], stream: bool) -> Generator[str, None, Round]:
        if not stream:
            response = self.client.models.generate_content(
                model=self.model, contents=conversation, config=self.config
            )
            parts, finish = self._read(response)
            return self._round(parts, finish)
        parts: list[Any] = []
        finish = ""
        chunks = self.client.models.generate_content_stream(
            model=self.model, contents=conversation, config=self.config
        )
        try:
            for chunk in chunks:
                new_parts, finish = self._read(chunk, finish)
                for part in new_parts:
                    parts.append(part)
                    if part.text and not part.thought:
                        yield part.text
        finally:
            close = getattr(chunks, "close", None)  # a generator: closing it ends the request
            if close is not None:
                close()
        return self._round(parts, finish)

    @staticmethod
    def _read(response: Any, finish: str = "") -> tuple[list[Any], str]:
        """The parts of the response's first candidate and its finish reason so far."""
        feedback = response.prompt_feedback
        blocked = _name(feedback.block_reason) if feedback is not None else ""
        if blocked and blocked != "BLOCKED_REASON_UNSPECIFIED":
            raise ProviderError(502, f"gemini refused to answer (prompt blocked: {blocked})")
        if not response.candidates:
            return [], finish
        candidate = response.candidates[0]
        finish = _name(candidate.finish_reason) or finish
        parts = list(candidate.content.parts or []) if candidate.content is not None else []
        return parts, finish

    @staticmethod
    def _round(parts: list[Any], finish: str) -> Round:
        if finish in REFUSALS:
            raise ProviderError(502, f"gemini refused to answer (finish reason {finish})")
        text = "".join(part.text for part in parts if part.text and not part.thought)
        calls = [
            ToolCall(
                part.function_call.name or "",
                dict(part.function_call.args or {}),
                part.function_call.id or "",
            )
            for part in parts
            if part.function_call is not None
        ]
        if not text and not calls and finish not in ("", "STOP", "MAX_TOKENS"):
            raise ProviderError(502, f"gemini returned no answer (finish reason {finish})")
        return Round(text=text, calls=calls, native=types.Content(role="model", parts=parts))

    def append_round(
        self, conversation: list[Any], result: Round, responses: list[dict[str, Any]]
    ) -> None:
        conversation.append(result.native)
        conversation.append(
            types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            id=call.id or None, name=call.name, response=response
                        )
                    )
                    for call, response in zip(result.calls, responses, strict=True)
                ],
            )
        )

    def translate(self, error: Exception) -> ProviderError | None:
        if errors is not None and isinstance(error, errors.APIError):
            return self._api_error(error)
        return llm.transport_error(NAME, error, self.timeout)

    @staticmethod
    def _api_error(error: Any) -> ProviderError:
        code = error.code or 0
        label = f"{code} {error.status}" if error.status else str(code)
        reason = llm.short(error.message or "")
        details = error.details if isinstance(error.details, Mapping) else {}
        details = details.get("error", details) if isinstance(details, Mapping) else {}
        extra = details.get("details") if isinstance(details, Mapping) else None
        extra = extra if isinstance(extra, list) else []
        reasons = {d.get("reason") for d in extra if isinstance(d, Mapping)}
        if (
            code in (401, 403)
            or "API_KEY_INVALID" in reasons
            or (code == 400 and "api key" in reason.lower())
        ):
            return ProviderError(
                502, f"gemini rejected the API key ({label}): {reason}; check GEMINI_API_KEY"
            )
        if code in (429, 503):
            headers = getattr(getattr(error, "response", None), "headers", None) or {}
            retry_after = llm.retry_after_seconds(headers.get("retry-after"))
            for detail in extra:  # google.rpc.RetryInfo: {"retryDelay": "17s"}
                if retry_after is None and isinstance(detail, Mapping):
                    match = _DELAY_RE.match(str(detail.get("retryDelay", "")))
                    retry_after = float(match.group(1)) if match else None
            what = "is rate limiting requests" if code == 429 else "is unavailable"
            return ProviderError(503, f"gemini {what} ({label}): {reason}", retry_after)
        if code == 504:
            return ProviderError(504, f"gemini ran out of time ({label}): {reason}")
        if code >= 500:
            return ProviderError(502, f"gemini failed ({label}): {reason}")
        return ProviderError(502, f"gemini refused the request ({label}): {reason}")
