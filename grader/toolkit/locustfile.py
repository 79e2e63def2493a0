"""The load generator of `grader.toolkit.load`: Locust users chatting, run as a process of its own.

    python -m grader.toolkit.locustfile PLAN.json RECORDS.jsonl

Importing locust monkey-patches the whole interpreter with gevent (sockets, threads, `time.sleep`),
which would change how every other part of the grader behaves; so locust is imported only in
`main()`, in this process, and the grader reads what it did from RECORDS.jsonl: one line per
request, written as soon as it completes (a run cut short still leaves every finished request),
then one `summary` line with Locust's own statistics.

Every user takes turns in a loop: a unique, recognisable prompt (the offline assistant's "how many
messages have I sent?" question with a `[u3 t17 …]` tag), on a thread whose UUID the user chose
itself (so even a request that got no answer names its thread), a new thread every few turns or,
with shared threads, the same few threads for every user at once.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# Statuses a retry may cure: the database was busy or down, an instance was going away, the same
# key is still running elsewhere (409), or a rate limit. Any other answer is final.
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
# Error kinds after which the request may or may not have reached the backend and been stored.
UNCERTAIN_KINDS = frozenset({"timeout", "disconnected", "unfinished"})


@dataclass
class Plan:
    """What the parent asked for (the JSON in PLAN.json, written by `load.run_load`)."""

    targets: list[str]
    users: int
    seconds: float
    max_turns: int
    turns_per_thread: int
    shared_threads: list[str]
    idempotency_keys: bool
    retries: int
    timeout: float
    think: float
    question: str
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    @classmethod
    def read(cls, path: Path) -> Plan:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def error_kind(exc: BaseException) -> str:
    """One word for what went wrong on the wire; whether the turn may have been stored follows.

    `refused`: nothing was sent. `timeout` and `disconnected`: the request may have been
    received and its turn stored, only the answer never came back.
    """
    # geventhttpclient wraps what happened on the socket: RetriesExceeded(original=timed out).
    original = getattr(exc, "original", None)
    if isinstance(original, BaseException):
        return error_kind(original)
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "Timeout":  # gevent.Timeout
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    name = type(exc).__name__
    # A reset, an EOF, a half answer (HTTPConnectionClosed, HTTPParseError, EmptyResponse).
    if isinstance(exc, OSError) or any(w in name for w in ("Closed", "Parse", "Empty")):
        return "disconnected"
    return f"error {name}"


class Recorder:
    """Writes one JSON line per finished request and keeps the shared counters of the run."""

    def __init__(self, out: TextIO, plan: Plan) -> None:
        self.out = out
        self.plan = plan
        self.turns_started = 0
        self.turns_running = 0  # a turn runs from its first attempt to its last retry
        self.stopping = False
        self.in_flight: dict[int, dict[str, Any]] = {}
        self._next = 0

    def begin_turn(self) -> bool:
        """Claim the next turn of the run, or say the run is over (time or turn bound reached)."""
        if self.stopping or self.turns_started >= self.plan.max_turns:
            self.stopping = True
            return False
        self.turns_started += 1
        self.turns_running += 1
        return True

    def end_turn(self) -> None:
        self.turns_running -= 1

    def sending(self, record: dict[str, Any]) -> int:
        self._next += 1
        self.in_flight[self._next] = record
        return self._next

    def finished(self, token: int, record: dict[str, Any]) -> None:
        self.in_flight.pop(token, None)
        self.write({"type": "request", **record})

    def abandon_in_flight(self) -> None:
        """Requests still unanswered when the run had to end: their fate is unknown."""
        for record in self.in_flight.values():
            self.write({"type": "request", **record, "error": "unfinished"})
        self.in_flight.clear()

    def write(self, line: dict[str, Any]) -> None:
        self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.out.flush()


def prompt_for(plan: Plan, user: int, seq: int) -> str:
    """A prompt the audit can find again: the count question, tagged with who sent it when.

    User, turn and run make it unique; the run's random id keeps two runs on one database
    apart. (Hex and `u3 t17` never spell a word the offline assistant reacts to before it
    counts, such as "roll" or "dice".)
    """
    return f"{plan.question} [u{user} t{seq} r{plan.run_id}]"


def thread_for(plan: Plan, user: int, seq: int, own: list[str]) -> str:
    """Shared threads: every user on the same few, in turn. Else a new thread every few turns."""
    if plan.shared_threads:
        return plan.shared_threads[(user + seq) % len(plan.shared_threads)]
    if seq % plan.turns_per_thread == 0:
        own.append(str(uuid.uuid4()))
    return own[-1]


def main(argv: list[str]) -> int:
    plan_path, records_path = Path(argv[0]), Path(argv[1])
    plan = Plan.read(plan_path)
    with records_path.open("w", encoding="utf-8") as out:
        recorder = Recorder(out, plan)
        recorder.write({"type": "summary", **drive(plan, recorder)})
    return 0


def chat_user(plan: Plan, recorder: Recorder) -> type:
    """The Locust user class of this run: one simulated person chatting, turn after turn."""
    # Imported here, not at the top: this is the moment the process becomes a gevent process.
    import gevent
    from locust import constant, task
    from locust.contrib.fasthttp import FastHttpUser

    counter = iter(range(10**9))

    class ChatUser(FastHttpUser):
        host = plan.targets[0]
        wait_time = constant(plan.think)
        network_timeout = plan.timeout
        connection_timeout = min(plan.timeout, 5.0)
        max_retries = 0  # a retry is the plan's to make, with the same key, and is recorded

        def on_start(self) -> None:
            self.index = next(counter)
            self.seq = 0
            self.own_threads: list[str] = []
            self.next_target = self.index  # round-robin over the targets, offset per user

        @task
        def chat(self) -> None:
            if not recorder.begin_turn():
                gevent.sleep(0.2)  # idle until the runner quits: never cut a request short
                return
            seq, self.seq = self.seq, self.seq + 1
            thread_id = thread_for(plan, self.index, seq, self.own_threads)
            prompt = prompt_for(plan, self.index, seq)
            key = f"load-{plan.run_id}-u{self.index}-t{seq}" if plan.idempotency_keys else None
            try:
                for attempt in range(plan.retries + 1):
                    if attempt:
                        gevent.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                    status = self.send(seq, attempt, thread_id, prompt, key)
                    if status == 200 or (status is not None and status not in RETRYABLE_STATUSES):
                        return
            finally:
                recorder.end_turn()

        def send(
            self, seq: int, attempt: int, thread_id: str, prompt: str, key: str | None
        ) -> int | None:
            """One POST /chat, recorded whatever happens; its status, None if no answer."""
            url = plan.targets[self.next_target % len(plan.targets)]
            self.next_target += 1
            record: dict[str, Any] = {
                "user": self.index,
                "seq": seq,
                "attempt": attempt,
                "thread_id": thread_id,
                "prompt": prompt,
                "key": key,
                "target": url,
                "start": time.time(),
                "latency_ms": None,
                "status": None,
                "error": None,
                "detail": None,
                "messages": None,
            }
            token = recorder.sending(record)
            began = time.perf_counter()
            with self.client.post(
                f"{url}/chat",
                json={"prompt": prompt, "thread_id": thread_id},
                headers={"Idempotency-Key": key} if key else {},
                name="POST /chat",
                catch_response=True,
            ) as response:
                record["latency_ms"] = (time.perf_counter() - began) * 1000
                describe(response, record)
                if record["error"] is None:
                    response.success()
                else:
                    response.failure(record["error"])
            recorder.finished(token, record)
            return record["status"]

    return ChatUser


def drive(plan: Plan, recorder: Recorder) -> dict[str, Any]:
    """Run the users headless for the plan's time (or turns), then let their last turns end."""
    user_class = chat_user(plan, recorder)
    import gevent
    from locust.env import Environment

    env = Environment(user_classes=[user_class], host=plan.targets[0])
    runner = env.create_local_runner()
    started = time.time()
    runner.start(plan.users, spawn_rate=min(max(plan.users, 1) * 10, 100))  # >100 warns
    deadline = time.monotonic() + plan.seconds
    while time.monotonic() < deadline and not recorder.stopping:
        gevent.sleep(0.05)
    recorder.stopping = True
    # Let the turns in flight finish, retries included (each attempt bounded by the timeout).
    grace = time.monotonic() + (plan.timeout + 1) * (plan.retries + 1) + 2
    while recorder.turns_running and time.monotonic() < grace:
        gevent.sleep(0.02)
    elapsed = time.time() - started
    recorder.abandon_in_flight()
    runner.quit()
    return {"started": started, "elapsed": elapsed, **stats(env)}


def describe(response: Any, record: dict[str, Any]) -> None:
    """Fill `status`, `error`, `detail` and, for a 200, `messages` from a FastHttp answer."""
    error = getattr(response, "error", None)
    status = response.status_code or None
    if status is None:
        record["error"] = error_kind(error) if error is not None else "no answer"
        record["detail"] = f"{type(error).__name__}: {error}"[:200] if error else None
        return
    record["status"] = status
    text = response.text or ""
    if status != 200:
        record["error"] = str(status)
        record["detail"] = text[:200]
        return
    try:
        body = json.loads(text)
        record["messages"] = list(body["messages"])
    except (ValueError, TypeError, KeyError):
        record["error"] = "bad body"
        record["detail"] = text[:200]


def stats(env: Any) -> dict[str, Any]:
    """Locust's own totals, kept beside the grader's exact figures (for a notebook to compare)."""
    total = env.stats.total
    return {
        "locust": {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": total.total_rps,
            "median_ms": total.median_response_time,
            "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            "max_ms": total.max_response_time,
            "errors": {str(e.error): e.occurrences for e in env.stats.errors.values()},
        }
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
