"""How a check says what went wrong, in words a learner can act on."""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

# How a learner's unfinished TODO shows in an answer or on the page: "TODO 3.1 is not done yet".
TODO_IN_TEXT = re.compile(r"TODO \d+\.\d+")


class CheckFailed(AssertionError):
    """A milestone check failed: one-line rationale, what was expected, what happened."""

    def __init__(self, rationale: str, expected: Any = None, actual: Any = None) -> None:
        super().__init__(rationale)
        self.rationale = rationale
        self.expected = expected
        self.actual = actual


def fail(rationale: str, *, expected: Any = None, actual: Any = None) -> NoReturn:
    raise CheckFailed(rationale, expected, actual)


def expect(condition: bool, rationale: str, *, expected: Any = None, actual: Any = None) -> None:
    if not condition:
        fail(rationale, expected=expected, actual=actual)


def shorten(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
