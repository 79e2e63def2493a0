"""The shared chat engine: `respond(history)` returns the new messages of a turn.

Messages are plain JSON-ready dicts, `{"role": "user" | "model" | "tool", "parts": [...]}`,
each part holding exactly one of `text`, `function_call` or `function_response`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from assistant import tools
from assistant.providers import PROVIDERS, Provider, get_provider
from assistant.tools import TOOLS

__all__ = ["PROVIDERS", "TOOLS", "Provider", "get_provider", "respond", "tools"]


def respond(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Answer the conversation with the provider `ASSISTANT_PROVIDER` names (default offline).

    `history` is the thread so far, new user message last; it is not mutated. Returns only
    the new messages. Raises ValueError for an unknown provider name.
    """
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise TypeError("history must be a list of message dicts")
    return get_provider().respond(history)
