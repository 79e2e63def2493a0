"""Chapter 5 milestones: several instances on one database, and nothing lost, doubled or mixed.

Every check runs two backends on one fresh database of the kind `--db` chose and talks to both
at once, the way a load balancer would spread one client's requests. The checks read only what
the API answers and chapter 3's `messages` table, so any way of serializing turns passes (a
locked `threads` row, advisory locks, a sequence with a unique constraint) and any way of
keeping idempotency keys in the database does.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from grader.databases import Databases
from grader.toolkit.audit import audit, db_history
from grader.toolkit.balancer import Balancer, BalancerUnavailable, Front
from grader.toolkit.chat import COUNT_QUESTION, ChatApi, Message, Turn, text_of
from grader.toolkit.conversation import Conversation, expect_remembers, user_texts
from grader.toolkit.dbview import DbView
from grader.toolkit.expect import CheckFailed, expect, fail, shorten
from grader.toolkit.explain import explain_history, listing
from grader.toolkit.load import LoadPlan, run_load
from grader.toolkit.milestone import milestone
from grader.toolkit.procs import Backend, frozen, wait_until

# Enough turns at once that two of them overlap on any machine when nothing serializes them.
CONCURRENT_TURNS = 24
_COUNT = re.compile(r"You have sent (\d+) messages?")
TEXT_REPLY = {"role": "model", "parts": [{"text": "Noted."}]}


@dataclass(frozen=True)
class Pair:
    """Two backends on one fresh database."""

    url: str
    backends: tuple[Backend, Backend]

    @property
    def db(self) -> DbView:
        return DbView(self.url, backend_dir=self.backends[0].workdir)


@pytest.fixture(scope="module")
def pair(spawn: Any, databases: Databases) -> Pair:
    url = databases.fresh_url()
    a, b = spawn(url, count=2)
    return Pair(url, (a, b))


def warm(backend: Backend) -> ChatApi:
    """A client whose connection is open already, so that a burst of requests overlaps."""
    chat = ChatApi(backend, timeout=30)
    chat.get("/health")
    return chat


@dataclass(frozen=True)
class Trio:
    """Three backends on one fresh database, behind nginx."""

    url: str
    backends: tuple[Backend, Backend, Backend]
    front: Front


@pytest.fixture(scope="module")
def trio(
    spawn: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory, grader_state: Any
) -> Iterator[Trio]:
    url = databases.fresh_url()
    backends = tuple(spawn(url, count=3))
    balancer = Balancer([b.port for b in backends], tmp_path_factory.mktemp("nginx"))
    try:
        balancer.start()
    except BalancerUnavailable as exc:
        if grader_state.config.getoption("require_all"):
            raise
        pytest.skip(str(exc))
    try:
        yield Trio(url, backends, Front(balancer, list(backends)))  # type: ignore[arg-type]
    finally:
        balancer.stop()


def all_at_once(
    count: int,
    send: Callable[[int], Any],
    held: Callable[[], AbstractContextManager[None]] | None = None,
) -> list[Any]:
    """`send(0) … send(count - 1)`, each in its own thread, released together. With `held`, the
    requests are sent while `held()` keeps them waiting on the database, then let go at once:
    every one of them is in flight at the same moment, however fast or busy the machine."""
    start = threading.Barrier(count)

    def go(n: int) -> Any:
        start.wait(timeout=30)
        return send(n)

    def burst() -> list[Any]:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(go, range(count)))

    if held is None:
        return burst()
    with ThreadPoolExecutor(1) as waiting:
        with held():
            sent = waiting.submit(burst)
            time.sleep(PILE_UP_SECONDS)
        return sent.result()


# --- 5.1 one conversation through a load balancer ----------------------------------------------


def chat_posts(backend: Backend, since: int) -> int:
    """How many POST /chat the backend's access log shows after byte `since`."""
    return backend.log_since(since, last=100_000).count('"POST /chat ')


@milestone("5.1")
def one_conversation_through_nginx(trio: Trio) -> None:
    """Turns sent to nginx land on all three instances and make one conversation, which goes on
    when one instance is killed."""
    marks = [b.log_offset_now() for b in trio.backends]
    with ChatApi(trio.front) as chat:  # type: ignore[arg-type]
        first = chat.turn("Hello! I am Ysolde, and I talk to whichever instance answers.")
        convo = Conversation(first.thread_id, first.messages)
        for prompt in ("roll 2d6+1", "tell me about the dragon", "roll 1d20"):
            convo = convo.plus(chat.turn(prompt, convo.thread_id).messages)
        served = [chat_posts(b, m) for b, m in zip(trio.backends, marks, strict=True)]
        expect(
            all(served),
            "nginx spreads requests round robin over the three instances, yet not every "
            "instance served a turn: does each one start and answer /health?",
            expected="every instance serves at least one POST /chat",
            actual=f"POST /chat per instance: {served}",
        )
        for backend in trio.backends:  # each instance, asked directly, has every turn
            with ChatApi(backend) as direct:
                seen = user_texts(direct.history(convo.thread_id))
            expect(
                seen == user_texts(convo.messages),
                f"{backend.name} (port {backend.port}) did not see turns another instance "
                "stored: every request must read the thread from the database, never from the "
                "memory of the process",
                expected=user_texts(convo.messages),
                actual=seen,
            )
        explain_history(chat.history(convo.thread_id), convo.messages, "GET /history through nginx")
        convo = expect_remembers(chat, convo, "through nginx, across three instances")
        trio.backends[1].kill()
        for prompt in ("roll 3d6", "what was my previous message?"):
            convo = convo.plus(chat.turn(prompt, convo.thread_id).messages)
        expect_remembers(chat, convo, "with one of the three instances killed")


# --- 5.2 concurrent turns on one thread take turns ---------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One of the concurrent turns: its prompt, its thread, and what it answered."""

    prompt: str
    thread_id: str
    turn: Turn

    @property
    def count(self) -> int | None:
        found = _COUNT.search(self.turn.text)
        return int(found.group(1)) if found else None


def concurrent_counts(
    backends: tuple[Backend, ...],
    *thread_ids: str,
    held: Callable[[], AbstractContextManager[None]] | None = None,
) -> list[Sent]:
    """CONCURRENT_TURNS "how many messages have I sent?" on each thread, all at once, spread
    over `backends`. With `held`, the burst is sent while `held()` keeps the turns waiting on
    the database, and released at once: every turn is then in flight at the same moment."""
    total = CONCURRENT_TURNS * len(thread_ids)
    chats = [warm(backends[n % len(backends)]) for n in range(total)]

    def send(n: int) -> Sent:
        prompt = f"{COUNT_QUESTION} (client {n + 1})"
        chat, thread_id = chats[n], thread_ids[n % len(thread_ids)]
        r = chat.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": thread_id})
        if r.status_code == 503 and "busy" in r.text:
            fail(
                'a turn among several at once on one thread got 503 "the database is busy": on '
                "SQLite a transaction that read and then writes cannot take the write lock once "
                "another turn wrote in between. Make the turn's first statement the write that "
                "locks the thread (the UPDATE of its row)",
                expected="200 for every turn (they wait for each other)",
                actual=f"503: {shorten(r.text, 200)}",
            )
        if r.status_code != 200:
            chat.unexpected(r, 200)
        return Sent(prompt, thread_id, chat.turn_from(r, prompt, thread_id))

    try:
        return all_at_once(total, send, held)
    finally:
        for chat in chats:
            chat.close()


def expect_took_turns(
    pair: Pair, thread_id: str, earlier: list[str], sent: list[Sent], new: bool = False
) -> None:
    """The thread holds the earlier prompts, then each concurrent turn whole, each reply
    counting every prompt stored before its own: proof that each turn ran alone."""
    with ChatApi(pair.backends[0]) as chat:
        stored = chat.history(thread_id)
    prompts = [s.prompt for s in sent]
    expect(
        sorted(user_texts(stored)) == sorted([*earlier, *prompts]),
        f"after {len(sent)} turns at once on one thread, the thread does not hold each prompt "
        "exactly once",
        expected=f"{len(earlier) + len(sent)} prompts, each once",
        actual=listing(stored, limit=8),
    )
    turns = split_turns(stored)
    by_prompt = {s.prompt: s for s in sent}
    mixed = [n for n, t in enumerate(turns) if len(t) < 2 or t[1]["role"] == "user"]
    if mixed:
        # Where it went wrong: the prompt left without its reply, and what follows it.
        shown = [m for t in turns[mixed[0] : mixed[0] + 4] for m in t]
        fail(
            "turns on one thread interleaved: another turn's prompt was stored between a "
            f"prompt and its reply. {NO_LOCK_NEW if new else NO_LOCK}",
            expected="each prompt followed by its own reply",
            actual=listing(shown, limit=8),
        )
    stale: list[tuple[Sent, int]] = []
    for position, turn in enumerate(turns, start=1):
        prompt = user_texts(turn)[0]
        if prompt in by_prompt:
            said = _COUNT.search(text_of(turn))
            if said is None or int(said.group(1)) != position:
                stale.append((by_prompt[prompt], position))
    if stale:
        one, position = stale[0]
        fail(
            f"{len(stale)} of {len(sent)} replies were made from a history that lacked turns "
            f"stored before them: the {ordinal(position)} prompt of the thread was answered "
            f'"{one.turn.text}". {NO_LOCK_NEW if new else NO_LOCK}',
            expected=f"You have sent {position} messages in this conversation.",
            actual=one.turn.text,
        )
    answered = [s for s in sent if s.count is None or s.turn.messages[1:] == []]
    expect(
        not answered,
        "a POST /chat answer does not carry the reply the thread stored for its prompt",
        actual=shorten([s.turn.messages for s in answered[:1]], 300),
    )
    for s in sent:
        position = next(i for i, t in enumerate(turns, 1) if user_texts(t)[0] == s.prompt)
        expect(
            s.count == position,
            "a POST /chat answered a reply that is not the one stored for its prompt",
            expected=f"You have sent {position} messages (as stored)",
            actual=s.turn.text,
        )


def split_turns(stored: list[Message]) -> list[list[Message]]:
    """The thread cut before each prompt, keeping prompts that came in a row together: each
    list is a turn, its prompt first (two prompts in a row: a turn interleaved)."""
    turns: list[list[Message]] = []
    for m in stored:
        starts = m["role"] == "user" and not (turns and all(x["role"] == "user" for x in turns[-1]))
        if starts or not turns:
            turns.append([])
        turns[-1].append(m)
    return turns


NO_LOCK = (
    "Two turns read the history at once, each before the other was stored. Lock the thread in "
    "the database first (a threads row UPDATEd or SELECTed FOR UPDATE), then read the history, "
    "then store the whole turn, all in one transaction: a turn stored in two transactions "
    "lets another turn in between"
)
NO_LOCK_NEW = (
    "This thread had no message before these turns: a lock on the thread's message rows "
    "(SELECT ... FOR UPDATE on messages) locks nothing when there are none. Lock a row that "
    "exists before the first message: the thread's row in `threads`"
)
# Bursts through one instance, all whole, before 5.2 blames a lock in process memory.
ONE_INSTANCE_BURSTS = 3
PROCESS_LOCK = (
    f"{ONE_INSTANCE_BURSTS} bursts of turns at once through one instance took turns, through "
    "two instances they did not: a lock in process memory (threading.Lock) holds within one "
    "process only. The lock must be in the database, where every instance takes it"
)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# How long the turns of a burst wait on the database before they are let go together.
PILE_UP_SECONDS = 0.5

# A thread chapter 4 wrote (rows only, nothing else of chapter 5's), long enough that reading
# it takes a while: turns that nothing serializes overlap then, even on a fast machine.
EARLIER_TURNS = 200


@milestone("5.2")
def turns_on_one_thread_take_turns(pair: Pair, databases: Databases) -> None:
    """24 turns at once, through two instances, on a thread chapter 4 wrote: each stored whole,
    each reply made from every turn stored before it."""
    expect_bursts_take_turns(pair, databases, lambda: chapter_4_thread(pair), new=False)


def expect_bursts_take_turns(
    pair: Pair, databases: Databases, thread: Callable[[], tuple[str, list[str]]], new: bool
) -> None:
    """A burst on a `thread()` through both instances, let go at once, takes turns. If not,
    the same burst through one instance tells a lock that holds within one process from no
    lock at all."""

    def held() -> AbstractContextManager[None]:
        return turns_held(pair, databases)

    thread_id, earlier = thread()
    try:
        sent = concurrent_counts(pair.backends, thread_id, held=held)
        expect_took_turns(pair, thread_id, earlier, sent, new=new)
    except CheckFailed as through_two:
        # A lock in process memory serializes every burst through one instance; other faults
        # interleave there too, if not every time: only bursts that all come out whole say so.
        for _ in range(ONE_INSTANCE_BURSTS):
            alone, before = thread()
            try:
                sent = concurrent_counts(pair.backends[:1], alone, held=held)
                expect_took_turns(pair, alone, before, sent, new=new)
            except CheckFailed:
                raise through_two from None
        fail(PROCESS_LOCK, expected="the same through two instances as through one")


def chapter_4_thread(pair: Pair) -> tuple[str, list[str]]:
    """A new thread of EARLIER_TURNS turns, written as chapter 4 would have: rows only."""
    thread_id = str(uuid.uuid4())
    earlier = [f"earlier message {n + 1}" for n in range(EARLIER_TURNS)]
    rows = [m for p in earlier for m in ({"role": "user", "parts": [{"text": p}]}, TEXT_REPLY)]
    pair.db.insert(thread_id, rows)
    return thread_id, earlier


@milestone("5.2")
def first_turns_of_a_new_thread_take_turns(pair: Pair, databases: Databases) -> None:
    """The same on threads that have no message yet: a lock on their rows would lock nothing."""
    # Only the turns that start before the thread's first commit can collide: the bursts are
    # let go at once for that (and for every other check of 5.2).
    expect_bursts_take_turns(pair, databases, lambda: (str(uuid.uuid4()), []), new=True)


# --- 5.3 a retried request is stored once -------------------------------------------------------


def keyed(chat: ChatApi, key: str, body: dict[str, Any]) -> httpx.Response:
    return chat.post("/chat", expect_status=None, json=body, headers={"Idempotency-Key": key})


def prompts_in(backend: Backend, thread_id: str) -> list[str]:
    """The prompts of a thread, as GET /history on `backend` gives them."""
    with ChatApi(backend) as chat:
        return user_texts(chat.history(thread_id))


@milestone("5.3")
def a_retry_gets_the_first_answer(pair: Pair) -> None:
    """The same key and body again, on the other instance: the same answer, one stored turn."""
    key = f"retry-{uuid.uuid4()}"
    # A thread of its own, so a turn run twice shows as two turns in it. The offline assistant
    # rolls dice seeded by what it is given: after an earlier turn, four dice of a thousand
    # sides computed again from anything else than that history come out different.
    opening = "Hello! I roll dice, and I may retry."
    body = {"prompt": "roll 4d1000+3", "thread_id": str(uuid.uuid4())}
    one, two = (ChatApi(b) for b in pair.backends)
    with one, two:
        one.turn(opening, body["thread_id"])
        first = keyed(one, key, body)
        expect(
            first.status_code == 200,
            "POST /chat with an Idempotency-Key must work as without",
            expected=200,
            actual=f"{first.status_code}: {shorten(first.text, 200)}",
        )
        again = keyed(two, key, body)
    thread_id = first.json()["thread_id"]
    prompts = prompts_in(pair.backends[0], thread_id)
    expect(
        prompts == [opening, body["prompt"]],
        "the retry stored its turn a second time: look the key up before running the turn, "
        "and keep keys in the database so every instance sees them",
        expected=[opening, body["prompt"]],
        actual=prompts,
    )
    expect(
        again.status_code == 200 and again.json() == first.json(),
        "a retry with the same Idempotency-Key and body must get the first answer again, "
        "replayed from the database (not computed again): store the answer with the key, in "
        "the turn's transaction",
        expected=f"200 {shorten(first.json(), 200)}",
        actual=f"{again.status_code} {shorten(again.text, 200)}",
    )


@milestone("5.3", after=a_retry_gets_the_first_answer)
def a_key_is_one_request(_: None, pair: Pair) -> None:
    """The key with another body is a 422; a key differing only in case is another key."""
    key = f"Key-{uuid.uuid4()}"
    with ChatApi(pair.backends[0]) as chat:
        first = keyed(chat, key, {"prompt": "tell me about the dragon"})
        thread_id = first.json()["thread_id"]
        same = keyed(chat, key, {"prompt": "tell me about the dragon", "thread_id": None})
        expect(
            same.status_code == 200 and same.json() == first.json(),
            'a body without thread_id and one with "thread_id": null are the same request: '
            "compare the parsed request, not the raw bytes",
            expected=200,
            actual=f"{same.status_code}: {shorten(same.text, 200)}",
        )
        other = keyed(chat, key, {"prompt": "roll 2d6", "thread_id": thread_id})
        expect(
            other.status_code == 422,
            "the same Idempotency-Key with another body must get 422: the key names one "
            "request, so keep a hash of its body with the key and compare",
            expected="422",
            actual=f"{other.status_code}: {shorten(other.text, 200)}",
        )
        # (HTTP strips a header's trailing spaces, so case is what a collation can lose.)
        for variant in (key.lower(), key.upper()):
            body = {"prompt": "tell me about the dragon", "thread_id": thread_id}
            r = keyed(chat, variant, body)
            expect(
                r.status_code == 200 and r.json()["messages"] != [],
                f"Idempotency-Key {variant!r} is another key than {key!r}, yet it was taken "
                "for it: keys compare exactly (store a hash of the key, or a binary column: "
                "MySQL's default collation ignores case)",
                expected="200, a new turn",
                actual=f"{r.status_code}: {shorten(r.text, 200)}",
            )
    prompts = prompts_in(pair.backends[0], thread_id)
    expect(
        len(prompts) == 3,
        "the thread should hold the first turn and one turn for each of the two other keys",
        expected="3 prompts",
        actual=prompts,
    )


@milestone("5.3", after=a_retry_gets_the_first_answer)
def concurrent_retries_are_stored_once(_: None, pair: Pair, databases: Databases) -> None:
    """Eight copies of one keyed request at once, on two instances: one turn; 200s that agree,
    or 409 for a copy that came while the first was running."""
    key = f"burst-{uuid.uuid4()}"
    body = {"prompt": "roll 3d6", "thread_id": str(uuid.uuid4())}

    chats = [warm(pair.backends[n % 2]) for n in range(8)]
    try:
        answers = all_at_once(
            8, lambda n: keyed(chats[n], key, body), held=lambda: turns_held(pair, databases)
        )
    finally:
        for chat in chats:
            chat.close()
    statuses = sorted(r.status_code for r in answers)
    prompts = prompts_in(pair.backends[0], body["thread_id"])
    expect(
        prompts == [body["prompt"]],
        f"{len(prompts)} turns stored for one Idempotency-Key sent {len(answers)} times at once: "
        "checking for the key and then storing it is two steps another request gets between. "
        "Claim the key with an INSERT the primary key makes unique; the copy whose INSERT fails "
        "answers 409 or replays",
        expected=[body["prompt"]],
        actual=prompts,
    )
    crashed = [status for status in statuses if status >= 500]
    expect(
        not crashed,
        f"{len(crashed)} of {len(answers)} copies of one keyed request sent at once got "
        f"{crashed[0] if crashed else 500}: copies that found no key all ran the turn, then "
        "collided storing the key. Claim the key before running the turn, with an INSERT the "
        "primary key makes unique; a copy whose INSERT fails answers 409 or replays",
        expected="200 or 409 for each",
        actual=statuses,
    )
    expect(
        set(statuses) <= {200, 409} and 200 in statuses,
        "copies of one keyed request sent at once must each get the answer (200) or 409 "
        "while the first is still running",
        expected="200 or 409 for each",
        actual=statuses,
    )
    bodies = {repr(r.json()) for r in answers if r.status_code == 200}
    expect(
        len(bodies) == 1,
        "the 200 answers to copies of one keyed request differ: each must be the stored one",
        actual=sorted(bodies),
    )


# --- 5.4 readiness -----------------------------------------------------------------------------


@milestone("5.4")
def ready_when_the_database_answers(pair: Pair) -> None:
    """GET /health/ready is 200 {"status": "ready"} on every instance while the database answers."""
    for backend in pair.backends:
        with ChatApi(backend) as chat:
            body = chat.json("GET", "/health/ready")
        expect(
            body == {"status": "ready"},
            'GET /health/ready must answer 200 {"status": "ready"} when the database answers',
            expected={"status": "ready"},
            actual=shorten(body, 200),
        )


def timed_get(backend: Backend, path: str, timeout: float = 10) -> tuple[int, float]:
    """(status, seconds) of one GET on a fresh connection; status 0 when it timed out."""
    start = time.monotonic()
    try:
        status = httpx.get(backend.url + path, timeout=timeout).status_code
    except httpx.TimeoutException:
        status = 0
    return status, time.monotonic() - start


# SPEC: a request's database work has a deadline of about 6 s, then it is answered 503.
TURN_BOUND_SECONDS = 8.0


def timed_turn(backend: Backend) -> tuple[int, float, str]:
    """(status, seconds, body) of one POST /chat; status 0 when it got no answer in 15 s."""
    start = time.monotonic()
    body = {"prompt": "Does anyone hear me?", "thread_id": str(uuid.uuid4())}
    try:
        r = httpx.post(backend.url + "/chat", json=body, timeout=15)
    except httpx.TimeoutException:
        return 0, time.monotonic() - start, ""
    return r.status_code, time.monotonic() - start, r.text


def expect_turn_bounded(status: int, seconds: float, body: str, during: str) -> None:
    expect(
        status == 503 and seconds < TURN_BOUND_SECONDS,
        f"{during}, a turn must get 503 within about 6 s, then the client may retry "
        "elsewhere. A frozen server cannot enforce its own statement_timeout, and a driver "
        "may wait on its socket for ever: the backend needs a deadline of its own on each "
        "request's database work (backend/db.py)",
        expected=f"503 in under {TURN_BOUND_SECONDS:.0f} s",
        actual=f"{status or 'no answer'} after {seconds:.1f} s {shorten(body, 200)}",
    )


@contextmanager
def database_frozen(databases: Databases) -> Iterator[None]:
    """The database server stopped dead (SIGSTOP): its port still accepts, nothing answers."""
    pid = databases.server.pid
    if pid is None:
        pytest.skip("the database server was not started by the grader: it cannot freeze it")
    with frozen(pid):
        yield


@contextmanager
def database_stopped(databases: Databases) -> Iterator[None]:
    """The database server shut down (its port refuses), then started again: a restart that
    kills every connection the backend holds."""
    from grader.dbservers.start import stopped

    server = databases.server
    if server.pid is None:
        pytest.skip("the database server was not started by the grader: it cannot stop it")
    with stopped(server):
        yield


@contextmanager
def write_locked(pair: Pair) -> Iterator[None]:
    """Another connection holds SQLite's one write lock, as a long write would."""
    path = pair.url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.close()


@milestone("5.4", after=ready_when_the_database_answers)
def readiness_follows_the_database(_: None, pair: Pair, databases: Databases) -> None:
    """While the database does not answer (frozen, then stopped), /health/ready says 503 within
    about a second, /health stays instant and a turn gets 503 within about 6 s; once the
    database answers again, the instance is ready and serves turns by itself."""
    backend = pair.backends[0]
    if databases.kind == "sqlite":
        # SQLite has no server to stop; a held write lock is its outage. In WAL mode reads go
        # on, so the instance stays ready, while a turn gets a 503 once its deadline passes.
        with write_locked(pair), ThreadPoolExecutor(1) as pool:
            turn = pool.submit(timed_turn, backend)
            status, seconds = timed_get(backend, "/health/ready", timeout=5)
            expect(
                status == 200,
                "with SQLite's write lock held by another connection, reads still work (WAL): "
                "/health/ready must stay 200",
                expected="200 within a second",
                actual=f"{status or 'no answer'} after {seconds:.1f} s",
            )
            expect_turn_bounded(*turn.result(), "with SQLite's write lock held elsewhere")
        expect_serving_again(pair, "the write lock is released")
        return
    # Frozen first: it is the outage a timeout must cut short. Stopped, the port refuses at
    # once, and what it finds is a backend that keeps its dead connections after the restart.
    expect_outage_answered(backend, database_frozen(databases), "frozen")
    expect_serving_again(pair, "the database answers again")
    expect_outage_answered(backend, database_stopped(databases), "stopped")
    expect_serving_again(pair, "the database is started again")


def expect_outage_answered(
    backend: Backend, outage: AbstractContextManager[None], how: str
) -> None:
    with outage, ThreadPoolExecutor(1) as pool:
        turn = pool.submit(timed_turn, backend)
        status, seconds = timed_get(backend, "/health/ready", timeout=5)
        health, health_s = timed_get(backend, "/health", timeout=5)
        turned = turn.result()
    expect(
        not (status == 200 and seconds < 1),
        f"with the database {how}, GET /health/ready answered 200 at once: readiness must "
        "ask the database (one query) and answer 503 when it gets no answer",
        expected="503 in about 1 s",
        actual=f"200 after {seconds:.1f} s",
    )
    expect(
        status == 503 and seconds < 2.5,
        f"with the database {how}, GET /health/ready must answer 503 within about a second: "
        "give its database round trip a timeout (1 s) and answer 503 when it passes",
        expected="503 in about 1 s",
        actual=f"{status or 'no answer'} after {seconds:.1f} s",
    )
    expect(
        health == 200 and health_s < 0.5,
        f"with the database {how}, GET /health (liveness) must answer 200 at once: it must "
        "not touch the database, or an orchestrator restarts every instance for an outage "
        "a restart cannot fix",
        expected="200 in under 0.5 s",
        actual=f"{health or 'no answer'} after {health_s:.1f} s",
    )
    expect_turn_bounded(*turned, f"with the database {how}")


def expect_serving_again(pair: Pair, once: str) -> None:
    """Every instance ready again by itself, and serving turns (the one that saw the outage,
    and the one that sat idle through it with its pooled connections)."""
    for backend in pair.backends:
        ok = wait_until(
            lambda b=backend: timed_get(b, "/health/ready", timeout=3)[0] == 200, timeout=10
        )
        expect(
            ok,
            f"once {once}, /health/ready must say 200 by itself, without a restart of the "
            "backend (a broken connection must not be kept and reused)",
            expected="200 within 10 s",
            actual=f"{timed_get(backend, '/health/ready')[0]}",
        )
        status, seconds, body = timed_turn(backend)
        expect(
            status == 200,
            f"once {once} and /health/ready says 200, a turn must be answered again",
            expected="200",
            actual=f"{status or 'no answer'} after {seconds:.1f} s {shorten(body, 200)}",
        )


# --- 5.5 a killed instance loses no acknowledged turn -------------------------------------------


@dataclass
class Load:
    """Clients sending turns through nginx until stopped, each on its own thread."""

    url: str
    clients: int = 6
    # (thread id, prompt, status, start of the answer) of every request, in the order sent
    sent: list[tuple[str, str, int, str]] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        def client(n: int) -> None:
            thread_id = str(uuid.uuid4())
            # A connection per request: an nginx reload closes idle kept-alive connections,
            # and a request sent on one at that instant is lost on the way (the client's race,
            # not the backend's; browsers resend it, httpx does not).
            headers = {"Connection": "close"}
            with httpx.Client(base_url=self.url, timeout=30, headers=headers) as http:
                for turn in range(10_000):
                    if stop.is_set():
                        return
                    prompt = f"client {n + 1}, turn {turn + 1}"
                    body = {"prompt": prompt, "thread_id": thread_id}
                    try:
                        r = http.post("/chat", json=body)
                        self.sent.append((thread_id, prompt, r.status_code, r.text[:200]))
                    except httpx.HTTPError as exc:
                        self.sent.append((thread_id, prompt, 0, type(exc).__name__))

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(client, range(self.clients)))


# How long all_up waits, in all, for the instances to say they are ready.
READY_WAIT_SECONDS = 10.0


def all_up(trio: Trio) -> None:
    """Every instance running, ready and in nginx (a check before may have killed one, or
    restarted the database under it)."""
    for backend in trio.backends:
        if not backend.alive:
            backend.start()
    # Traffic goes to an instance once it says it is ready, as an orchestrator's would: after
    # 5.4 restarts the database, an instance's first query finds its pooled connections dead
    # and is answered 503 (rightly) before the pool reconnects. Only a 503 is waited out, and
    # for a bounded time: a readiness that is missing or wrong is 5.4's fault to report.
    deadline = time.monotonic() + READY_WAIT_SECONDS
    for backend in trio.backends:
        wait_until(
            lambda b=backend: timed_get(b, "/health/ready", timeout=3)[0] != 503,
            timeout=max(0.0, deadline - time.monotonic()),
        )
    trio.front.balancer.set_backends([b.port for b in trio.backends])


def expect_each_acknowledged_turn_once(backend: Backend, load: Load, after: str) -> None:
    """Each thread the load wrote holds whole turns only: every prompt answered 200 exactly
    once, in the order sent, and any other prompt at most once (it may have been stored just
    before its instance died)."""
    by_thread: dict[str, list[tuple[str, int]]] = {}
    for thread_id, prompt, status, _ in load.sent:
        by_thread.setdefault(thread_id, []).append((prompt, status))
    with ChatApi(backend) as chat:
        stored_of = {thread_id: chat.history(thread_id) for thread_id in by_thread}
    for thread_id, sent in by_thread.items():
        stored = stored_of[thread_id]
        turns = split_turns(stored)
        half = [t for t in turns if len(t) < 2 or t[1]["role"] == "user"]
        expect(
            not half,
            f"{after}, a thread holds a prompt without its reply: a half-stored turn. Store "
            "the user's message and the replies in one transaction, so a crash stores all or "
            "nothing",
            expected="each prompt followed by its reply",
            actual=listing(stored[-8:]),
        )
        prompts = user_texts(stored)
        acknowledged = [p for p, status in sent if status == 200]
        sent_order = [p for p, _ in sent]
        expect(
            all(prompts.count(p) == 1 for p in acknowledged)
            and all(prompts.count(p) <= 1 for p in sent_order)
            and prompts == [p for p in sent_order if p in prompts],
            f"{after}, a thread does not hold each acknowledged turn exactly once, in order: "
            "a turn answered 200 must be committed before the answer leaves, and stored once",
            expected=acknowledged,
            actual=prompts,
        )


@milestone("5.5")
def a_killed_instance_loses_no_acknowledged_turn(trio: Trio) -> None:
    """SIGKILL of one of three instances under load through nginx: every turn answered 200 is
    stored exactly once, none is stored by half, and the others go on serving."""
    all_up(trio)
    with ChatApi(trio.front) as chat:  # type: ignore[arg-type]
        chat.turn("Before the load: does a turn go through at all?")
    load, stop = Load(trio.front.balancer.url), threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(load.run, stop)
        time.sleep(0.7)
        trio.backends[0].kill()
        killed_at = len(load.sent)
        time.sleep(1.0)
        stop.set()
        running.result(timeout=60)
    after_kill = [status for _, _, status, _ in load.sent[killed_at:]]
    expect(
        after_kill.count(200) > len(after_kill) // 2,
        "after one of three instances was killed, most turns through nginx should still "
        "succeed on the other two",
        expected="mostly 200",
        actual=f"{after_kill.count(200)} of {len(after_kill)} answered 200",
    )
    expect_each_acknowledged_turn_once(trio.backends[1], load, "after an instance was killed")


# --- 5.6 SIGTERM drains; a rolling restart fails no request ------------------------------------


@contextmanager
def turns_held(pair: Pair, databases: Databases) -> Iterator[None]:
    """Another connection holds what a turn must write, so a turn sent now waits in flight."""
    if databases.kind == "sqlite":
        with write_locked(pair):
            yield
        return
    engine = create_engine(pair.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if databases.kind == "postgres":
                conn.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))
            else:
                conn.execute(text("LOCK TABLES messages WRITE"))
            try:
                yield
            finally:
                if databases.kind == "mysql":
                    conn.execute(text("UNLOCK TABLES"))
                conn.rollback()
    finally:
        engine.dispose()


@milestone("5.6")
def a_turn_in_flight_at_sigterm_completes(pair: Pair, databases: Databases) -> None:
    """SIGTERM while a turn waits on the database: the instance finishes it (200, stored),
    then exits."""
    backend = pair.backends[0]
    thread_id = str(uuid.uuid4())
    prompt = "I was sent just before the instance was told to stop."
    with ChatApi(backend, timeout=30) as chat, ThreadPoolExecutor(1) as pool:
        with turns_held(pair, databases):
            body = {"prompt": prompt, "thread_id": thread_id}
            answer = pool.submit(chat.post, "/chat", expect_status=None, json=body)
            time.sleep(0.5)  # the turn has arrived and waits for the lock
            backend.terminate()
            time.sleep(0.5)
            draining = backend.alive
        expect(
            draining,
            "the instance exited at once on SIGTERM, with a turn still in flight: let uvicorn "
            "drain (it stops accepting, finishes the requests it has, then exits); do not exit "
            "from a signal handler of your own",
            expected="still running 0.5 s after SIGTERM, until its turn is answered",
            actual="exited",
        )
        try:
            response = answer.result(timeout=30)
        except CheckFailed as exc:
            fail(
                "the turn in flight when the instance got SIGTERM got no answer: an instance "
                "must finish the turns it has before it exits",
                expected="200",
                actual=exc.rationale,
            )
    expect(
        response.status_code == 200,
        "the turn in flight when the instance got SIGTERM must complete with 200",
        expected="200",
        actual=f"{response.status_code}: {shorten(response.text, 200)}",
    )
    exited = wait_until(lambda: not backend.alive, timeout=10)
    expect(exited, "after finishing its turn, the instance must exit on SIGTERM", actual="running")
    backend.start()
    expect(
        prompts_in(pair.backends[0], thread_id) == [prompt],
        "the turn answered 200 during shutdown is not stored once in its thread",
        expected=[prompt],
        actual=prompts_in(pair.backends[0], thread_id),
    )


@milestone("5.6", after=a_turn_in_flight_at_sigterm_completes)
def a_rolling_restart_fails_no_request(_: None, trio: Trio) -> None:
    """Under load through nginx, each instance in turn: out of nginx, SIGTERM, wait for it to
    exit, start it again, wait for /health/ready, back into nginx. No request fails."""
    backends, balancer = trio.backends, trio.front.balancer
    all_up(trio)
    load, stop = Load(balancer.url), threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(load.run, stop)
        time.sleep(0.3)
        for backend in backends:
            balancer.set_backends([b.port for b in backends if b is not backend])
            backend.stop()
            backend.start()
            ready = wait_until(
                lambda b=backend: timed_get(b, "/health/ready", timeout=2)[0] == 200, timeout=10
            )
            expect(ready, f"{backend.name} restarted but /health/ready never said 200")
            balancer.set_backends([b.port for b in backends])
            time.sleep(0.1)
        stop.set()
        running.result(timeout=60)
    failed = [s for s in load.sent if s[2] != 200]
    expect(
        len(load.sent) > len(backends) * 2,
        "the load barely ran during the rolling restart",
        actual=f"{len(load.sent)} requests",
    )
    expect(
        not failed,
        f"{len(failed)} of {len(load.sent)} requests failed during a rolling restart done the "
        "orchestrator's way (out of nginx first, then SIGTERM): an instance must finish what "
        "it has before exiting, and start answering only when ready",
        expected="200 for every request",
        actual=[f"{status or 'no answer'}: {text}" for _, _, status, text in failed[:3]],
    )
    expect_each_acknowledged_turn_once(backends[0], load, "after a rolling restart")


# --- 5.7 a load run: every thread whole ----------------------------------------------------------

# Hundreds of turns over dozens of threads, several users on each at once, every turn with a key
# and resent once when it gets no answer: what `grader load` does, small enough for a check.
LOAD = LoadPlan(users=16, seconds=3, shared_threads=24, idempotency_keys=True, retries=1)
LOAD_TURNS = 100  # fewer answered turns than this and the run proved little


@milestone("5.7")
def a_load_run_leaves_every_thread_whole(trio: Trio, tmp_path_factory: Any) -> None:
    """16 users for 3 s through nginx over three instances, on 24 threads at once: every turn
    answered 200, and reading back every thread finds no turn lost, doubled, interleaved or
    answered from a stale history."""
    all_up(trio)
    result = run_load(trio.front.balancer.url, LOAD, tmp_path_factory.mktemp("load"))
    expect(
        result.turns >= LOAD_TURNS,
        "the load run barely got answers",
        expected=f"at least {LOAD_TURNS} turns answered 200 in {LOAD.seconds:g} s",
        actual=result.summary(),
    )
    errors = result.errors()
    expect(
        not errors,
        "requests failed under a moderate load through nginx: three instances and one database "
        "should serve 16 users without an error",
        expected="200 for every request",
        actual=result.summary()
        + "".join(f"\n  {r.error}: {r.detail}" for r in result.requests if r.error)[:600],
    )
    audited = audit(result, db_history(DbView(trio.url, backend_dir=trio.backends[0].workdir)))
    expect(
        audited.ok,
        f"reading back the {audited.threads} threads of the load run found integrity faults "
        f"({', '.join(f'{n} × {kind}' for kind, n in audited.counts().items())}): turns on one "
        "thread must take turns on every instance, and a turn must be stored whole, once",
        expected="no integrity faults",
        actual=audited.summary(examples=2),
    )
