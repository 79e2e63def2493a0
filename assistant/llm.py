"""What the real-model providers (gemini, openai) share: the turn and its tool loop.

A turn asks the model, and while the model asks for tools it runs them here and asks again,
at most `MAX_TOOL_ROUNDS` times. It produces our messages in order: a model text (after its
pieces, when streaming), a model message with the model's function calls, one tool message per
call, then the next round. A provider subclass supplies three things: its conversation built
from our history, one model round (streamed or not), and how a round is appended to its
conversation; plus `translate`, which turns its SDK's exceptions into `ProviderError`.

Malformed tool calls (an unknown tool, arguments that are not a JSON object, arguments the tool
refuses) are answered with a tool response `{"error": "..."}`: the model reads it and may try
again within the same bounded rounds. That keeps the call and its answer in the history, where
a person can see what went wrong, instead of failing the turn.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant import tools
from assistant.errors import ProviderError
from assistant.messages import Message, function_response_message, text_message

MAX_TOOL_ROUNDS = 5
REASON_LIMIT = 200

Item = str | Message


@dataclass
class ToolCall:
    """One function call the model made; `error` says why it cannot run as it stands."""

    name: str
    args: dict[str, Any]
    id: str = ""
    error: str | None = None


@dataclass
class Round:
    """What one model call produced: its text, its tool calls, and its native message."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    native: Any = None


def parse_arguments(raw: object) -> tuple[dict[str, Any], str | None]:
    """Tool-call arguments as a dict, or `({}, why)` when they are not a JSON object."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, Mapping):
        return dict(raw), None
    if not isinstance(raw, str):
        return {}, "the arguments were not a JSON object"
    try:
        value = json.loads(raw)
    except ValueError:
        return {}, f"the arguments were not valid JSON: {short(raw, 80)!r}"
    if not isinstance(value, dict):
        return {}, f"the arguments were not a JSON object: {short(raw, 80)!r}"
    return value, None


def run_call(call: ToolCall) -> dict[str, Any]:
    """The tool's answer to a call: its result, or `{"error": ...}` the model can read."""
    if call.error is not None:
        return {"error": f"Could not call {call.name!r}: {call.error}."}
    return tools.call_tool(call.name, call.args)


_SECRET_RE = re.compile(r"\b(?:sk-|AIza)[A-Za-z0-9_*\-]{4,}")


def short(text: str, limit: int = REASON_LIMIT) -> str:
    """One line, at most `limit` characters, anything that looks like an API key redacted."""
    text = _SECRET_RE.sub("[redacted]", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) in seconds, None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay


def timed_out(provider: str, seconds: float) -> ProviderError:
    """The 504 of a provider that stayed silent longer than `ASSISTANT_TIMEOUT`."""
    return ProviderError(504, f"{provider} did not answer within {seconds:g} s (ASSISTANT_TIMEOUT)")


def transport_error(provider: str, error: Exception, seconds: float) -> ProviderError | None:
    """An HTTP transport failure the SDK let through (e.g. a read timeout mid-stream)."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return timed_out(provider, seconds)
    if isinstance(error, httpx.TransportError):
        reason = short(str(error)) or type(error).__name__
        return ProviderError(502, f"the connection to {provider} failed: {reason}")
    return None


@dataclass
class Entry:
    """One message of the history, read leniently, in the shape every SDK needs.

    A model entry with calls is always followed by a tool entry answering each call in order.
    """

    role: str  # "user", "model" or "tool"
    texts: list[str] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


MISSING_RESPONSE = {"error": "No result of this call was recorded."}


def _read(message: object) -> Entry | None:
    if not isinstance(message, Mapping):
        return None
    role, parts = message.get("role"), message.get("parts")
    if role not in ("user", "model", "tool") or not isinstance(parts, list | tuple):
        return None
    entry = Entry(role)
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        text, call, response = (
            part.get("text"),
            part.get("function_call"),
            part.get("function_response"),
        )
        if isinstance(text, str) and text and role != "tool":
            entry.texts.append(text)
        elif isinstance(call, Mapping) and isinstance(call.get("name"), str) and role == "model":
            args = call.get("args")
            entry.calls.append((call["name"], dict(args) if isinstance(args, Mapping) else {}))
        elif (
            isinstance(response, Mapping)
            and isinstance(response.get("name"), str)
            and role == "tool"
        ):
            body = response.get("response")
            body = dict(body) if isinstance(body, Mapping) else {"result": body}
            entry.responses.append((response["name"], body))
    return entry if entry.texts or entry.calls or entry.responses else None


def entries(history: Sequence[object]) -> list[Entry]:
    """The history as entries: empty and malformed messages skipped, consecutive model (and
    tool) messages merged, each call paired with its response by name and order (a call left
    without one gets an error response; a response without a call is dropped)."""
    merged: list[Entry] = []
    for message in history:
        entry = _read(message)
        if entry is None:
            continue
        last = merged[-1] if merged else None
        if last is not None and last.role == entry.role and entry.role != "user":
            if entry.role == "model" and last.calls:  # text after calls: a new model entry
                merged.append(entry)
                continue
            last.texts += entry.texts
            last.calls += entry.calls
            last.responses += entry.responses
        else:
            merged.append(entry)
    paired: list[Entry] = []
    for index, entry in enumerate(merged):
        if entry.role == "tool":
            continue  # placed below, after the calls it answers
        paired.append(entry)
        if entry.role == "model" and entry.calls:
            following = merged[index + 1] if index + 1 < len(merged) else None
            pending = list(following.responses) if following and following.role == "tool" else []
            answers: list[tuple[str, dict[str, Any]]] = []
            for name, _args in entry.calls:
                match = next((r for r in pending if r[0] == name), None)
                if match is not None:
                    pending.remove(match)
                answers.append((name, match[1] if match else dict(MISSING_RESPONSE)))
            paired.append(Entry("tool", responses=answers))
    return paired


class ChatModelProvider:
    """The turn of a real model; subclasses speak one SDK."""

    name = "model"

    def respond(self, history: Sequence[Mapping[str, Any]]) -> list[Message]:
        """The new messages of the turn, asked without streaming."""
        return [item for item in self._turn(history, stream=False) if isinstance(item, dict)]

    def respond_stream(self, history: Sequence[Mapping[str, Any]]) -> Iterator[Item]:
        """The turn streamed: `str` pieces of model text and `dict` finished messages."""
        return self._turn(history, stream=True)

    # --- what a provider supplies ---------------------------------------------------------

    def conversation(self, history: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The SDK's conversation built from our history (system instruction excluded)."""
        raise NotImplementedError

    def model_round(self, conversation: list[Any], stream: bool) -> Generator[str, None, Round]:
        """Ask the model once: yields text pieces when streaming, returns the round."""
        raise NotImplementedError

    def append_round(
        self, conversation: list[Any], result: Round, responses: list[dict[str, Any]]
    ) -> None:
        """Add the model's round and our tool responses to the conversation, in place."""
        raise NotImplementedError

    def translate(self, error: Exception) -> ProviderError | None:
        """The ProviderError for an SDK exception, or None when it is not the provider's."""
        raise NotImplementedError

    # --- the turn -------------------------------------------------------------------------

    def _turn(self, history: Sequence[Mapping[str, Any]], stream: bool) -> Iterator[Item]:
        conversation = self.conversation(history)
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            try:
                result = yield from self.model_round(conversation, stream)
            except ProviderError:
                raise
            except Exception as error:
                translated = self.translate(error)
                if translated is None:
                    raise
                raise translated from error
            if result.text:
                yield text_message(result.text)
            if not result.calls:
                if not result.text:
                    raise ProviderError(502, f"{self.name} returned an empty answer")
                return
            if round_number == MAX_TOOL_ROUNDS:
                raise ProviderError(
                    502,
                    f"{self.name} asked for tools more than {MAX_TOOL_ROUNDS} times in one "
                    "turn (too many tool rounds)",
                )
            yield {
                "role": "model",
                "parts": [
                    {"function_call": {"name": call.name, "args": call.args}}
                    for call in result.calls
                ],
            }
            responses = [run_call(call) for call in result.calls]
            for call, response in zip(result.calls, responses, strict=True):
                yield function_response_message(call.name, response)
            self.append_round(conversation, result, responses)
