"""Load runs and the consistency audit: many clients chatting at once, then every thread checked.

`run_load` starts the Locust load generator (`grader.toolkit.locustfile`) as a process of its own
(importing locust patches a whole interpreter with gevent: never this one), lets U users chat
against one backend, several (round-robin) or a load balancer for S seconds, and reads back every
request it sent: a `LoadResult` with throughput, latency percentiles (overall and per second) and
errors by kind.

`audit` then reads every thread the run wrote (`history_of`: through `GET /history`, `api_history`,
or the grader's own view of the database, `db_history`) and names what went wrong, thread by
thread, in words: turns lost, stored twice, interleaved, a reply that answers another prompt or
that did not see every earlier turn, a turn stored although its request was answered an error.
Every prompt asks the offline assistant "how many messages have I sent?", whose answer counts
the user messages of the history the turn was given: in a thread whose turns are serialized,
the k-th prompt's reply says k.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from grader import REPO_ROOT
from grader.toolkit import steps
from grader.toolkit.chat import COUNT_QUESTION, text_of
from grader.toolkit.expect import fail, shorten
from grader.toolkit.procs import stop_group

if TYPE_CHECKING:  # only for the annotation: a load run need not import SQLAlchemy
    from grader.toolkit.dbview import DbView

Message = dict[str, Any]
HistoryOf = Callable[[str], list[Message]]

# The offline assistant's answer to COUNT_QUESTION (assistant/offline.py): "You have sent 3
# messages in this conversation." It counts the user messages of the history it was given.
COUNT_ANSWER = re.compile(r"You have sent (\d+) messages?")
# Error kinds after which a request may have been received and its turn stored (locustfile.py),
# and the statuses that say "the first attempt with this key is still running" (SPEC §2).
UNCERTAIN_ERRORS = frozenset({"timeout", "disconnected", "unfinished"})
IN_PROGRESS_STATUSES = frozenset({409})
# Starting Python, importing locust and gevent: seconds before the first request goes out.
STARTUP_ALLOWANCE = 30.0


class LoadError(RuntimeError):
    """The load generator itself failed (the grader's fault, not the learner's); `log` says how."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class LoadPlan:
    """What a load run does. Bounded twice: `seconds` of load, and at most `max_turns` turns."""

    users: int = 8
    seconds: float = 3.0
    max_turns: int = 1000
    turns_per_thread: int = 5  # each user starts a new thread of its own this often
    shared_threads: int = 0  # > 0: every user's turns go to these few threads, all at once
    idempotency_keys: bool = False  # send an Idempotency-Key with each turn (chapter 5)
    retries: int = 0  # resend a turn that got no answer or a retryable status (same key)
    timeout: float = 10.0  # per request
    think: float = 0.0  # seconds a user waits between turns


@dataclass(frozen=True)
class Request:
    """One `POST /chat` the load generator sent, and what came of it."""

    user: int
    seq: int  # the user's turn number; retries of a turn share it
    attempt: int
    thread_id: str
    prompt: str
    key: str | None
    target: str
    start: float  # epoch seconds
    latency_ms: float | None
    status: int | None
    error: str | None  # None for a 200; "503", "timeout", "refused", "disconnected", …
    detail: str | None
    messages: list[Message] | None  # the answer's messages, for a 200

    @property
    def ok(self) -> bool:
        return self.error is None and self.messages is not None

    @property
    def uncertain(self) -> bool:
        """No answer says whether the turn was stored: it may have been."""
        return self.error in UNCERTAIN_ERRORS or self.status in IN_PROGRESS_STATUSES

    @property
    def reply(self) -> list[Message]:
        """The assistant's messages of a 200: the answer without its echo of the prompt."""
        messages = self.messages or []
        if messages and messages[0].get("role") == "user":
            return messages[1:]
        return messages


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        ordered = sorted(values)
        return cls(
            len(ordered),
            _rank(ordered, 0.50),
            _rank(ordered, 0.95),
            _rank(ordered, 0.99),
            ordered[-1] if ordered else None,
        )


def _rank(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile: a latency some request really had, not an interpolation."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Bucket:
    """The requests that completed in one slice of the run (for a notebook to plot)."""

    second: float  # start of the slice, seconds after the run began
    requests: int
    turns: int  # acknowledged (200)
    errors: int
    latency_ms: Percentiles


@dataclass
class LoadResult:
    plan: LoadPlan
    targets: list[str]
    requests: list[Request]
    started: float  # epoch seconds
    elapsed: float  # seconds from the first user's start to the last answer
    locust: dict[str, Any] = field(default_factory=dict)  # Locust's own totals, to compare

    @property
    def turns(self) -> int:
        """Acknowledged turns: requests answered 200."""
        return sum(r.ok for r in self.requests)

    @property
    def throughput(self) -> float:
        """Acknowledged turns per second."""
        return self.turns / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self) -> Percentiles:
        """Of every request that got an answer (errors too: a slow 503 is slow)."""
        return Percentiles.of(r.latency_ms for r in self.requests if r.latency_ms is not None)

    def errors(self) -> dict[str, int]:
        """How many requests failed, by kind: "503", "timeout", "refused", …"""
        return dict(Counter(r.error for r in self.requests if r.error is not None))

    def buckets(self, width: float = 1.0) -> list[Bucket]:
        """Requests grouped by when they completed, `width` seconds a slice."""
        slices: dict[int, list[Request]] = defaultdict(list)
        for r in self.requests:
            done = r.start + (r.latency_ms or 0) / 1000 - self.started
            slices[max(0, int(done // width))].append(r)
        return [
            Bucket(
                n * width,
                len(group),
                sum(r.ok for r in group),
                sum(r.error is not None for r in group),
                Percentiles.of(r.latency_ms for r in group if r.latency_ms is not None),
            )
            for n, group in sorted(slices.items())
        ]

    def threads(self) -> list[str]:
        """Every thread the run wrote to, in the order it first did."""
        return list(dict.fromkeys(r.thread_id for r in self.requests))

    def summary(self) -> str:
        """Three lines for a terminal: what ran, how fast, what failed."""
        lat = self.latency()
        errors = ", ".join(f"{n} × {k}" for k, n in sorted(self.errors().items())) or "none"
        return "\n".join(
            [
                f"{self.plan.users} users, {self.elapsed:.1f} s, {len(self.threads())} threads, "
                f"{len(self.requests)} requests, {self.turns} turns answered",
                f"throughput {self.throughput:.1f} turns/s; latency p50 {_ms(lat.p50)}, "
                f"p95 {_ms(lat.p95)}, p99 {_ms(lat.p99)}, max {_ms(lat.max)}",
                f"errors: {errors}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": asdict(self.plan),
            "targets": self.targets,
            "started": self.started,
            "elapsed": self.elapsed,
            "turns": self.turns,
            "throughput": self.throughput,
            "latency_ms": asdict(self.latency()),
            "errors": self.errors(),
            "buckets": [asdict(b) for b in self.buckets()],
            "locust": self.locust,
            "requests": [asdict(r) for r in self.requests],
        }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


# --- running the load generator -----------------------------------------------------------------


def run_load(targets: str | Sequence[str], plan: LoadPlan, workdir: Path) -> LoadResult:
    """Run `plan` against `targets` (base URLs) in a Locust process; its files go to `workdir`.

    Returns once the generator has exited: after `plan.seconds` and the turns still in flight
    then, or after `plan.max_turns` turns. Stops the generator by its PID whatever happens.
    """
    urls = [targets] if isinstance(targets, str) else list(targets)
    urls = [u.rstrip("/") for u in urls]
    if not urls or not all(re.match(r"https?://", u) for u in urls):
        raise ValueError(f"run_load needs base URLs like http://127.0.0.1:8000, got {urls}")
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path, records_path = workdir / "load-plan.json", workdir / "load-records.jsonl"
    log_path = workdir / "load.log"
    plan_path.write_text(json.dumps(_child_plan(urls, plan)), encoding="utf-8")
    steps.record(
        f"load run: {plan.users} users for {plan.seconds:g} s against {', '.join(urls)}"
        + (f", {plan.shared_threads} shared threads" if plan.shared_threads else "")
    )
    _run_generator(plan_path, records_path, log_path, _budget(plan))
    result = _read_records(records_path, log_path, plan, urls)
    steps.record(
        f"load run done: {len(result.requests)} requests, {result.turns} answered 200, "
        f"errors {result.errors() or 'none'}"
    )
    return result


def _child_plan(urls: list[str], plan: LoadPlan) -> dict[str, Any]:
    """The JSON the generator reads (locustfile.Plan): the plan, made concrete."""
    return {
        "targets": urls,
        "users": plan.users,
        "seconds": plan.seconds,
        "max_turns": plan.max_turns,
        "turns_per_thread": max(1, plan.turns_per_thread),
        # Chosen here so that they are known even if no request on them is ever answered.
        "shared_threads": [str(uuid.uuid4()) for _ in range(plan.shared_threads)],
        "idempotency_keys": plan.idempotency_keys,
        "retries": plan.retries,
        "timeout": plan.timeout,
        "think": plan.think,
        "question": COUNT_QUESTION,
    }


def _budget(plan: LoadPlan) -> float:
    """How long the generator may take before it counts as hung: load, last turns, startup."""
    return plan.seconds + (plan.timeout + 1) * (plan.retries + 1) + 2 + STARTUP_ALLOWANCE


def _run_generator(plan_path: Path, records_path: Path, log_path: Path, budget: float) -> None:
    command = [sys.executable, "-m", "grader.toolkit.locustfile", str(plan_path), str(records_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped by its PID, never by name
        )
    try:
        code = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        raise LoadError(
            f"the load generator did not finish within {budget:.0f} s", _tail(log_path)
        ) from None
    finally:
        stop_group(proc, grace=3.0)
    if code != 0:
        raise LoadError(f"the load generator exited with code {code}", _tail(log_path))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _read_records(
    records_path: Path, log_path: Path, plan: LoadPlan, urls: list[str]
) -> LoadResult:
    if not records_path.is_file():
        raise LoadError("the load generator wrote no records", _tail(log_path))
    requests: list[Request] = []
    summary: dict[str, Any] | None = None
    for line in records_path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # only a line cut short by a killed generator can be malformed
        kind = item.pop("type", None)
        if kind == "request":
            requests.append(Request(**item))
        elif kind == "summary":
            summary = item
    if summary is None:
        raise LoadError("the load generator wrote no summary", _tail(log_path))
    requests.sort(key=lambda r: r.start)
    return LoadResult(
        plan, urls, requests, summary["started"], summary["elapsed"], summary.get("locust", {})
    )


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
