"""The load part of the toolkit (grader/toolkit/load.py, audit.py): real load runs, then the audit's verdicts.

The runs drive the chapter 4 solution (SQLite) with the Locust generator in its own process:
own threads leave nothing wrong; several users on one thread through two instances get stale
replies, because chapter 4 does not serialize the turns of a thread (chapter 5 does). The audit
is also tested on hand-made histories, one fault at a time.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grader.toolkit import load, locustfile
from grader.toolkit.audit import Audit, api_history, audit, db_history, report
from grader.toolkit.chat import COUNT_QUESTION
from grader.toolkit.dbview import DbView
from grader.toolkit.load import LoadPlan, LoadResult, Request, run_load
from grader.toolkit.procs import Backend, free_port, start_all, stop_all

CHAPTER_4 = Path(__file__).resolve().parents[1] / "solutions" / "04-choosing-a-database"


class Pair:
    """Two chapter 4 backends on one SQLite file."""

    def __init__(self, backends: list[Backend], db_url: str) -> None:
        self.backends = backends
        self.db_url = db_url

    @property
    def urls(self) -> list[str]:
        return [b.url for b in self.backends]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp("load")
    db_url = f"sqlite:///{work / 'messages.db'}"
    env = {"DATABASE_URL": db_url, "ASSISTANT_PROVIDER": "offline"}
    backends = [Backend(CHAPTER_4, work, env=env, name=f"backend-{i}") for i in range(2)]
    try:
        start_all(backends)
        yield Pair(backends, db_url)
    finally:
        stop_all(backends)


def test_own_threads_through_one_backend_have_no_faults(pair: Pair, tmp_path: Path) -> None:
    plan = LoadPlan(users=8, seconds=3, max_turns=400, turns_per_thread=5)
    result = run_load(pair.urls[0], plan, tmp_path)
    assert result.errors() == {}, result.summary()
    assert result.turns == len(result.requests) > 0
    assert result.throughput > 0
    assert len(result.threads()) >= 8  # dozens, in practice: a new one every 5 turns
    lat = result.latency()
    assert lat.p50 is not None and lat.p95 is not None and lat.p99 is not None
    assert 0 < lat.p50 <= lat.p95 <= lat.p99 <= (lat.max or 0)
    buckets = result.buckets()
    assert buckets and sum(b.requests for b in buckets) == len(result.requests)
    assert all(b.latency_ms.p50 is not None for b in buckets)
    assert result.locust["requests"] == len(result.requests)  # Locust counted the same run

    audited = audit(result, db_history(DbView(pair.db_url)))
    assert audited.ok, audited.summary()
    assert audited.stored_turns == audited.acknowledged == result.turns  # every turn found
    assert audited.threads == len(result.threads())
    # The JSON form a notebook reads.
    data = json.loads(json.dumps(report(result, audited)))
    assert data["audit"]["ok"] is True
    assert len(data["result"]["requests"]) == len(result.requests)
    assert data["result"]["buckets"][0]["latency_ms"]["p95"] is not None
    # The generator ran in its own process: Locust's gevent patches never reached this one.
    assert "gevent" not in sys.modules and "locust" not in sys.modules


def test_one_shared_thread_across_two_instances_has_stale_replies(
    pair: Pair, tmp_path: Path
) -> None:
    plan = LoadPlan(users=8, seconds=2, max_turns=200, shared_threads=1)
    result = run_load(pair.urls, plan, tmp_path)
    assert result.turns > 8, result.summary()
    assert {r.target for r in result.requests} == set(pair.urls)  # round-robin
    (thread_id,) = result.threads()

    audited = audit(result, api_history(pair.urls[1]))
    stale = audited.of_kind("stale")
    assert stale, audited.summary()
    fault = stale[0]
    assert fault.thread_id == thread_id and thread_id in str(fault)
    # Its own prompt, then the earlier ones it did not see; the words name its own and the latest.
    assert len(fault.prompts) >= 2
    assert all(p.startswith(COUNT_QUESTION) for p in fault.prompts)
    assert f'"{fault.prompts[0]}"' in fault.why and f'"{fault.prompts[-1]}"' in fault.why
    assert "did not see every earlier turn" in fault.why
    assert "stale" in audited.summary()


def _silent_server() -> tuple[socket.socket, threading.Thread]:
    """A port that accepts connections and never answers: every request times out."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []

    def serve() -> None:
        while server.fileno() != -1:
            try:
                held.append(server.accept()[0])
            except OSError:  # the timeout, or the socket closed by the test
                continue
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_errors_are_recorded_by_kind_and_nothing_is_blamed(tmp_path: Path) -> None:
    server, thread = _silent_server()
    try:
        silent = f"http://127.0.0.1:{server.getsockname()[1]}"
        closed = f"http://127.0.0.1:{free_port()}"
        plan = LoadPlan(users=2, seconds=1, timeout=0.5, max_turns=20)
        result = run_load([silent, closed], plan, tmp_path)
    finally:
        server.close()
        thread.join(timeout=2)
    assert set(result.errors()) == {"timeout", "refused"}, result.errors()
    assert result.turns == 0 and result.throughput == 0
    audited = audit(result, lambda thread_id: [])
    assert audited.ok and audited.stored_turns == 0


class FlakyBackend(ThreadingHTTPServer):
    """POST /chat that answers 503 to a key's first attempt and runs the turn on its retry."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.lock = threading.Lock()
        self.keys: list[str | None] = []  # the Idempotency-Key of every request, in order
        self.threads: dict[str, list[dict]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyBackend

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Idempotency-Key")
        with self.server.lock:
            first = key not in self.server.keys
            self.server.keys.append(key)
            if first:
                status, answer = 503, {"detail": "the database is busy"}
            else:
                rows = self.server.threads.setdefault(body["thread_id"], [])
                rows.append({"role": "user", "parts": [{"text": body["prompt"]}]})
                rows.append(reply(sum(m["role"] == "user" for m in rows)))
                status, answer = 200, {"thread_id": body["thread_id"], "messages": rows[-2:]}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_keyed_retries_resend_the_same_turn(tmp_path: Path) -> None:
    server = FlakyBackend()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        plan = LoadPlan(users=3, seconds=5, max_turns=12, idempotency_keys=True, retries=2)
        result = run_load(server.url, plan, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
    assert result.errors() == {"503": result.turns} and result.turns == 12, result.summary()
    by_turn: dict[tuple[int, int], list[Request]] = {}
    for r in result.requests:
        by_turn.setdefault((r.user, r.seq), []).append(r)
    for attempts in by_turn.values():
        assert [(a.attempt, a.status) for a in attempts] == [(0, 503), (1, 200)]
        assert len({(a.key, a.prompt, a.thread_id) for a in attempts}) == 1
    assert sorted(server.keys) == sorted(r.key for r in result.requests)  # the header arrived
    audited = audit(result, lambda thread_id: server.threads.get(thread_id, []))
    assert audited.ok and audited.stored_turns == 12, audited.summary()


def test_a_broken_generator_is_a_load_error_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_child_plan", lambda urls, plan: {"targets": urls})
    with pytest.raises(load.LoadError) as caught:
        run_load("http://127.0.0.1:1", LoadPlan(seconds=1), tmp_path)
    assert "exited with code 1" in str(caught.value)
    assert "TypeError" in caught.value.log  # the generator's traceback, for the report


def test_the_generator_module_imports_without_locust() -> None:
    plan = locustfile.Plan(
        targets=["http://x"],
        users=1,
        seconds=1,
        max_turns=1,
        turns_per_thread=2,
        shared_threads=[],
        idempotency_keys=False,
        retries=0,
        timeout=1,
        think=0,
        question=COUNT_QUESTION,
    )
    own: list[str] = []
    threads = [locustfile.thread_for(plan, 0, seq, own) for seq in range(4)]
    assert threads[0] == threads[1] != threads[2] == threads[3]
    assert locustfile.prompt_for(plan, 3, 17).endswith(f"[u3 t17 r{plan.run_id}]")
    assert locustfile.error_kind(ConnectionRefusedError()) == "refused"
    assert locustfile.error_kind(TimeoutError()) == "timeout"
    assert locustfile.error_kind(ConnectionResetError()) == "disconnected"
    assert "gevent" not in sys.modules


# --- the audit on hand-made histories ----------------------------------------------------------

T = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def prompt(n: int) -> str:
    return f"{COUNT_QUESTION} [u0 t{n} rtest]"


def user(n: int) -> dict:
    return {"role": "user", "parts": [{"text": prompt(n)}]}


def reply(count: int) -> dict:
    noun = "message" if count == 1 else "messages"
    return {
        "role": "model",
        "parts": [{"text": f"You have sent {count} {noun} in this conversation."}],
    }


def sent(
    n: int, count: int | None = None, status: int | None = 200, error: str | None = None
) -> Request:
    """The request of prompt n, answered `count` (n by default) when it got a 200."""
    ok = status == 200 and error is None
    return Request(
        user=0,
        seq=n,
        attempt=0,
        thread_id=T,
        prompt=prompt(n),
        key=None,
        target="http://127.0.0.1:1",
        start=1000.0 + n,
        latency_ms=5.0,
        status=status,
        error=error if error or ok else str(status),
        detail=None,
        messages=[user(n), reply(count or n)] if ok else None,
    )


def audited(requests: list[Request], stored: list[dict], elsewhere: Sequence[dict] = ()) -> Audit:
    result = LoadResult(LoadPlan(), ["http://127.0.0.1:1"], requests, 1000.0, 3.0)
    histories = {T: stored, OTHER: list(elsewhere)}
    return audit(result, lambda thread_id: histories.get(thread_id, []))


def turns(*pairs: tuple[int, int]) -> list[dict]:
    """Stored rows: each (prompt n, count) as the prompt and its reply."""
    return [m for n, count in pairs for m in (user(n), reply(count))]


def only(found: Audit, kind: str) -> None:
    assert set(found.counts()) == {kind}, found.summary()
    for fault in found.faults:
        assert T in str(fault) and fault.prompts
        assert all(f'"{p}"' in fault.why for p in fault.prompts[:1])


def test_a_clean_history_passes() -> None:
    found = audited([sent(1), sent(2), sent(3)], turns((1, 1), (2, 2), (3, 3)))
    assert found.ok and found.stored_turns == 3 and found.acknowledged == 3, found.summary()
    assert "no integrity faults" in found.summary()


def test_a_lost_turn() -> None:
    found = audited([sent(1), sent(2)], turns((1, 1)))
    only(found, "lost")
    assert found.faults[0].prompts == (prompt(2),)


def test_a_duplicated_turn() -> None:
    found = audited([sent(1)], turns((1, 1), (1, 1)))
    assert "duplicated" in found.counts(), found.summary()
    assert "stored 2 times" in found.of_kind("duplicated")[0].why


def test_interleaved_turns() -> None:
    stored = [user(1), user(2), reply(1), reply(2)]
    found = audited([sent(1), sent(2)], stored)
    only(found, "interleaved")
    assert found.faults[0].prompts == (prompt(1), prompt(2))


def test_a_stale_reply() -> None:
    found = audited([sent(1), sent(2, count=1)], turns((1, 1), (2, 1)))
    only(found, "stale")
    assert found.faults[0].prompts == (prompt(2), prompt(1))  # its own, and the one it missed


def test_a_reply_that_saw_a_later_turn() -> None:
    found = audited([sent(1, count=2), sent(2)], turns((1, 2), (2, 2)))
    only(found, "overlapped")


def test_a_reply_that_answers_another_prompt() -> None:
    # Each request was answered right, but the replies were stored after each other's prompts.
    found = audited([sent(1), sent(2)], turns((1, 2), (2, 1)))
    only(found, "foreign_reply")


def test_a_half_turn() -> None:
    found = audited([sent(1), sent(2)], [*turns((1, 1)), user(2)])
    only(found, "half_turn")


def test_a_turn_stored_in_another_thread() -> None:
    other = Request(**{**sent(2).__dict__, "thread_id": OTHER})
    found = audited([sent(1), other], turns((1, 1), (2, 2)), elsewhere=[])
    assert {"misplaced", "lost"} <= set(found.counts()), found.summary()
    assert OTHER in found.of_kind("misplaced")[0].why


def test_stored_after_an_error_is_a_fault() -> None:
    found = audited([sent(1), sent(2, status=503)], turns((1, 1), (2, 2)))
    only(found, "stored_after_error")
    assert "answered 503" in found.faults[0].why


def test_stored_after_a_timeout_is_only_ambiguous() -> None:
    found = audited([sent(1), sent(2, status=None, error="timeout")], turns((1, 1), (2, 2)))
    assert found.ok, found.summary()
    (notice,) = found.of_kind("ambiguous")
    assert "timed out" in notice.why and prompt(2) in notice.why
