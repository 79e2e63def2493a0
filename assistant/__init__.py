"""The shared chat engine: `respond(history)` returns the new messages of a turn.

Messages are plain JSON-ready dicts, `{"role": "user" | "model" | "tool", "parts": [...]}`,
each part holding exactly one of `text`, `function_call` or `function_response`.

`respond_stream(history)` is the same turn as a generator of `str` pieces of model text and
`dict` finished messages (every model text message after its pieces). A provider that fails
raises `ProviderError(status, detail)` (502, 503 or 504); a provider that cannot be built
(unknown name, missing key or SDK, bad setting) raises `ProviderConfigError`, which a backend
meets at startup by calling `check_settings()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from assistant import settings, tools
from assistant.errors import ProviderConfigError, ProviderError
from assistant.messages import streamed_text
from assistant.providers import (
    PROVIDERS,
    Provider,
    StreamingProvider,
    get_provider,
    provider_name,
)
from assistant.tools import TOOLS

__all__ = [
    "PROVIDERS",
    "TOOLS",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "StreamingProvider",
    "check_settings",
    "get_provider",
    "respond",
    "respond_stream",
    "tools",
]

_CACHE_SIZE = 8
_cache: dict[tuple[Any, ...], Provider] = {}
_cache_lock = threading.Lock()


def _provider() -> Provider:
    """The provider the environment names, built once per distinct setting (SDK clients keep
    their connection pools between turns); a changed variable builds a new one."""
    name = provider_name()
    key = (
        name,
        PROVIDERS.get(name),
        tuple(os.environ.get(variable) for variable in settings.PROVIDER_VARIABLES),
    )
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    provider = get_provider(name)
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = provider
    return provider


def _check_history(history: object) -> None:
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise TypeError("history must be a list of message dicts")


def check_settings() -> str:
    """Build the provider `ASSISTANT_PROVIDER` names and check the assistant's settings.

    Returns the provider's name. Raises ProviderConfigError (a ValueError) naming the variable
    to set or the extra to install: call it when a backend starts, so that a missing key stops
    it there instead of failing its first turn.
    """
    settings.timeout()
    settings.stream_delay()
    _provider()
    return provider_name()


def respond(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Answer the conversation with the provider `ASSISTANT_PROVIDER` names (default offline).

    `history` is the thread so far, new user message last; it is not mutated. Returns only
    the new messages. Raises ValueError (ProviderConfigError) for an unknown or incomplete
    provider, ProviderError when the provider fails the turn.
    """
    _check_history(history)
    return _provider().respond(history)


def respond_stream(history: Sequence[Mapping[str, Any]]) -> Iterator[str | dict[str, Any]]:
    """The turn of `respond`, streamed: a generator of `str` pieces and `dict` messages.

    Every model text message comes after its pieces, and the pieces since the previous message,
    joined with no separator, equal its text parts joined with no separator; tool calls and
    tool responses are messages only. The provider is built (and its settings checked) now;
    the model is asked when the generator is first advanced. Raises ProviderError from the
    generator when the provider fails; closing the generator early stops the provider.
    """
    _check_history(history)
    provider = _provider()
    stream = getattr(provider, "respond_stream", None)
    if stream is not None:
        return iter(stream(history))
    return _whole_messages(provider, history)


def _whole_messages(provider: Provider, history: Sequence[Mapping[str, Any]]) -> Iterator[Any]:
    """The stream of a provider that cannot stream: each model text as one piece."""
    for message in provider.respond(history):
        text = streamed_text(message)
        if text:
            yield text
        yield message
