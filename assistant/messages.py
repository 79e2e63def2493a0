"""Build and read chat messages in the shared, Gemini-like JSON shape.

A message is `{"role": "user" | "model" | "tool", "parts": [part, ...]}` and every part has
exactly one key: `text`, `function_call` or `function_response`. Readers here are lenient:
anything malformed is skipped, because history comes from a database or a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Message = dict[str, Any]


def text_message(text: str, role: str = "model") -> Message:
    """A message with one text part."""
    return {"role": role, "parts": [{"text": text}]}


def function_call_message(name: str, args: Mapping[str, Any]) -> Message:
    """A model message asking for one tool call."""
    return {"role": "model", "parts": [{"function_call": {"name": name, "args": dict(args)}}]}


def function_response_message(name: str, response: Mapping[str, Any]) -> Message:
    """A tool message carrying one tool result."""
    return {
        "role": "tool",
        "parts": [{"function_response": {"name": name, "response": dict(response)}}],
    }


def role_of(message: object) -> str | None:
    """The message's role, or None when the message is not a dict with a string role."""
    if not isinstance(message, Mapping):
        return None
    role = message.get("role")
    return role if isinstance(role, str) else None


def text_of(message: object) -> str:
    """The message's text parts joined by spaces; non-text and malformed parts are skipped."""
    if not isinstance(message, Mapping):
        return ""
    parts = message.get("parts")
    if not isinstance(parts, list | tuple):
        return ""
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, Mapping) and isinstance(part.get("text"), str)
    ]
    return " ".join(texts)


def user_messages(history: Sequence[object]) -> list[Mapping[str, Any]]:
    """The user-role messages of the history, oldest first."""
    return [m for m in history if isinstance(m, Mapping) and m.get("role") == "user"]


def streamed_text(message: object) -> str | None:
    """A model message's text parts joined with no separator (what a stream sends as pieces
    before the message), or None when the message is not a model message with text."""
    if role_of(message) != "model":
        return None
    parts = message.get("parts")  # type: ignore[union-attr]
    if not isinstance(parts, list | tuple):
        return None
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, Mapping) and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else None
