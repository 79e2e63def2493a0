"""Load runs: many clients chatting at once, against one backend, several or a load balancer.

`run_load` starts the Locust load generator (`grader.toolkit.locustfile`) as a process of its own
(importing locust patches a whole interpreter with gevent: never this one), lets U users chat
against one backend, several (round-robin) or a load balancer for S seconds, and reads back every
request it sent: a `LoadResult` with throughput, latency percentiles (overall and per second) and
errors by kind.

Every prompt asks the offline assistant "how many messages have I sent?", so that
`grader.toolkit.audit` can tell from each stored reply which turns its history held.
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.toolkit import steps
from grader.toolkit.chat import COUNT_QUESTION
from grader.toolkit.procs import stop_group

Message = dict[str, Any]

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
