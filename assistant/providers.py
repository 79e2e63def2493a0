"""Provider interface and registry; `ASSISTANT_PROVIDER` picks one at call time.

To add a provider (e.g. `gemini`), write `assistant/gemini.py` with a class that has
`respond(history) -> list[dict]` and register a factory below. Factories import lazily so
an optional SDK is only needed when its provider is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

ENV_VAR = "ASSISTANT_PROVIDER"
DEFAULT_PROVIDER = "offline"


@runtime_checkable
class Provider(Protocol):
    """Something that answers a conversation with the new messages of the turn."""

    def respond(self, history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Answer `history` (user message last) without mutating it."""
        ...


def _offline() -> Provider:
    from assistant.offline import OfflineProvider

    return OfflineProvider()


PROVIDERS: dict[str, Callable[[], Provider]] = {"offline": _offline}


def provider_name() -> str:
    """The provider chosen by the environment; unset or blank means the default."""
    return os.environ.get(ENV_VAR, "").strip().lower() or DEFAULT_PROVIDER


def get_provider(name: str | None = None) -> Provider:
    """Build the provider `name`, or the one `ASSISTANT_PROVIDER` names when None."""
    name = provider_name() if name is None else name.strip().lower()
    factory = PROVIDERS.get(name)
    if factory is None:
        valid = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"Unknown assistant provider {name!r}. Set {ENV_VAR} to one of: {valid}.")
    return factory()
