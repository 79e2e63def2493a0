"""The consistency audit of a load run: every thread it wrote, read back and checked.

`audit` reads every thread a `LoadResult` wrote (`history_of`: through `GET /history`,
`api_history`, or the grader's own view of the database, `db_history`) and names what went
wrong, thread by thread, in words: turns lost, stored twice, interleaved, a reply that answers
another prompt or that did not see every earlier turn, a turn stored although its request was
answered an error. Every prompt of a load run asks the offline assistant "how many messages have
I sent?", whose answer counts the user messages of the history the turn was given: in a thread
whose turns are serialized, the k-th prompt's reply says k.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from grader.toolkit import steps
from grader.toolkit.chat import text_of
from grader.toolkit.expect import fail, shorten
from grader.toolkit.load import LoadResult, Message, Request

if TYPE_CHECKING:  # only for the annotation: an audit through the API need not import SQLAlchemy
    from grader.toolkit.dbview import DbView

HistoryOf = Callable[[str], list[Message]]

# The offline assistant's answer to COUNT_QUESTION (assistant/offline.py): "You have sent 3
# messages in this conversation." It counts the user messages of the history it was given.
COUNT_ANSWER = re.compile(r"You have sent (\d+) messages?")


# --- where the audit reads the threads from ---------------------------------------------------


def api_history(base_url: str, timeout: float = 15.0) -> HistoryOf:
    """`history_of` through `GET /history/{id}` of one backend (or the load balancer)."""

    def history_of(thread_id: str) -> list[Message]:
        response = httpx.get(f"{base_url.rstrip('/')}/history/{thread_id}", timeout=timeout)
        if response.status_code != 200:
            fail(
                f"GET /history/{thread_id[:8]}… answered {response.status_code} after the load run",
                expected="200 with the thread's messages",
                actual=f"{response.status_code}: {shorten(response.text, 200)}",
            )
        return list(response.json()["messages"])

    return history_of


def db_history(view: DbView) -> HistoryOf:
    """`history_of` from the grader's own reading of the database (a `dbview.DbView`).

    Reads the table once, at the first call: one query for the whole audit, not one a thread.
    """
    grouped: dict[str, list[Message]] | None = None

    def history_of(thread_id: str) -> list[Message]:
        nonlocal grouped
        if grouped is None:
            grouped = defaultdict(list)
            for row in view.rows():
                if row.thread_id is not None:
                    grouped[row.thread_id].append(row.message())
        return grouped.get(str(uuid.UUID(thread_id)), [])

    return history_of


# --- the audit ----------------------------------------------------------------------------------

# Each kind of fault, as the report names it, in the order it reports them.
FAULT_KINDS = {
    "lost": "answered 200 but not stored",
    "duplicated": "stored more than once",
    "stored_after_error": "answered an error but stored",
    "misplaced": "a prompt stored where this run never sent it",
    "orphan": "reply rows that follow no prompt",
    "half_turn": "a prompt stored without a reply",
    "interleaved": "a turn's rows not contiguous",
    "foreign_reply": "a reply that answers another prompt",
    "stale": "a reply that did not see every earlier turn",
    "overlapped": "a reply that saw turns stored after its own",
}
# Not faults: what the run cannot know (a turn that timed out may or may not be stored).
NOTICE_KINDS = {"ambiguous": "no answer, stored (allowed: the client cannot tell)"}


@dataclass(frozen=True)
class Fault:
    kind: str
    thread_id: str
    prompts: tuple[str, ...]
    why: str

    def __str__(self) -> str:
        return f"thread {self.thread_id}: {self.why}"


@dataclass
class Audit:
    threads: int
    stored_turns: int
    acknowledged: int
    faults: list[Fault]
    notices: list[Fault]

    @property
    def ok(self) -> bool:
        return not self.faults

    def counts(self) -> dict[str, int]:
        """Faults by kind."""
        return dict(Counter(f.kind for f in self.faults))

    def of_kind(self, kind: str) -> list[Fault]:
        return [f for f in self.faults + self.notices if f.kind == kind]

    def summary(self, examples: int = 3) -> str:
        """The verdict, then each kind of fault with a few examples in words."""
        head = (
            f"audited {self.threads} threads: {self.stored_turns} turns stored, "
            f"{self.acknowledged} answered 200"
        )
        lines = [f"{head}: {'no integrity faults' if self.ok else f'{len(self.faults)} faults'}"]
        for kind, title in {**FAULT_KINDS, **NOTICE_KINDS}.items():
            found = self.of_kind(kind)
            if found:
                lines.append(f"{len(found)} × {kind} ({title}), e.g.")
                lines += [f"  - {f}" for f in found[:examples]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "threads": self.threads,
            "stored_turns": self.stored_turns,
            "acknowledged": self.acknowledged,
            "counts": self.counts(),
            "faults": [asdict(f) for f in self.faults],
            "notices": [asdict(f) for f in self.notices],
        }


@dataclass
class _Sent:
    """Every attempt at one prompt (a turn and its retries)."""

    prompt: str
    thread_id: str
    attempts: list[Request] = field(default_factory=list)

    @property
    def answered(self) -> Request | None:
        return next((r for r in self.attempts if r.ok), None)

    @property
    def outcome(self) -> str:
        """`acknowledged` (some attempt got 200), `uncertain`, or `failed` (only errors)."""
        if self.answered:
            return "acknowledged"
        return "uncertain" if any(r.uncertain for r in self.attempts) else "failed"

    def said(self) -> str:
        """What the client was told, in words: "answered 503", "timed out"…"""
        return " then ".join(_said(r) for r in self.attempts)


def _said(r: Request) -> str:
    if r.status is not None:
        return f"answered {r.status}"
    return {"timeout": "timed out", "refused": "was refused a connection"}.get(
        r.error or "", f"got no answer ({r.error})"
    )


@dataclass(frozen=True)
class _Segment:
    """A stored prompt and the rows after it, up to the next prompt."""

    position: int  # 1-based among the thread's stored prompts
    prompt: str
    rows: list[Message]


def audit(result: LoadResult, history_of: HistoryOf) -> Audit:
    """Read every thread `result` wrote and report what is wrong with it, thread by thread."""
    sent = _sent_by_thread(result)
    home = {s.prompt: tid for tid, by in sent.items() for s in by.values()}
    faults: list[Fault] = []
    notices: list[Fault] = []
    stored_turns = 0
    for thread_id, by_prompt in sent.items():
        stored = [_plain(m) for m in history_of(thread_id)]
        found, noticed, turns = _audit_thread(thread_id, stored, by_prompt, home)
        faults += found
        notices += noticed
        stored_turns += turns
    order = list(FAULT_KINDS)
    faults.sort(key=lambda f: (order.index(f.kind), f.thread_id))
    audited = Audit(len(sent), stored_turns, result.turns, faults, notices)
    steps.record(f"audit: {audited.summary(examples=0).splitlines()[0]}")
    return audited


def _sent_by_thread(result: LoadResult) -> dict[str, dict[str, _Sent]]:
    sent: dict[str, dict[str, _Sent]] = defaultdict(dict)
    for r in result.requests:
        entry = sent[r.thread_id].setdefault(r.prompt, _Sent(r.prompt, r.thread_id))
        entry.attempts.append(r)
    return sent


def _plain(message: Message) -> Message:
    """A message as the audit compares it: role and parts (an `id` a backend adds is not content)."""
    return {"role": message.get("role"), "parts": message.get("parts")}


def _audit_thread(
    thread_id: str, stored: list[Message], sent: dict[str, _Sent], home: dict[str, str]
) -> tuple[list[Fault], list[Fault], int]:
    """The faults and notices of one thread, and how many prompts it stores."""
    orphans, segments = _segments(stored)
    faults: list[Fault] = []
    if orphans:
        faults.append(
            Fault(
                "orphan",
                thread_id,
                (),
                f"the thread starts with {len(orphans)} reply rows that follow no prompt "
                f"(first: {shorten(text_of(orphans), 80)!r})",
            )
        )
    faults += _misplaced(thread_id, segments, sent, home)
    faults += _duplicated(thread_id, segments, sent)
    lost, unacknowledged, notices = _fates(thread_id, segments, sent)
    faults += lost + unacknowledged
    faults += _layout(thread_id, segments, sent)
    faults += _counts(thread_id, segments, sent)
    return faults, notices, len(segments)


def _segments(stored: list[Message]) -> tuple[list[Message], list[_Segment]]:
    """Rows before the first prompt, and each prompt with the rows that follow it."""
    orphans: list[Message] = []
    segments: list[_Segment] = []
    for message in stored:
        if message["role"] == "user":
            segments.append(_Segment(len(segments) + 1, text_of([message], "user"), []))
        elif segments:
            segments[-1].rows.append(message)
        else:
            orphans.append(message)
    return orphans, segments


def _q(prompt: str) -> str:
    return f'"{prompt}"'


def _misplaced(
    thread_id: str, segments: list[_Segment], sent: dict[str, _Sent], home: dict[str, str]
) -> list[Fault]:
    faults = []
    for seg in segments:
        if seg.prompt in sent:
            continue
        where = home.get(seg.prompt)
        why = (
            f"the prompt {_q(seg.prompt)} is stored in this thread, but it was sent to thread "
            f"{where}: a turn must be stored under the thread_id of its request"
            if where
            else f"the thread holds the prompt {_q(seg.prompt)}, which this load run never sent"
        )
        faults.append(Fault("misplaced", thread_id, (seg.prompt,), why))
    return faults


def _duplicated(thread_id: str, segments: list[_Segment], sent: dict[str, _Sent]) -> list[Fault]:
    faults = []
    for prompt, times in Counter(s.prompt for s in segments).items():
        if times < 2 or prompt not in sent:
            continue
        attempts = sent[prompt].attempts
        keyed = attempts[0].key is not None
        how = (
            f"it was sent {len(attempts)} times ({sent[prompt].said()})"
            + (
                " with one Idempotency-Key: a retried key must not run the turn again"
                if keyed
                else ""
            )
            if len(attempts) > 1
            else "it was sent once: the backend stored one turn twice"
        )
        faults.append(
            Fault(
                "duplicated",
                thread_id,
                (prompt,),
                f"the prompt {_q(prompt)} is stored {times} times; {how}",
            )
        )
    return faults


def _fates(
    thread_id: str, segments: list[_Segment], sent: dict[str, _Sent]
) -> tuple[list[Fault], list[Fault], list[Fault]]:
    """Lost turns, turns stored although refused, and (as notices) stored turns nobody answered."""
    stored = {s.prompt for s in segments}
    lost, unacknowledged, ambiguous = [], [], []
    for prompt, entry in sent.items():
        outcome = entry.outcome
        if outcome == "acknowledged" and prompt not in stored:
            lost.append(
                Fault(
                    "lost",
                    thread_id,
                    (prompt,),
                    f"the prompt {_q(prompt)} was answered 200, but the thread does not hold it: "
                    "an acknowledged turn must be stored (commit before you answer)",
                )
            )
        elif outcome == "failed" and prompt in stored:
            unacknowledged.append(
                Fault(
                    "stored_after_error",
                    thread_id,
                    (prompt,),
                    f"the prompt {_q(prompt)} {entry.said()}, yet its turn is stored: a request "
                    "answered an error must leave nothing behind (roll the transaction back)",
                )
            )
        elif outcome == "uncertain" and prompt in stored:
            ambiguous.append(
                Fault(
                    "ambiguous",
                    thread_id,
                    (prompt,),
                    f"the prompt {_q(prompt)} {entry.said()} and is stored: allowed (the client "
                    "cannot tell; an Idempotency-Key lets it retry safely)",
                )
            )
    return lost, unacknowledged, ambiguous


def _first_segments(segments: list[_Segment]) -> list[_Segment]:
    """Each prompt's first stored place only: a duplicate is reported once, as a duplicate."""
    seen: set[str] = set()
    firsts = []
    for seg in segments:
        if seg.prompt not in seen:
            seen.add(seg.prompt)
            firsts.append(seg)
    return firsts


def _layout(thread_id: str, segments: list[_Segment], sent: dict[str, _Sent]) -> list[Fault]:
    """Whether each prompt is followed by its own reply, whole, before the next prompt."""
    faults = []
    for seg in _first_segments(segments):
        entry = sent.get(seg.prompt)
        answered = entry.answered if entry else None
        expected = [_plain(m) for m in answered.reply] if answered else None
        following = segments[seg.position] if seg.position < len(segments) else None
        fault = _layout_fault(seg, expected, following)
        if fault:
            kind, why = fault
            prompts = (seg.prompt, following.prompt) if following else (seg.prompt,)
            faults.append(Fault(kind, thread_id, prompts, why))
    return faults


def _layout_fault(
    seg: _Segment, expected: list[Message] | None, following: _Segment | None
) -> tuple[str, str] | None:
    if not seg.rows:
        if following is None:
            return "half_turn", (
                f"the prompt {_q(seg.prompt)} is stored without any reply: store the prompt and "
                "the reply in one transaction"
            )
        return "interleaved", (
            f"the prompt {_q(seg.prompt)} is not followed by its reply: the next row is the "
            f"prompt {_q(following.prompt)} of another turn, so two turns ran at once and their "
            "rows are mixed"
        )
    if expected is None:
        return None  # a turn nobody was answered: nothing to compare its reply with
    if seg.rows == expected:
        return None
    if not _holds(seg.rows, expected):
        return "foreign_reply", (
            f"the reply stored after the prompt {_q(seg.prompt)} "
            f"({shorten(text_of(seg.rows), 80)!r}) is not the one its request was answered "
            f"({shorten(text_of(expected), 80)!r}): it belongs to another turn"
        )
    extra = len(seg.rows) - len(expected)
    return "interleaved", (
        f"the reply to the prompt {_q(seg.prompt)} is stored with {extra} more reply rows "
        f"around it ({shorten(text_of(seg.rows), 80)!r}) before the next prompt: another "
        "turn's reply was written into this one"
    )


def _holds(rows: list[Message], part: list[Message]) -> bool:
    """Whether `part` appears in `rows`, contiguous."""
    return any(rows[i : i + len(part)] == part for i in range(len(rows) - len(part) + 1))


def _messages(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


def _count_in(messages: list[Message]) -> int | None:
    found = COUNT_ANSWER.search(text_of(messages))
    return int(found.group(1)) if found else None


def _counts(thread_id: str, segments: list[_Segment], sent: dict[str, _Sent]) -> list[Fault]:
    """Whether each reply saw exactly the prompts stored up to and including its own.

    The count the client was told (its 200) when there is one, else the stored reply's: either
    way the assistant counted the history its turn was given.
    """
    faults = []
    prompts = [s.prompt for s in segments]
    for seg in _first_segments(segments):
        entry = sent.get(seg.prompt)
        answered = entry.answered if entry else None
        counted = _count_in(answered.reply) if answered else _count_in(seg.rows)
        if counted is None or counted == seg.position:
            continue
        before = prompts[: seg.position - 1]
        if counted < seg.position:
            missed = before[max(0, counted - 1) :]
            why = (
                f"the reply to {_q(seg.prompt)} counts {_messages(counted)}, but it is prompt "
                f"{seg.position} of the thread: the assistant did not see every earlier turn "
                f"({len(missed)} missing, e.g. {_q(missed[-1])}), because its history was read "
                "before they were stored"
            )
            faults.append(Fault("stale", thread_id, (seg.prompt, *missed), why))
        else:
            later = prompts[seg.position : counted]
            shown = f", e.g. {_q(later[0])}" if later else ""
            why = (
                f"the reply to {_q(seg.prompt)} counts {_messages(counted)}, but it is prompt "
                f"{seg.position} of the thread: the assistant saw prompts stored after it{shown}, "
                "so another turn ran in the middle of this one"
            )
            faults.append(Fault("overlapped", thread_id, (seg.prompt, *later), why))
    return faults


# --- the JSON form ------------------------------------------------------------------------------


def report(result: LoadResult, audited: Audit | None = None) -> dict[str, Any]:
    """The run and its audit as one JSON-able dict (what a notebook loads and plots)."""
    return {"result": result.to_dict(), "audit": audited.to_dict() if audited else None}


def write_report(path: Path, result: LoadResult, audited: Audit | None = None) -> Path:
    path.write_text(json.dumps(report(result, audited), ensure_ascii=False, indent=1), "utf-8")
    return path
