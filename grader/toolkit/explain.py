"""One way to describe a wrong history: what is missing, extra, foreign, reordered, interleaved.

Every check that compares the messages it got with the messages it expected fails through
`explain_history`, so the same fault reads the same in every chapter, and the report lists both
sides one short line per message instead of raw JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from grader.toolkit.expect import fail, shorten

ROLES = ("user", "model", "tool")


def _part_problem(part: Any) -> str | None:
    if not isinstance(part, dict) or len(part) != 1:
        keys = sorted(part) if isinstance(part, dict) else type(part).__name__
        return f"a part must hold exactly one of text, function_call, function_response; got {keys}"
    ((key, value),) = part.items()
    if key == "text":
        return None if isinstance(value, str) else "a text part's value must be a string"
    if key in ("function_call", "function_response"):
        inner = "args" if key == "function_call" else "response"
        ok = (
            isinstance(value, dict)
            and isinstance(value.get("name"), str)
            and isinstance(value.get(inner), dict)
        )
        shape = f'{{"{key}": {{"name": str, "{inner}": {{...}}}}}}'
        return None if ok else f"a {key} part must be {shape}"
    return f"unknown part key {key!r}; a part holds text, function_call or function_response"


def message_problem(message: Any) -> str | None:
    """What is wrong with one message's shape (SPEC §2), or None when it has the documented one."""
    if not isinstance(message, dict) or set(message) - {"id"} != {"role", "parts"}:
        keys = sorted(message) if isinstance(message, dict) else type(message).__name__
        return f'a message must be {{"role": ..., "parts": [...]}} and nothing else; got {keys}'
    if message["role"] not in ROLES:
        return f"role must be one of {', '.join(ROLES)}; got {message['role']!r}"
    parts = message["parts"]
    if not isinstance(parts, list) or not parts:
        return "parts must be a non-empty list"
    return next((p for p in map(_part_problem, parts) if p), None)


def brief(message: Any) -> str:
    """`user: hello`, `model: [function_call roll_dice {"dice": "2d6"}]`: one message, one line."""
    if message_problem(message):
        return shorten(message, 90)
    shown = []
    for part in message["parts"]:
        ((key, value),) = part.items()
        shown.append(" ".join(value.split()) if key == "text" else f"[{key} {json.dumps(value)}]")
    return shorten(f"{message['role']}: {' '.join(shown)}", 90)


def listing(messages: list[Any], limit: int = 12) -> str:
    """One short numbered line per message: readable in the report, unlike raw JSON."""
    if not messages:
        return "(no messages)"
    lines = [f"{n}. {brief(m)}" for n, m in enumerate(messages[:limit], 1)]
    if len(messages) > limit:
        lines.append(f"… {len(messages) - limit} more")
    return "\n".join(lines)


def kinds(messages: list[Any]) -> list[str]:
    """`["model: function_call", ...]`: role and part keys, without the content."""
    return [f"{m['role']}: {', '.join(k for p in m['parts'] for k in p)}" for m in messages]


def _key(message: Any) -> str:
    return json.dumps(message, sort_keys=True)


def explain_history(
    got: list[Any],
    want: list[Any],
    where: str,
    others: Iterable[Any] = (),
    lost: str | None = None,
) -> None:
    """Fail with the most specific reason why `got` is not the history `want`; pass if equal.

    `others` are messages of other threads (a foreign one in `got` means the history is not
    filtered by thread). `lost` is the rationale for a `got` that stops short of `want` (its
    latest messages missing): what that means depends on what happened just before (a restart,
    another backend), so the caller says.
    """
    if got == want:
        return
    shown = {"expected": listing(want), "actual": listing(got)}
    wanted = {_key(m) for m in want}
    foreign = [m for m in got if _key(m) not in wanted and _key(m) in {_key(o) for o in others}]
    if foreign:
        fail(
            f"{where} holds another thread's message ({brief(foreign[0])}): the history must "
            "be filtered by thread_id",
            **shown,
        )
    if not got:
        fail(f"{where} is empty although the thread has {len(want)} messages", **shown)
    if lost and len(got) < len(want) and got == want[: len(got)]:
        fail(lost, **shown)
    if len(got) < len(want) and got == want[len(want) - len(got) :]:
        fail(
            f"{where} holds only the latest {len(got)} of the thread's {len(want)} messages: "
            "the earlier turns were lost (a thread replaced instead of appended to?)",
            **shown,
        )
    if sorted(map(_key, got)) == sorted(map(_key, want)):
        if got == list(reversed(want)):
            fail(f"{where} is newest first; a history is oldest first (ORDER BY id)", **shown)
        users = [_key(m) for m in want if m["role"] == "user"]
        if [_key(m) for m in got if m["role"] == "user"] == users:
            fail(
                f"{where} has every message, but the turns are interleaved: each prompt must "
                "be followed by its own answer",
                **shown,
            )
        fail(f"{where} has every message, but out of order; keep them oldest first", **shown)
    missing = [m for m in want if _key(m) not in {_key(g) for g in got}]
    extra = [m for m in got if _key(m) not in wanted]
    if missing and not extra:
        fail(
            f"{where} misses {len(want) - len(got)} of the thread's {len(want)} messages, "
            f"first {brief(missing[0])}",
            **shown,
        )
    if extra and not missing:
        fail(f"{where} holds messages that were never sent, first {brief(extra[0])}", **shown)
    if len(got) > len(want) and not missing:
        fail(f"{where} holds some messages twice: each message is stored once", **shown)
    fail(f"{where} is not the thread's messages as POST /chat answered them", **shown)
