"""The tools the assistant can call, as declarations for LLM providers and as a dispatcher."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from assistant import dice

# JSON-schema declarations (name, description, parameters), ready for Gemini/OpenAI adapters.
TOOLS: tuple[dict[str, Any], ...] = (dice.TOOL,)

FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {dice.TOOL["name"]: dice.roll_dice}


def call_tool(
    name: str, args: Mapping[str, Any], rng: random.Random | None = None
) -> dict[str, Any]:
    """Run a tool call and return its `function_response.response` payload.

    Errors come back as `{"error": "..."}` rather than raising, so a model can read and
    recover from a bad call.
    """
    function = FUNCTIONS.get(name)
    if function is None:
        return {"error": f"Unknown tool {name!r}. Available: {', '.join(sorted(FUNCTIONS))}."}
    if not isinstance(args, Mapping):
        return {"error": "Tool arguments must be an object."}
    try:
        return function(**dict(args), rng=rng)
    except (TypeError, ValueError) as error:
        return {"error": str(error)}
