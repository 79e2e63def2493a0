"""Dice: parse notation like `2d6+1` and roll it. `roll_dice` is the assistant's one tool."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

MIN_COUNT, MAX_COUNT = 1, 100
MIN_SIDES, MAX_SIDES = 2, 1000
MAX_MODIFIER = 1000
# Longer digit runs are out of range anyway; refusing them before int() keeps
# "roll 99999…9d6" from costing time or memory.
MAX_DIGITS = 6

LIMITS_TEXT = (
    f"I can roll {MIN_COUNT} to {MAX_COUNT} dice with {MIN_SIDES} to {MAX_SIDES} sides each, "
    f"plus a modifier between -{MAX_MODIFIER} and +{MAX_MODIFIER}"
)

# `[count]d<sides>[+|-modifier]`, not glued to other words; the lookbehind also keeps a long
# run of digits from being rescanned at every position.
# A "." neighbour is excluded too, so "1.5d6" is not read as "5d6".
DICE_RE = re.compile(
    r"(?<![a-z0-9.])(\d*)d(\d+)(?:\s*([+-])\s*(\d+))?(?![a-z0-9]|\.\d)", re.IGNORECASE
)

TOOL: dict[str, Any] = {
    "name": "roll_dice",
    "description": (
        "Roll `count` dice with `sides` sides each and add `modifier`. "
        "Returns the individual rolls and the total. " + LIMITS_TEXT + "."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "count": {
                "type": "integer",
                "description": "How many dice to roll.",
                "minimum": MIN_COUNT,
                "maximum": MAX_COUNT,
            },
            "sides": {
                "type": "integer",
                "description": "Sides on each die, e.g. 6 or 20.",
                "minimum": MIN_SIDES,
                "maximum": MAX_SIDES,
            },
            "modifier": {
                "type": "integer",
                "description": "Added to the sum of the rolls; may be negative.",
                "minimum": -MAX_MODIFIER,
                "maximum": MAX_MODIFIER,
                "default": 0,
            },
        },
        "required": ["count", "sides"],
    },
}


class DiceError(ValueError):
    """A dice request outside the limits; the message states the limits."""


@dataclass(frozen=True)
class DiceRequest:
    """A parsed, in-range dice request."""

    count: int
    sides: int
    modifier: int = 0

    @property
    def notation(self) -> str:
        """Canonical notation, e.g. `2d6+1`, `1d20`, `3d8-2`."""
        return f"{self.count}d{self.sides}{format_modifier(self.modifier)}"

    def args(self) -> dict[str, int]:
        """The tool-call arguments for this request."""
        return {"count": self.count, "sides": self.sides, "modifier": self.modifier}


def format_modifier(modifier: int) -> str:
    """`+1`, `-2`, or `` for zero."""
    return f"{modifier:+d}" if modifier else ""


def _check(count: int, sides: int, modifier: int) -> None:
    for name, value in (("count", count), ("sides", sides), ("modifier", modifier)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DiceError(f"{name} must be a whole number. {LIMITS_TEXT}.")
    if not (MIN_COUNT <= count <= MAX_COUNT and MIN_SIDES <= sides <= MAX_SIDES):
        raise DiceError(f"{LIMITS_TEXT}.")
    if abs(modifier) > MAX_MODIFIER:
        raise DiceError(f"{LIMITS_TEXT}.")


def _to_int(digits: str) -> int | None:
    """int(digits), or None when the run is too long to be in range."""
    return int(digits) if len(digits) <= MAX_DIGITS else None


def parse_dice(text: str) -> DiceRequest | None:
    """The first dice expression in `text`, or None if there is none.

    Raises DiceError when the expression is there but outside the limits.
    """
    match = DICE_RE.search(text)
    if match is None:
        return None
    raw_count, raw_sides, sign, raw_modifier = match.groups()
    count = _to_int(raw_count) if raw_count else 1
    sides = _to_int(raw_sides)
    modifier = _to_int(raw_modifier) if raw_modifier else 0
    if count is None or sides is None or modifier is None:
        raise DiceError(f"{LIMITS_TEXT}.")
    if sign == "-":
        modifier = -modifier
    _check(count, sides, modifier)
    return DiceRequest(count, sides, modifier)


def roll_dice(
    count: int, sides: int, modifier: int = 0, rng: random.Random | None = None
) -> dict[str, Any]:
    """Roll the dice: `{"rolls": [...], "modifier": m, "total": sum(rolls) + m}`.

    Raises DiceError outside the limits. Pass `rng` for reproducible rolls.
    """
    _check(count, sides, modifier)
    rng = rng or random.Random()
    rolls = [rng.randint(1, sides) for _ in range(count)]
    return {"rolls": rolls, "modifier": modifier, "total": sum(rolls) + modifier}


def describe_roll(request: DiceRequest, result: dict[str, Any]) -> str:
    """`You rolled 2d6+1: 3 + 5 + 1 = 9.`"""
    terms = " + ".join(str(r) for r in result["rolls"])
    modifier = result["modifier"]
    if modifier > 0:
        terms += f" + {modifier}"
    elif modifier < 0:
        terms += f" - {-modifier}"
    return f"You rolled {request.notation}: {terms} = {result['total']}."
