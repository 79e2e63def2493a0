"""The `openai` provider: the official `openai` SDK, for OpenAI or any OpenAI-compatible server.

`ASSISTANT_PROVIDER=openai`, `OPENAI_API_KEY` (required; a local server such as Ollama ignores
its value, so any word does), `OPENAI_BASE_URL` (e.g. `http://localhost:11434/v1` for Ollama;
OpenAI's own API when unset), `ASSISTANT_MODEL` (default `gpt-4o-mini`), `ASSISTANT_TIMEOUT`.

Our messages map onto chat completions: user text is a `user` message, model text and function
calls one `assistant` message (`content`, `tool_calls` with JSON-string arguments), each
function response a `tool` message with the `tool_call_id` of its call. Our history stores no
call ids, so earlier turns get ids made from their position (`call_<entry>_<k>`), stable for a
given history; within the turn the model's own ids are kept. The SDK retries nothing
(`max_retries=0`): a failure is reported at once, and retrying is the caller's decision.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from assistant import llm, settings
from assistant.errors import ProviderConfigError, ProviderError
from assistant.llm import Round, ToolCall
from assistant.persona import SYSTEM_INSTRUCTION
from assistant.tools import TOOLS

try:
    import openai
except ImportError:  # pragma: no cover - the extra is installed with dev
    openai = None  # type: ignore[assignment]

DEFAULT_MODEL = "gpt-4o-mini"
NAME = "openai"


def declarations() -> list[dict[str, Any]]:
    """Our tools as chat-completions `tools`."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool["description"],
                "parameters": tool["parameters"],
            },
        }
        for tool in TOOLS
    ]


def to_messages(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our history as chat-completions messages, without the system message."""
    messages: list[dict[str, Any]] = []
    ids: list[str] = []
    for index, entry in enumerate(llm.entries(history)):
        if entry.role == "user":
            messages.append({"role": "user", "content": "".join(entry.texts)})
        elif entry.role == "model":
            message: dict[str, Any] = {"role": "assistant", "content": "".join(entry.texts) or None}
            ids = [f"call_{index}_{k}" for k in range(len(entry.calls))]
            if entry.calls:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                    for call_id, (name, args) in zip(ids, entry.calls, strict=True)
                ]
            messages.append(message)
        else:  # tool: llm.entries puts it right after its calls, one response per call
            for call_id, (_name, response) in zip(ids, entry.responses, strict=True):
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": json.dumps(response)}
                )
    return messages


class OpenAIProvider(llm.ChatModelProvider):
    """Chat completions with the dice tool, streamed or not."""

    name = NAME

    def __init__(self) -> None:
        if openai is None:
            raise ProviderConfigError(
                "ASSISTANT_PROVIDER=openai needs the `openai` package: install the `openai` "
                "extra (pip install -e '.[openai]', or uv sync --extra openai)."
            )
        api_key = settings.required(
            "OPENAI_API_KEY",
            NAME,
            " (a local OpenAI-compatible server that ignores keys accepts any value)",
        )
        self.model = settings.model(DEFAULT_MODEL)
        self.timeout = settings.timeout()
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=settings.env("OPENAI_BASE_URL") or None,
            timeout=self.timeout,
            max_retries=0,
        )

    def conversation(self, history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return to_messages(history)

    def _request(self, conversation: list[dict[str, Any]], stream: bool) -> Any:
        return self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": SYSTEM_INSTRUCTION}, *conversation],
            tools=declarations(),
            stream=stream,
        )

    def model_round(
        self, conversation: list[dict[str, Any]], stream: bool
    ) -> Generator[str, None, Round]:
        if not stream:
            completion = self._request(conversation, stream=False)
            if not completion.choices:
                raise ProviderError(502, "openai returned no choices")
            choice = completion.choices[0]
            message = choice.message
            refusal = getattr(message, "refusal", None)
            self._check_refusal(choice.finish_reason, refusal)
            raw_calls = [
                (call.id, call.function.name, call.function.arguments)
                for call in message.tool_calls or []
                if getattr(call, "function", None) is not None
            ]
            return self._round(message.content or "", raw_calls, len(conversation))
        pieces: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        finish_reason = None
        refusal: list[str] = []
        with self._request(conversation, stream=True) as chunks:
            for chunk in chunks:
                if not chunk.choices:
                    continue  # e.g. a usage-only chunk
                choice = chunk.choices[0]
                delta = choice.delta
                finish_reason = choice.finish_reason or finish_reason
                if getattr(delta, "refusal", None):
                    refusal.append(delta.refusal)
                if delta.content:
                    pieces.append(delta.content)
                    yield delta.content
                for call in delta.tool_calls or []:
                    slot = calls.setdefault(call.index, ["", "", ""])
                    if call.id:
                        slot[0] = call.id
                    if call.function is not None:
                        slot[1] += call.function.name or ""
                        slot[2] += call.function.arguments or ""
        self._check_refusal(finish_reason, "".join(refusal) or None)
        raw_calls = [tuple(calls[index]) for index in sorted(calls)]
        return self._round("".join(pieces), raw_calls, len(conversation))

    @staticmethod
    def _check_refusal(finish_reason: str | None, refusal: str | None) -> None:
        if refusal:
            raise ProviderError(502, f"openai refused to answer: {llm.short(refusal)}")
        if finish_reason == "content_filter":
            raise ProviderError(502, "openai refused to answer (finish reason content_filter)")

    @staticmethod
    def _round(
        text: str, raw_calls: Sequence[tuple[str | None, str, str | None]], position: int
    ) -> Round:
        """The round, each call with the model's id or, from a server that sent none, one
        made from its position in the conversation."""
        calls = []
        for k, (call_id, name, arguments) in enumerate(raw_calls):
            args, error = llm.parse_arguments(arguments)
            calls.append(ToolCall(name or "", args, call_id or f"call_{position}_{k}", error))
        native = {"role": "assistant", "content": text or None}
        if calls:
            native["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    # Malformed arguments go back as {} (some servers parse them again);
                    # the tool response quotes what was wrong.
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.args) if call.error else arguments or "{}",
                    },
                }
                for call, (_id, _name, arguments) in zip(calls, raw_calls, strict=True)
            ]
        return Round(text=text, calls=calls, native=native)

    def append_round(
        self, conversation: list[dict[str, Any]], result: Round, responses: list[dict[str, Any]]
    ) -> None:
        conversation.append(result.native)
        for call, response in zip(result.calls, responses, strict=True):
            conversation.append(
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps(response)}
            )

    def translate(self, error: Exception) -> ProviderError | None:
        if openai is None:  # pragma: no cover
            return None
        if isinstance(error, openai.APITimeoutError):
            return llm.timed_out(NAME, self.timeout)
        if isinstance(error, openai.APIStatusError):
            return self._status_error(error)
        if isinstance(error, openai.APIConnectionError):
            return ProviderError(502, f"openai could not be reached: {llm.short(error.message)}")
        if isinstance(error, openai.APIError):  # an error event inside a stream
            return ProviderError(502, f"openai failed while answering: {llm.short(error.message)}")
        return llm.transport_error(NAME, error, self.timeout)

    @staticmethod
    def _status_error(error: Any) -> ProviderError:
        status = error.status_code
        body = error.body if isinstance(error.body, Mapping) else {}
        reason = body.get("message") or error.message or ""
        code = body.get("code") or body.get("type")
        label = f"{status} {code}" if code else str(status)
        if status in (401, 403):
            return ProviderError(
                502,
                f"openai rejected the API key ({label}): {llm.short(reason)}; check OPENAI_API_KEY",
            )
        if status == 429:
            return ProviderError(
                503,
                f"openai is rate limiting requests ({label}): {llm.short(reason)}",
                retry_after=llm.retry_after_seconds(error.response.headers.get("retry-after")),
            )
        if status == 503:
            return ProviderError(
                503,
                f"openai is unavailable ({label}): {llm.short(reason)}",
                retry_after=llm.retry_after_seconds(error.response.headers.get("retry-after")),
            )
        if status >= 500:
            return ProviderError(502, f"openai failed ({label}): {llm.short(reason)}")
        return ProviderError(502, f"openai refused the request ({label}): {llm.short(reason)}")
