"""Chapter 4 milestones: chapter 3's history on SQLite, Postgres and MySQL through SQLAlchemy;
JSON parts that round-trip exactly; one connection pool per process; hostile strings.

Black box throughout: real backend processes on a fresh database of the kind `--db` names
(a throwaway Postgres or MariaDB server, or GRADER_POSTGRES_URL / GRADER_MYSQL_URL), real HTTP,
and the grader's own connection to the database to read the rows and to ask the server how many
connections the backend holds. Any correct solution passes, whatever its module layout.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, MetaData, Table, create_engine, inspect, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from grader.checks.ch03 import (
    FIRST_RE,
    chat_messages,
    expect_first_message,
    explain_history,
    explain_rows,
    history,
    missing_from_page,
    model_text,
    page_listing,
    turn,
    user_texts,
)
from grader.databases import Databases
from grader.toolkit.chat import ChatApi
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.procs import Backend

LABELS = {"sqlite": "SQLite", "postgres": "Postgres", "mysql": "MySQL/MariaDB"}
FIRST_PROMPT = "Hello, game master! I am Ysolde of Saltmere 🐉 — «first» message."


# --- the grader's own view of the database ------------------------------------------------------


def _engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def _kind(url: str) -> str:
    name = make_url(url).get_backend_name()
    return {"postgresql": "postgres", "mariadb": "mysql"}.get(name, name)


def _as_thread(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def table_rows(url: str) -> list[dict[str, Any]]:
    """Every row of `messages`, oldest first, with `parts` as JSON text (as chapter 3 reads it).

    Whatever the column's type (JSON, JSONB, TEXT), the parts come back as the same JSON text,
    so chapter 3's row checks apply unchanged.
    """
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            expect(
                "messages" in names,
                "the database has no `messages` table after the backend started: create it at "
                "startup (metadata.create_all(engine))",
                expected="a table named messages",
                actual=f"tables: {sorted(names)}",
            )
            rows = conn.execute(
                text("SELECT id, thread_id, role, parts FROM messages ORDER BY id")
            ).mappings()
            out = []
            for row in rows:
                parts = row["parts"]
                if isinstance(parts, bytes):
                    parts = parts.decode("utf-8")
                if not isinstance(parts, str):  # Postgres' driver hands JSON columns back parsed
                    parts = json.dumps(parts, ensure_ascii=False)
                out.append({**row, "thread_id": str(row["thread_id"]), "parts": parts})
            return out
    finally:
        engine.dispose()


def thread_rows(url: str, thread_id: str) -> list[dict[str, Any]]:
    want = _as_thread(thread_id)
    return [r for r in table_rows(url) if _as_thread(r["thread_id"]) == want]


def parts_of(rows: list[dict[str, Any]]) -> list[Any]:
    return [json.loads(r["parts"]) for r in rows]


def insert_by_hand(url: str, thread_id: str, messages: list[dict[str, Any]]) -> None:
    """Add rows to the learner's `messages` table the way the chapter's layout says they look."""
    engine = _engine(url)
    try:
        table = Table("messages", MetaData(), autoload_with=engine)
        json_column = isinstance(table.c.parts.type, JSON)
        created = table.c.created_at
        rows = []
        for m in messages:
            row: dict[str, Any] = {
                "thread_id": thread_id,
                "role": m["role"],
                "parts": m["parts"] if json_column else json.dumps(m["parts"]),
            }
            if created.server_default is None:
                row["created_at"] = datetime.now(UTC).replace(tzinfo=None)
            rows.append(row)
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    except Exception as exc:
        fail(
            "the grader could not add rows to your messages table by hand; does it have the "
            "chapter's layout (id, thread_id, role, parts, created_at)?",
            expected="INSERT INTO messages (thread_id, role, parts, created_at) to work",
            actual=f"{type(exc).__name__}: {shorten(str(exc), 300)}",
        )
    finally:
        engine.dispose()


def connection_count(databases: Databases, url: str, backend: Backend) -> int | None:
    assert backend.proc is not None
    return databases.connection_count(url, backend_pid=backend.proc.pid)


class _api:
    def __init__(self, backend: Backend) -> None:
        self.client = ChatApi(backend)

    def __enter__(self) -> ChatApi:
        return self.client

    def __exit__(self, *_: Any) -> None:
        self.client.close()


# --- fixtures ----------------------------------------------------------------------------------


@dataclass
class Story:
    """What the 4.1 checks learned, handed on to the next check of the module."""

    url: str
    a: Backend
    b: Backend
    thread_id: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def story(spawn: Any, databases: Databases) -> Story:
    """Two backends on one fresh database of the chosen kind (`--db`)."""
    url = databases.fresh_url()
    a, b = spawn(url, count=2)
    return Story(url, a, b)


@pytest.fixture()
def apis(story: Story) -> Iterator[tuple[ChatApi, ChatApi]]:
    a, b = ChatApi(story.a), ChatApi(story.b)
    yield a, b
    a.close()
    b.close()


def _need_story(story: Story) -> None:
    if story.thread_id is None:
        pytest.skip("can't check until the first turn is stored")


# --- 4.1 chapter 3's history holds on this database --------------------------------------------


@pytest.mark.milestone("4.1")
def test_turns_are_rows_in_the_database(
    story: Story, apis: tuple[ChatApi, ChatApi], databases: Databases
):
    a, _ = apis
    kind = LABELS[databases.kind]
    tid, first = turn(a, FIRST_PROMPT, None)
    rows = thread_rows(story.url, tid)
    if not rows and table_rows(story.url):
        fail(
            f"POST /chat stored rows, but not under the thread id it answered ({kind})",
            expected=f"rows with thread_id {tid}",
            actual=shorten([r["thread_id"] for r in table_rows(story.url)][:5]),
        )
    explain_rows(rows, first, tid)
    _, dice = turn(a, "roll 2d6+1", tid)
    explain_rows(thread_rows(story.url, tid), first + dice, tid)
    story.thread_id, story.messages = tid, first + dice


@pytest.mark.milestone("4.1")
def test_two_backends_serve_one_conversation(story: Story, apis: tuple[ChatApi, ChatApi]):
    _need_story(story)
    a, b = apis
    tid = story.thread_id
    where = f"GET /history on the second backend (port {story.b.port})"
    got = history(b, tid)
    if len(got) < len(story.messages) and got == story.messages[: len(got)]:
        fail(
            "the second backend does not see the turns the first one stored: every request "
            "must read the thread from the database",
            expected=f"{len(story.messages)} messages",
            actual=f"{len(got)} messages",
        )
    explain_history(got, story.messages, [], where)
    story.messages += expect_first_message(
        b,
        tid,
        FIRST_PROMPT,
        "the second backend did not quote the thread's first message: load the whole thread "
        "from the database before calling respond()",
    )
    explain_history(history(a, tid), story.messages, [], "GET /history on the first backend")


@pytest.mark.milestone("4.1")
def test_a_restarted_backend_keeps_the_history(story: Story):
    _need_story(story)
    story.a.restart()
    with _api(story.a) as a:
        explain_history(
            history(a, story.thread_id), story.messages, [], "GET /history after a restart"
        )
        story.messages += expect_first_message(
            a,
            story.thread_id,
            FIRST_PROMPT,
            "after a restart the assistant did not quote the thread's first message",
        )


@pytest.mark.milestone("4.1")
def test_a_refreshed_page_shows_the_whole_history(target: Path, story: Story):
    _need_story(story)
    from grader.toolkit.page import Page

    page = Page(target, story.b.url, {"thread_id": story.thread_id})
    missing = missing_from_page(chat_messages(page), story.messages)
    expect(
        missing is None,
        "a fresh page opened with ?thread_id=… does not show the whole thread",
        expected=user_texts(story.messages),
        actual=page_listing(chat_messages(page)),
    )


@pytest.mark.milestone("4.1")
def test_clearing_one_thread_leaves_the_others(story: Story, apis: tuple[ChatApi, ChatApi]):
    _need_story(story)
    a, b = apis
    gone, g1 = turn(a, "This thread will be cleared.", None)
    kept, k1 = turn(b, "This thread must survive the clear.", None)
    a.delete(f"/history/{gone}")
    expect(
        history(b, gone) == [],
        "after DELETE /history/A, GET /history/A on the other backend still returns messages",
        expected=[],
        actual=[shorten(m, 120) for m in history(b, gone)],
    )
    expect(
        not thread_rows(story.url, gone),
        "DELETE /history/A answered 204, but thread A's rows are still in the messages table: "
        "did the transaction commit?",
        expected="0 rows",
        actual=f"{len(thread_rows(story.url, gone))} rows",
    )
    explain_history(history(a, kept), k1, g1, "GET /history for thread B after clearing A")
    explain_history(
        history(a, story.thread_id), story.messages, g1, "GET /history of an older thread"
    )


# --- 4.2 JSON parts round-trip exactly ----------------------------------------------------------

TRICKY_PROMPTS = [
    "Ünïcödé: Grüße, naïve café, Ελληνικά, Русский, עברית, العربية, 日本語, 한국어, 龍",
    "Emoji: 🐉🎲🏰 👩‍👩‍👧‍👦 🏳️‍🌈 ✊🏿 and a lone skin tone 🏽",
    "Quotes: 'single' \"double\" `back` „low“ «guillemets» ‘curly’ “curly”",
    'JSON-looking: {"text": "not a part"}, [1, 2], null, true, "\\u0041", \\"escaped\\"',
    "Whitespace:\n\tline two after a tab\r\nline three after CRLF  trailing spaces  ",
    "Backslashes: C:\\Users\\ysolde\\notes.txt and \\n that is not a newline and \\\\",
]
LONG_PROMPT = ("A long tale of Saltmere 🐉 with «quotes» and 'apostrophes'. " * 200)[:7999] + "!"
NESTED_TURN = [
    {"role": "user", "parts": [{"text": "cast the spell of nested arguments ✨"}]},
    {
        "role": "model",
        "parts": [
            {"text": "Let me check the grimoire…"},
            {
                "function_call": {
                    "name": "cast_spell",
                    "args": {
                        "spell": "Feuerball 🔥",
                        "targets": [{"name": "goblin 'Grib'", "hp": 7}, {"name": 'troll "T"'}],
                        "options": {
                            "power": 2.5,
                            "silent": False,
                            "focus": None,
                            "tags": [],
                            "meta": {},
                            "deep": {"er": {"still": [1, [2, [3, {"end": "🌀"}]]]}},
                        },
                        "ünïcode key": "välue",
                    },
                }
            },
        ],
    },
    {
        "role": "tool",
        "parts": [
            {
                "function_response": {
                    "name": "cast_spell",
                    "response": {
                        "hits": [{"target": "goblin 'Grib'", "damage": 12}],
                        "log": 'line 1\nline 2\t"quoted"\\',
                        "big": 9007199254740991,
                        "negative": -0.125,
                    },
                }
            }
        ],
    },
    {"role": "model", "parts": [{"text": "The goblin is toast. 🍞"}]},
]


@pytest.mark.milestone("4.2")
def test_text_parts_round_trip_exactly(story: Story, databases: Databases):
    kind = LABELS[databases.kind]
    with _api(story.a) as a:
        for prompt in [*TRICKY_PROMPTS, LONG_PROMPT]:
            label = (
                shorten(prompt, 40) if prompt is not LONG_PROMPT else "an 8,000-character prompt"
            )
            tid, sent = turn(a, prompt, None)
            got = history(a, tid)
            expect(
                bool(got) and got[0] == sent[0],
                f"the text of {label!r} changed on its way through {kind}",
                expected=shorten(sent[0], 300),
                actual=shorten(got[0] if got else "no messages", 300),
            )
            stored = parts_of(thread_rows(story.url, tid))
            expect(
                bool(stored) and stored[0] == sent[0]["parts"],
                f"the parts column does not hold {label!r} exactly ({kind}): store the parts "
                "as JSON (a JSON column, or json.dumps) in a utf8mb4 / UTF-8 database",
                expected=shorten(sent[0]["parts"], 300),
                actual=shorten(stored[0] if stored else "no rows", 300),
            )
            if prompt is LONG_PROMPT:
                _, asked = turn(a, "what was my first message?", tid)
                answer = FIRST_RE.search(model_text(asked))
                expect(
                    answer is not None and answer.group(1) == LONG_PROMPT,
                    "the assistant's quote of an 8,000-character first message is not exact: "
                    "is the parts column too short (VARCHAR(255))? Use a JSON or TEXT column",
                    expected=f"the {len(LONG_PROMPT)}-character prompt",
                    actual=f"{len(answer.group(1)) if answer else 0} characters",
                )


@pytest.mark.milestone("4.2")
def test_tool_parts_round_trip_exactly(story: Story, databases: Databases):
    kind = LABELS[databases.kind]
    with _api(story.a) as a:
        tid, dice = turn(a, "roll 3d8-2", None)
        explain_history(history(a, tid), dice, [], f"GET /history of a dice roll on {kind}")
        hand = str(uuid.uuid4())
        insert_by_hand(story.url, hand, NESTED_TURN)
        got = history(a, hand)
        for want_message, got_message in zip(NESTED_TURN, got, strict=False):
            expect(
                got_message == want_message,
                f"a message with nested tool arguments (written to the table by the grader) "
                f"came back changed from {kind}: load the parts column as JSON and return it "
                "as it is",
                expected=shorten(want_message, 400),
                actual=shorten(got_message, 400),
            )
        explain_history(got, NESTED_TURN, [], "GET /history of rows the grader inserted")


# --- 4.3 one connection pool per process --------------------------------------------------------

SEQUENTIAL_REQUESTS = 150
CONCURRENT_REQUESTS = 150
CONCURRENCY = 8
# A pool lends at most pool_size + max_overflow connections (5 + 10 by default); a little more
# room than that, so that any sensible configuration passes and a leak does not.
POOL_BOUND = 20
# During requests sent one at a time, a pool reuses one connection; a few more are tolerated
# (a pre-ping replacement, a second engine for migrations). One per request is the bug.
NEW_CONNECTIONS_BOUND = 10
SQLITE_SEQUENTIAL_BOUND = 4


class Sampler(threading.Thread):
    """Polls the database's view of the backend's connections while requests run."""

    def __init__(self, databases: Databases, url: str, backend: Backend) -> None:
        super().__init__(daemon=True)
        self.databases, self.url, self.backend = databases, url, backend
        self.kind = databases.kind
        self.peak = 0
        self.ids: set[str] = set()
        self.running = True
        self.error: str | None = None

    def sample(self, conn: Any) -> None:
        if self.kind == "sqlite":
            self.peak = max(
                self.peak, connection_count(self.databases, self.url, self.backend) or 0
            )
            return
        if self.kind == "postgres":
            query = (
                "SELECT pid, backend_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            query = (
                "SELECT id, 0 FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        rows = conn.execute(text(query)).all()
        self.peak = max(self.peak, len(rows))
        self.ids |= {f"{a}@{b}" for a, b in rows}

    def run(self) -> None:
        engine = None if self.kind == "sqlite" else _engine(self.url)
        try:
            conn = engine.connect() if engine is not None else None
            try:
                while self.running:
                    self.sample(conn)
                    if conn is not None:
                        conn.rollback()  # a fresh snapshot of the activity views next time
                    time.sleep(0.01)
            finally:
                if conn is not None:
                    conn.close()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {shorten(str(exc), 200)}"
        finally:
            if engine is not None:
                engine.dispose()

    def stop(self) -> None:
        self.running = False
        self.join(timeout=10)


@pytest.mark.milestone("4.3")
def test_one_connection_pool_per_process(spawn: Any, databases: Databases):
    url = databases.fresh_url()
    (backend,) = spawn(url)
    kind = databases.kind
    what = "open file handles on the database file" if kind == "sqlite" else "connections"
    if kind == "sqlite" and connection_count(databases, url, backend) is None:
        pytest.skip("this system cannot list a process's open files; the SQLite check needs it")
    with _api(backend) as api:
        tid, _ = turn(api, "roll 2d6+1", None)
        sampler = Sampler(databases, url, backend)
        sampler.start()
        started = time.monotonic()
        try:
            for n in range(SEQUENTIAL_REQUESTS):
                if n % 10 == 0:
                    turn(api, "how many messages have I sent?", tid)
                else:
                    history(api, tid)
                leaked = len(sampler.ids) if kind != "sqlite" else sampler.peak
                limit = NEW_CONNECTIONS_BOUND if kind != "sqlite" else SQLITE_SEQUENTIAL_BOUND
                if leaked > limit and n >= 20:
                    break
        finally:
            sampler.stop()
        if sampler.error:
            fail(f"the grader could not watch the database's connections: {sampler.error}")
        requests = n + 1
        if kind == "sqlite":
            expect(
                sampler.peak <= SQLITE_SEQUENTIAL_BOUND,
                f"while serving {requests} requests one at a time, the backend held up to "
                f"{sampler.peak} open handles on the SQLite file: it makes a new engine (a new "
                "pool) per request. Make one engine per process and borrow its connections",
                expected=f"at most {SQLITE_SEQUENTIAL_BOUND} (one pooled connection, reused)",
                actual=f"{sampler.peak} open file handles on {make_url(url).database}",
            )
        else:
            expect(
                len(sampler.ids) <= NEW_CONNECTIONS_BOUND,
                f"the backend opened {len(sampler.ids)} database connections for {requests} "
                "requests sent one at a time: it makes a new engine (a new pool) or a new "
                "connection per request. Make one engine per process (create_engine once) "
                "and let each request borrow a connection from its pool",
                expected=f"at most {NEW_CONNECTIONS_BOUND} connections, reused",
                actual=f"{len(sampler.ids)} different connections seen by the server",
            )
        # Then several hundred more, eight at a time: the count must stay within a pool's size.
        sampler = Sampler(databases, url, backend)
        sampler.start()
        try:

            def one(n: int) -> int:
                return api.get(f"/history/{tid}", expect_status=None).status_code

            with ThreadPoolExecutor(CONCURRENCY) as pool:
                statuses = list(pool.map(one, range(CONCURRENT_REQUESTS)))
        finally:
            sampler.stop()
        bad = [s for s in statuses if s != 200]
        expect(
            not bad,
            f"{len(bad)} of {CONCURRENT_REQUESTS} concurrent GET /history requests failed: "
            "is the pool too small (pool_timeout) or shared unsafely between threads?",
            expected="200 for every request",
            actual=f"statuses {sorted(set(bad))}",
        )
        time.sleep(0.3)
        after = connection_count(databases, url, backend) or 0
        total = SEQUENTIAL_REQUESTS + CONCURRENT_REQUESTS
        expect(
            sampler.peak <= POOL_BOUND and after <= POOL_BOUND,
            f"after {total} requests the {LABELS[kind]} server counts {max(sampler.peak, after)} "
            f"{what} of the backend: more than any pool holds. Connections leak: make one engine "
            "per process and return each connection (leave the `with` block)",
            expected=f"at most {POOL_BOUND} (pool_size + max_overflow)",
            actual=f"peak {sampler.peak}, {after} after the load "
            f"({time.monotonic() - started:.1f} s)",
        )


# --- 4.4 hostile strings ------------------------------------------------------------------------

HOSTILE_PROMPTS = [
    "'; DROP TABLE messages; --",
    "Robert'); DROP TABLE messages;--",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM messages WHERE 1=1",
    "x', 'model', '[]', CURRENT_TIMESTAMP); DELETE FROM messages; --",
    "%s %(prompt)s {prompt} {0} :prompt :thread_id ? $1 @p1",
    "back\\slash \\' \\\" \\\\ \\0 \\n \\x27",
    "NUL \x00 byte in the middle",
    "`backticks` [brackets] /* comment */ -- dash comment # hash",
    "SELECT * FROM messages; ROLLBACK; COMMIT; BEGIN;",
    "\u202eright-to-left override\u200b zero width\ufeff BOM",
]
HOSTILE_THREAD_IDS = [
    "' OR '1'='1",
    "1 OR 1=1",
    "00000000-0000-0000-0000-000000000000' OR '1'='1",
    "'; DROP TABLE messages; --",
    "%' OR thread_id LIKE '%",
    "*",
    "%",
]


@pytest.mark.milestone("4.4")
def test_hostile_prompts_are_stored_literally(story: Story, databases: Databases):
    kind = LABELS[databases.kind]
    with _api(story.a) as a:
        tid, sent = None, []
        for prompt in HOSTILE_PROMPTS:
            r = a.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": tid})
            if r.status_code == 422:
                continue  # rejecting a string outright is allowed; breaking on it is not
            expect(
                r.status_code == 200,
                f"POST /chat with the prompt {prompt!r} answered {r.status_code} on {kind}: a "
                "prompt must be stored as it is, whatever it holds. SQL assembled from strings "
                "breaks on quotes, :names, %s, backslashes or NUL (and lets a prompt run SQL of "
                "its own): pass every value as a bound parameter (text('... :name') with a "
                "dict, or insert(messages).values(...))",
                expected="200 (or 422)",
                actual=f"{r.status_code}: {shorten(r.text, 300)}",
            )
            tid, messages = turn_from(r, prompt)
            sent += messages
        expect(tid is not None, "every hostile prompt was rejected with 422; store them instead")
        got = history(a, tid)
        for want_message in [m for m in sent if m["role"] == "user"]:
            expect(
                want_message in got,
                f"a hostile prompt did not come back literally from {kind}: bind it as a "
                "parameter, never escape or edit it yourself",
                expected=shorten(want_message, 300),
                actual=shorten([m for m in got if m["role"] == "user"], 600),
            )
        explain_history(got, sent, [], "GET /history of the thread of hostile prompts")
        story_ok = story.thread_id is None or history(a, story.thread_id) == story.messages
        expect(
            story_ok,
            "after the hostile prompts an older thread changed: a prompt ran SQL of its own",
            expected=f"{len(story.messages)} messages, unchanged",
            actual=f"{len(history(a, story.thread_id or ''))} messages",
        )


def turn_from(r: Any, prompt: str) -> tuple[str, list[dict[str, Any]]]:
    body = r.json()
    messages = body.get("messages") or []
    user = {"role": "user", "parts": [{"text": prompt}]}
    if not messages or messages[0] != user:
        messages = [user, *messages]
    return str(body["thread_id"]), messages


@pytest.mark.milestone("4.4")
def test_hostile_thread_ids_are_rejected(story: Story):
    with _api(story.a) as a:
        before = table_rows(story.url)
        for bad in HOSTILE_THREAD_IDS:
            for method in ("GET", "DELETE"):
                r = a.request(method, f"/history/{bad}", expect_status=None)
                expect(
                    r.status_code in (404, 405, 422),
                    f"{method} /history/{bad} answered {r.status_code}: a thread id that is not "
                    "a UUID must be rejected with 422 (declare it as UUID) and never reach SQL",
                    expected="422",
                    actual=f"{r.status_code}: {shorten(r.text, 300)}",
                )
            r = a.post("/chat", expect_status=None, json={"prompt": "hi", "thread_id": bad})
            expect(
                r.status_code == 422,
                f"POST /chat with thread_id {bad!r} answered {r.status_code}, not 422",
                expected="422",
                actual=f"{r.status_code}: {shorten(r.text, 300)}",
            )
        after = table_rows(story.url)
        expect(
            len(after) == len(before),
            "requests with hostile thread ids changed the messages table",
            expected=f"{len(before)} rows",
            actual=f"{len(after)} rows",
        )


@pytest.mark.milestone("4.4")
def test_the_tables_are_intact_afterwards(story: Story, databases: Databases):
    engine = _engine(story.url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            expect(
                "messages" in tables,
                "the messages table is gone after the hostile strings: a prompt ran its own SQL",
                expected="a table named messages",
                actual=sorted(tables),
            )
            count = conn.execute(select(text("count(*)")).select_from(text("messages"))).scalar()
    finally:
        engine.dispose()
    expect(bool(count), "the messages table is empty after the checks stored dozens of turns")
    with _api(story.b) as b:
        body = b.json("GET", "/health")
        expect(body == {"status": "ok"}, "the backend stopped answering after hostile input")
        tid, _ = turn(b, "still working?", None)
        expect(bool(thread_rows(story.url, tid)), "a turn after the hostile strings was not stored")
