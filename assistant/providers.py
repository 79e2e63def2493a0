"""Provider interface and registry; `ASSISTANT_PROVIDER` picks one at call time.

`offline` (the default, no network), `gemini` (assistant/gemini.py, the `google-genai` SDK) and
`openai` (assistant/openai_compat.py, the `openai` SDK for any OpenAI-compatible server). To
add a provider, write a class with `respond(history) -> list[dict]` (and, to stream,
`respond_stream(history)`) and register a factory below. Factories import lazily, so an
optional SDK is only needed when its provider is chosen; building one checks its settings
(a missing key raises ProviderConfigError naming the variable).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from assistant.errors import ProviderConfigError

ENV_VAR = "ASSISTANT_PROVIDER"
DEFAULT_PROVIDER = "offline"


@runtime_checkable
class Provider(Protocol):
    """Something that answers a conversation with the new messages of the turn."""

    def respond(self, history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Answer `history` (user message last) without mutating it."""
        ...


@runtime_checkable
class StreamingProvider(Provider, Protocol):
    """A provider that can also stream its turn (`assistant.respond_stream`)."""

    def respond_stream(
        self, history: Sequence[Mapping[str, Any]]
    ) -> Iterator[str | dict[str, Any]]:
        """Yield `str` pieces of model text and `dict` finished messages, in order."""
        ...


def _offline() -> Provider:
    from assistant.offline import OfflineProvider

    return OfflineProvider()


def _gemini() -> Provider:
    from assistant.gemini import GeminiProvider

    return GeminiProvider()


def _openai() -> Provider:
    from assistant.openai_compat import OpenAIProvider

    return OpenAIProvider()


PROVIDERS: dict[str, Callable[[], Provider]] = {
    "offline": _offline,
    "gemini": _gemini,
    "openai": _openai,
}


def provider_name() -> str:
    """The provider chosen by the environment; unset or blank means the default."""
    return os.environ.get(ENV_VAR, "").strip().lower() or DEFAULT_PROVIDER


def get_provider(name: str | None = None) -> Provider:
    """Build the provider `name`, or the one `ASSISTANT_PROVIDER` names when None.

    Raises ProviderConfigError (a ValueError) for an unknown name, or when the provider's
    settings are incomplete: the message says which variable to set or which extra to install.
    """
    name = provider_name() if name is None else name.strip().lower()
    factory = PROVIDERS.get(name)
    if factory is None:
        valid = ", ".join(sorted(PROVIDERS))
        raise ProviderConfigError(
            f"Unknown assistant provider {name!r}. Set {ENV_VAR} to one of: {valid}."
        )
    return factory()
