"""`@milestone("3.2")`: a function becomes a check of one milestone.

A check may depend on another check and receive what it returned, as check50's checks do:

    @milestone("3.1")
    def messages_are_rows(app: App) -> Conversation: ...

    @milestone("3.2", after=messages_are_rows)
    def restart_keeps_history(written: Conversation, app: App) -> None: ...

The first parameter of a check with `after=` is the value `after` returned; the others are
fixtures. When `after` did not pass, the check is skipped as blocked by it, not failed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])


class Blocked(pytest.skip.Exception):
    """A check skipped because what it depends on did not pass; `blocked_by` says which."""

    def __init__(self, milestone: str, check: str | None = None) -> None:
        what = f"{milestone}'s check {check}" if check else milestone
        super().__init__(f"can't check until {what} passes")
        self.blocked_by = {"milestone": milestone, "check": check}


def milestone(milestone_id: str, after: Callable[..., Any] | None = None) -> Callable[[F], F]:
    def decorate(check: F) -> F:
        if after is not None:
            if milestone_of(after) is None:
                raise TypeError(f"{check.__name__}: after={after!r} is not a milestone check")
            signature = inspect.signature(check)
            if not signature.parameters:
                raise TypeError(f"{check.__name__}: after= passes a value; take it first")
            _given, *fixtures = signature.parameters.values()
            check.grader_after = after  # type: ignore[attr-defined]
            # pytest resolves the fixtures from the signature; the first argument is ours.
            check.__signature__ = signature.replace(parameters=fixtures)  # type: ignore[attr-defined]
        return pytest.mark.milestone(milestone_id)(check)

    return decorate


def milestone_of(check: Any) -> str | None:
    marks = getattr(check, "pytestmark", [])
    return next((m.args[0] for m in marks if m.name == "milestone"), None)


def depends_on(check: Any) -> Callable[..., Any] | None:
    return getattr(check, "grader_after", None)
