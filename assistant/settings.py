"""Settings the assistant reads from the environment, each parsed in one place.

| variable | meaning | default |
|---|---|---|
| `ASSISTANT_PROVIDER` | `offline`, `gemini` or `openai` | `offline` |
| `ASSISTANT_MODEL` | the model a real provider asks for | per provider |
| `ASSISTANT_TIMEOUT` | seconds a real provider may stay silent (connect, each read) | 60 |
| `ASSISTANT_STREAM_DELAY` | seconds between the offline provider's streamed words | 0.02 |
| `ASSISTANT_TEST_HOOKS` | `1` turns on the offline provider's test hooks | off |
| `GEMINI_API_KEY`, `GEMINI_BASE_URL` | the gemini provider's key; another endpoint (tests) | |
| `OPENAI_API_KEY`, `OPENAI_BASE_URL` | the openai provider's key; any OpenAI-compatible server | |
"""

from __future__ import annotations

import math
import os

from assistant.errors import ProviderConfigError

DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 600.0
DEFAULT_STREAM_DELAY = 0.02
MAX_STREAM_DELAY = 5.0

# Everything a built provider depends on: assistant.respond() rebuilds one when any changes.
PROVIDER_VARIABLES = (
    "ASSISTANT_PROVIDER",
    "ASSISTANT_MODEL",
    "ASSISTANT_TIMEOUT",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


def env(name: str) -> str:
    """The variable's value with surrounding blanks removed ("" when unset)."""
    return os.environ.get(name, "").strip()


def _seconds(name: str, default: float, low: float, high: float, zero_ok: bool) -> float:
    raw = env(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high) or (value == 0 and not zero_ok):
        lowest = "0" if zero_ok else "more than 0"
        raise ProviderConfigError(
            f"{name}={raw!r} is not a number of seconds: set it to {lowest} up to {high:g} "
            f"(or unset it for the default, {default:g})."
        )
    return value


def timeout() -> float:
    """`ASSISTANT_TIMEOUT`: seconds a provider may take to connect, or stay silent while answering."""
    return _seconds("ASSISTANT_TIMEOUT", DEFAULT_TIMEOUT, 0, MAX_TIMEOUT, zero_ok=False)


def stream_delay() -> float:
    """`ASSISTANT_STREAM_DELAY`: seconds between two pieces the offline provider streams."""
    return _seconds(
        "ASSISTANT_STREAM_DELAY", DEFAULT_STREAM_DELAY, 0, MAX_STREAM_DELAY, zero_ok=True
    )


def model(default: str) -> str:
    """`ASSISTANT_MODEL`, or the provider's default."""
    return env("ASSISTANT_MODEL") or default


def required(name: str, provider: str, how: str = "") -> str:
    """A variable the provider cannot work without; a clear error naming it when unset."""
    value = env(name)
    if not value:
        raise ProviderConfigError(
            f"ASSISTANT_PROVIDER={provider} needs an API key: set {name}{how}."
        )
    return value


def hooks_enabled() -> bool:
    """`ASSISTANT_TEST_HOOKS=1` (also true/yes/on): the grader's hooks in prompts are live."""
    return env("ASSISTANT_TEST_HOOKS").lower() in {"1", "true", "yes", "on"}
