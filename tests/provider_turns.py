"""Messages and failures shared by the provider tests (tests/test_providers_*.py)."""

from __future__ import annotations

from typing import Any

import pytest

import assistant
from assistant import ProviderError


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


def failure(history: list[dict[str, Any]], stream: bool = False) -> ProviderError:
    """The ProviderError a turn on `history` raises, streamed or not."""
    with pytest.raises(ProviderError) as excinfo:
        if stream:
            list(assistant.respond_stream(history))
        else:
            assistant.respond(history)
    return excinfo.value
