"""The two ways the assistant fails: a provider that failed a turn, a provider that is set up wrong."""

from __future__ import annotations

PROVIDER_STATUSES = frozenset({502, 503, 504})


class ProviderError(Exception):
    """A model provider failed this turn; the backend answers `status` with `detail`.

    `status` is what `POST /chat` answers (the `error` event's status on `/chat/stream`):
    502 the provider failed or refused (a bad key, a server error, a refusal, a broken answer),
    503 it is overloaded or rate limiting (`retry_after` seconds, when it said so),
    504 it did not answer within `ASSISTANT_TIMEOUT`. `detail` names the provider's reason
    in words a user may see: never a key, never a stack trace.
    """

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        if status not in PROVIDER_STATUSES:
            raise ValueError(f"ProviderError status must be 502, 503 or 504, not {status!r}")
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    def __repr__(self) -> str:
        extra = f", retry_after={self.retry_after!r}" if self.retry_after is not None else ""
        return f"ProviderError({self.status}, {self.detail!r}{extra})"


class ProviderConfigError(ValueError):
    """The chosen provider cannot be built: an unknown name, a missing key or SDK, a bad setting.

    The message names the environment variable to set or the extra to install. A backend calls
    `assistant.check_settings()` at startup so that this stops it there, not at the first turn.
    """
