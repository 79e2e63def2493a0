"""Chapter 4 milestones: chapter 3's guarantees on SQLite, Postgres and MySQL through SQLAlchemy;
JSON parts that round-trip exactly; one connection pool per process; hostile strings stored
literally.

`grader check 4 --db postgres|mysql` runs the same checks against a throwaway server. The checks
read the database themselves (grader.toolkit.dbview), whatever types the learner's table uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from grader.databases import Databases
from grader.toolkit.causes import in_words, is_sql_syntax
from grader.toolkit.chat import ChatApi
from grader.toolkit.conversation import Conversation, expect_remembers, user_texts
from grader.toolkit.dbview import DbView, explain_rows
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.explain import explain_history
from grader.toolkit.milestone import milestone
from grader.toolkit.opens import OpenCounter
from grader.toolkit.preload import in_background
from grader.toolkit.procs import Backend

LABELS = {"sqlite": "SQLite", "postgres": "Postgres", "mysql": "MySQL/MariaDB"}
FIRST_PROMPT = "Hello, game master! I am Ysolde of Saltmere 🐉 — «first» message."

# The page checks need Streamlit (a second to import): import it while the backend checks run.
in_background("grader.toolkit.page", "4.1")


@dataclass(frozen=True)
class Pair:
    """Two backends on one fresh database of the kind `--db` chose."""

    url: str
    a: Backend
    b: Backend
    kind: str

    @property
    def db(self) -> DbView:
        return DbView(self.url, backend_dir=self.a.workdir)

    @property
    def label(self) -> str:
        return LABELS[self.kind]


@pytest.fixture(scope="module")
def pair(spawn: Any, databases: Databases) -> Pair:
    url = databases.fresh_url()
    a, b = spawn(url, count=2)
    return Pair(url, a, b, databases.kind)


# --- 4.1 chapter 3's history holds on this database --------------------------------------------


@milestone("4.1")
def turns_are_rows_in_the_database(pair: Pair) -> Conversation:
    """Each message of two threads is a row of `messages` in the database DATABASE_URL names."""
    with ChatApi(pair.a) as a:
        first = a.turn(FIRST_PROMPT)
        other = a.turn("This thread belongs to somebody else.")
        rows = pair.db.thread(first.thread_id)
        if not rows and pair.db.rows():
            fail(
                f"POST /chat stored rows, but not under the thread id it answered ({pair.label})",
                expected=f"rows with thread_id {first.thread_id}",
                actual=shorten([str(r.stored_thread_id) for r in pair.db.rows()][:5]),
            )
        written = Conversation(first.thread_id, first.messages).plus(
            a.turn("roll 2d6+1", first.thread_id).messages
        )
        explain_rows(pair.db.thread(first.thread_id), written.messages, "thread A")
        explain_rows(pair.db.thread(other.thread_id), other.messages, "thread B")
        where = f"GET /history of thread A on {pair.label}"
        explain_history(a.history(first.thread_id), written.messages, where, other.messages)
        explain_history(a.history(other.thread_id), other.messages, where, written.messages)
    return written


@milestone("4.1", after=turns_are_rows_in_the_database)
def two_backends_serve_one_conversation(written: Conversation, pair: Pair) -> Conversation:
    """The second backend sees the first one's turns at once, and its assistant sees them too."""
    with ChatApi(pair.b) as b, ChatApi(pair.a) as a:
        explain_history(
            b.history(written.thread_id),
            written.messages,
            f"GET /history on the second backend (port {pair.b.port})",
            lost="the second backend does not see the turns the first one stored: every "
            "request must read the thread from the database",
        )
        longer = expect_remembers(b, written, "on the second backend")
        explain_history(
            a.history(written.thread_id), longer.messages, "GET /history on the first backend"
        )
    return longer


@milestone("4.1", after=two_backends_serve_one_conversation)
def a_restarted_backend_keeps_the_history(written: Conversation, pair: Pair) -> Conversation:
    """After a restart the thread is all there, and the assistant still sees all of it."""
    pair.a.restart()
    with ChatApi(pair.a) as a:
        explain_history(
            a.history(written.thread_id), written.messages, "GET /history after a restart"
        )
        return expect_remembers(a, written, "after a restart")


@milestone("4.1", after=a_restarted_backend_keeps_the_history)
def a_refreshed_page_shows_the_whole_history(
    written: Conversation, target: Path, pair: Pair
) -> None:
    """A new page session on ?thread_id=… shows the whole thread."""
    from grader.toolkit.page import Page, expect_shows

    expect_shows(
        Page(target, pair.b.url, {"thread_id": written.thread_id}),
        written.messages,
        "a fresh page opened with ?thread_id=… does not show the whole thread",
    )


@milestone("4.1", after=a_restarted_backend_keeps_the_history)
def clearing_one_thread_leaves_the_others(written: Conversation, pair: Pair) -> None:
    """Clearing a thread on one backend empties it everywhere, rows included; others stay."""
    with ChatApi(pair.a) as a, ChatApi(pair.b) as b:
        gone = a.turn("This thread will be cleared.")
        kept = b.turn("This thread must survive the clear.")
        a.clear(gone.thread_id)
        explain_history(
            b.history(gone.thread_id), [], "GET /history of a cleared thread on the other backend"
        )
        expect(
            not pair.db.thread(gone.thread_id),
            "DELETE /history/A answered 204, but thread A's rows are still in the messages "
            "table: did the transaction commit?",
            expected="0 rows",
            actual=f"{len(pair.db.thread(gone.thread_id))} rows",
        )
        where = "GET /history of thread B after clearing A"
        explain_history(a.history(kept.thread_id), kept.messages, where, gone.messages)
        where = "GET /history of an older thread after clearing A"
        explain_history(a.history(written.thread_id), written.messages, where, gone.messages)


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


@milestone("4.2")
def text_parts_round_trip_exactly(pair: Pair) -> None:
    """Unicode, emoji, quotes, JSON-looking text and 8,000 characters come back unchanged."""
    with ChatApi(pair.a) as a:
        for prompt in [*TRICKY_PROMPTS, LONG_PROMPT]:
            label = (
                shorten(prompt, 40) if prompt is not LONG_PROMPT else "an 8,000-character prompt"
            )
            sent = a.turn(prompt)
            got = a.history(sent.thread_id)
            expect(
                bool(got) and got[0] == sent.messages[0],
                f"the text of {label!r} changed on its way through {pair.label}",
                expected=shorten(sent.messages[0], 300),
                actual=shorten(got[0] if got else "no messages", 300),
            )
            stored = [r.message()["parts"] for r in pair.db.thread(sent.thread_id)]
            expect(
                bool(stored) and stored[0] == sent.messages[0]["parts"],
                f"the parts column does not hold {label!r} exactly ({pair.label}): store the "
                "parts as JSON (a JSON column, or json.dumps) in a utf8mb4 / UTF-8 database",
                expected=shorten(sent.messages[0]["parts"], 300),
                actual=shorten(stored[0] if stored else "no rows", 300),
            )
        quoted, _ = a.ask_first_message(sent.thread_id)
        expect(
            quoted == LONG_PROMPT,
            "the assistant's quote of an 8,000-character first message is not exact: is the "
            "parts column too short (VARCHAR(255))? Use a JSON or TEXT column",
            expected=f"the {len(LONG_PROMPT)}-character prompt",
            actual=f"{len(quoted or '')} characters",
        )


@milestone("4.2")
def tool_parts_round_trip_exactly(pair: Pair) -> None:
    """A dice roll, and rows with nested tool arguments written by hand, come back unchanged."""
    with ChatApi(pair.a) as a:
        dice = a.turn("roll 3d8-2")
        explain_history(
            a.history(dice.thread_id), dice.messages, f"GET /history of a dice roll ({pair.label})"
        )
        hand = str(uuid.uuid4())
        pair.db.insert(hand, NESTED_TURN)
        got = a.history(hand)
        for want, came in zip(NESTED_TURN, got, strict=False):
            expect(
                came == want,
                "a message with nested tool arguments (written to the table by the grader) came "
                f"back changed from {pair.label}: load the parts column as JSON and return it as "
                "it is",
                expected=shorten(want, 400),
                actual=shorten(came, 400),
            )
        explain_history(got, NESTED_TURN, "GET /history of rows the grader inserted")


# --- 4.3 one connection pool per process --------------------------------------------------------

SEQUENTIAL_REQUESTS = 60
LONG_THREAD = [
    {"role": role, "parts": [{"text": f"{role} message {n} of a long thread"}]}
    for n in range(150)
    for role in ("user", "model")
]
CONCURRENT_REQUESTS = 200
# As many at once as the backend has worker threads (40, FastAPI's default), more than any
# default pool lends (5 + 10): an engine per thread shows as one connection per worker thread.
CONCURRENCY = 40
# A pool lends at most pool_size + max_overflow connections (5 + 10 by default); a little more
# room than that, so that any sensible configuration passes and a leak does not.
POOL_BOUND = 20
# Requests sent one at a time reuse one pooled connection; a few more are tolerated (a pre-ping
# replacement, a second engine for start-up work). One per request is the bug.
SEQUENTIAL_BOUND = 6


class Sampler(threading.Thread):
    """Polls the database's view of the backend's connections while requests run."""

    def __init__(self, databases: Databases, url: str, backend: Backend) -> None:
        super().__init__(daemon=True)
        self.databases, self.url, self.backend = databases, url, backend
        self.peak = 0
        self.ids: set[str] = set()
        self.running = True
        self.error: str | None = None

    def _sample(self, conn: Any) -> None:
        if conn is None:  # SQLite: the backend's open handles on the file
            pid = self.backend.proc.pid if self.backend.proc else None
            count = self.databases.connection_count(self.url, backend_pid=pid) or 0
            self.peak = max(self.peak, count)
            return
        if self.databases.kind == "postgres":
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
        server = self.databases.kind != "sqlite"
        engine = create_engine(self.url, poolclass=NullPool) if server else None
        try:
            conn = engine.connect() if engine is not None else None
            try:
                while self.running:
                    self._sample(conn)
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

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.join(timeout=10)
        if self.error:
            fail(f"the grader could not watch the database's connections: {self.error}")


PER_REQUEST = (
    "it makes a new engine (a new pool) or a new connection per request. Make one engine per "
    "process (create_engine once) and let each request borrow a connection from its pool"
)


def sequential_requests(api: ChatApi, thread_id: str) -> None:
    for n in range(SEQUENTIAL_REQUESTS):
        if n % 10 == 0:
            api.ask_count(thread_id)
        else:
            api.history(thread_id)


@milestone("4.3")
def one_connection_pool_per_process(spawn: Any, databases: Databases) -> None:
    """Requests one at a time reuse a pooled connection; many at once stay within one pool."""
    url = databases.fresh_url()
    (backend,) = spawn(url)
    label = LABELS[databases.kind]
    with ChatApi(backend) as api:
        thread_id = api.turn("roll 2d6+1").thread_id
        if databases.kind == "sqlite":
            path = Path(make_url(url).database or "")
            if not OpenCounter.available():
                pytest.skip("this system has no inotify; the SQLite pool check needs it")
            with OpenCounter(path) as opens:
                sequential_requests(api, thread_id)
                opened = opens.count()
            expect(
                opened <= SEQUENTIAL_BOUND,
                f"while serving {SEQUENTIAL_REQUESTS} requests one at a time the backend made "
                f"{opened} connections to the SQLite file: {PER_REQUEST}",
                expected=f"at most {SEQUENTIAL_BOUND} connections (one pooled connection, reused)",
                actual=f"{opened} connections opened {path} (or its write-ahead log)",
            )
        else:
            with Sampler(databases, url, backend) as sampler:
                sequential_requests(api, thread_id)
            expect(
                len(sampler.ids) <= SEQUENTIAL_BOUND,
                f"the backend opened {len(sampler.ids)} database connections for "
                f"{SEQUENTIAL_REQUESTS} requests sent one at a time: {PER_REQUEST}",
                expected=f"at most {SEQUENTIAL_BOUND} connections, reused",
                actual=f"{len(sampler.ids)} different connections seen by the server",
            )

        # Half of the requests read a long thread (written by the grader), so that each keeps
        # its worker thread and its connection for a while and many are in flight at once: an
        # engine per thread then shows as many connections, however fast the machine is.
        long_thread = str(uuid.uuid4())
        DbView(url, backend_dir=backend.workdir).insert(long_thread, LONG_THREAD)

        def one(n: int) -> str:
            # The other half are turns: a turn writes, and writers wait for each other.
            if n % 2:
                body = {"prompt": "how many messages have I sent?", "thread_id": None}
                response = api.post("/chat", expect_status=None, json=body)
            else:
                response = api.get(f"/history/{long_thread}", expect_status=None)
            if response.status_code == 503 and response.headers.get("retry-after"):
                return "shed"  # a pool that waited its pool_timeout on a busy machine: allowed
            return str(response.status_code)

        with Sampler(databases, url, backend) as sampler, ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(one, range(CONCURRENT_REQUESTS)))
        bad = [o for o in outcomes if o not in ("200", "shed")]
        expect(
            not bad,
            f"{len(bad)} of {CONCURRENT_REQUESTS} concurrent requests failed: is the pool "
            "shared unsafely between threads?"
            + (f" The backend raised {line}" if (line := api.last_cause()) else ""),
            expected="200 for every request (or a 503 with Retry-After when the pool is busy)",
            actual=f"statuses {sorted(set(bad))}",
        )
        what = "open handles on the database file" if databases.kind == "sqlite" else "connections"
        expect(
            sampler.peak <= POOL_BOUND,
            f"while {CONCURRENCY} requests ran at once the {label} server counted "
            f"{sampler.peak} {what} of the backend: more than one pool holds. An engine per "
            "request or per thread? Make one engine per process and return each connection "
            "(leave the `with` block)",
            expected=f"at most {POOL_BOUND} (pool_size + max_overflow)",
            actual=f"peak {sampler.peak}",
        )
        shed = outcomes.count("shed")
        expect(
            shed <= CONCURRENT_REQUESTS // 4,
            f"{shed} of {CONCURRENT_REQUESTS} concurrent requests got 503: the pool lends too "
            "few connections or gives up waiting too soon (pool_size, max_overflow, "
            "pool_timeout)",
            expected=f"at most {CONCURRENT_REQUESTS // 4} requests turned away",
            actual=f"{shed} answered 503",
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
STRING_SQL = (
    "SQL assembled from strings breaks on quotes, :names, %s, backslashes or NUL (and lets a "
    "prompt run SQL of its own): pass every value as a bound parameter (text('... :name') with "
    "a dict, or insert(messages).values(...))"
)


def hostile_prompt_failed(api: ChatApi, prompt: str, status: int, label: str) -> str:
    """Why a hostile prompt broke the backend: the database's own reason when the grader knows
    it and it is not about SQL syntax (a JSONB column refusing NUL, say), else the classic one."""
    why = f"POST /chat with the prompt {prompt!r} answered {status} on {label}"
    line = api.last_exception()
    if line and in_words(line) and not is_sql_syntax(line):
        return f"{why}: the backend raised {line} — {in_words(line)}"
    raised = f" (the backend raised {line})" if line else ""
    return f"{why}: a prompt must be stored as it is, whatever it holds. {STRING_SQL}{raised}"


@milestone("4.4", after=a_restarted_backend_keeps_the_history)
def hostile_prompts_are_stored_literally(written: Conversation, pair: Pair) -> None:
    """Prompts built to break SQL are stored and answered exactly as sent; nothing else changes."""
    with ChatApi(pair.a) as a:
        thread_id, sent = None, []
        for prompt in HOSTILE_PROMPTS:
            r = a.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": thread_id})
            if r.status_code == 422:
                continue  # rejecting a string outright is allowed; breaking on it is not
            if r.status_code != 200:
                fail(
                    hostile_prompt_failed(a, prompt, r.status_code, pair.label),
                    expected="200 (or 422)",
                    actual=f"{r.status_code}: {shorten(r.text, 300)}",
                )
            answered = a.turn_from(r, prompt, thread_id)
            thread_id, sent = answered.thread_id, [*sent, *answered.messages]
        expect(thread_id is not None, "every hostile prompt was rejected with 422; store them")
        got = a.history(thread_id)
        stored = user_texts(got)
        for prompt in HOSTILE_PROMPTS:
            expect(
                prompt in stored or prompt not in user_texts(sent),
                f"a hostile prompt did not come back literally from {pair.label}: bind it as a "
                "parameter, never escape or edit it yourself",
                expected=shorten(prompt, 300),
                actual=shorten(stored, 600),
            )
        explain_history(got, sent, "GET /history of the thread of hostile prompts")
        explain_history(
            a.history(written.thread_id),
            written.messages,
            "GET /history of an older thread after the hostile prompts (a prompt ran SQL?)",
        )


@milestone("4.4")
def hostile_thread_ids_are_rejected(pair: Pair) -> None:
    """Thread ids built to break SQL get 422 on every route and never reach the database."""
    with ChatApi(pair.a) as a:
        before = len(pair.db.rows())
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
        after = len(pair.db.rows())
        expect(
            after == before,
            "requests with hostile thread ids changed the messages table",
            expected=f"{before} rows",
            actual=f"{after} rows",
        )


@milestone("4.4")
def the_tables_are_intact_afterwards(pair: Pair) -> None:
    """After all of it the table is there, full, and the other backend still stores turns."""
    expect(
        "messages" in pair.db.tables(),
        "the messages table is gone after the hostile strings: a prompt ran its own SQL",
        expected="a table named messages",
        actual=sorted(pair.db.tables()),
    )
    expect(
        bool(pair.db.rows()), "the messages table is empty after the checks stored dozens of turns"
    )
    with ChatApi(pair.b) as b:
        still = b.turn("still working?")
        expect(
            bool(pair.db.thread(still.thread_id)), "a turn after the hostile strings was not stored"
        )
