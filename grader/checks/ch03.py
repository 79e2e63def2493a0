"""Chapter 3 milestones: the history lives in SQLite, so restarts, refreshes and a second backend
all see the same conversation; clearing one thread; the telemetry toggle; bad input.

Black box throughout: the checks talk HTTP to real backend processes, open the SQLite file
themselves, and drive the page with Streamlit's AppTest. They hold for any correct solution,
whatever its SQL, module layout or extra columns.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from grader.toolkit.chat import TODO_IN_TEXT, ChatApi, is_uuid, user_message
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.procs import Backend, start_all

if TYPE_CHECKING:
    from grader.toolkit.page import Page

# The page checks import grader.toolkit.page (and so Streamlit, a second of startup) only when
# they run: a learner still working on the backend does not pay for it on every `grader check 3`.

TOOL = "roll_dice"
FIRST_RE = re.compile(r'Your first message was: "(.*)"', re.DOTALL)
COUNT_RE = re.compile(r"You have sent (\d+) messages?")
SQL_SYNTAX_RE = re.compile(r"syntax error|unrecognized token|unterminated|incomplete input")
REQUIRED_COLUMNS = ("id", "thread_id", "role", "parts", "created_at")


# --- talking to the backend ----------------------------------------------------------------


def _same_thread(value: Any, thread_id: str) -> bool:
    """Equal as UUIDs, so a solution may store `str(uuid)` or `uuid.hex`."""
    try:
        return uuid.UUID(str(value)) == uuid.UUID(thread_id)
    except ValueError:
        return False


def _check_messages(messages: Any, what: str) -> list[dict[str, Any]]:
    ok = isinstance(messages, list) and all(
        isinstance(m, dict)
        and m.get("role") in ("user", "model", "tool")
        and isinstance(m.get("parts"), list)
        and all(isinstance(p, dict) and len(p) == 1 for p in m["parts"])
        for m in messages
    )
    expect(
        ok,
        f"{what}: `messages` must be a list of {{role, parts}} messages (SPEC §2)",
        expected='[{"role": "user", "parts": [{"text": "..."}]}, ...]',
        actual=shorten(messages),
    )
    return messages


def _json_of(r: Any, what: str) -> Any:
    try:
        return r.json()
    except ValueError:
        fail(f"{what} did not answer JSON", expected="a JSON body", actual=shorten(r.text))


def turn(api: ChatApi, prompt: str, thread_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    """One POST /chat. Returns the thread id and the turn's messages, user message first.

    SPEC §2 says the answer lists "the messages this turn added"; a solution that leaves the
    user's own message out of that list is accepted, and the message is put back here.
    """
    r = api.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": thread_id})
    if r.status_code != 200 and SQL_SYNTAX_RE.search(r.text):
        fail(
            "POST /chat broke the SQL: a quote in a message (the prompt or the assistant's "
            "reply) was formatted into the SQL string; pass values as ? parameters instead",
            expected="status 200",
            actual=f"status {r.status_code}: {shorten(r.text)}",
        )
    if r.status_code != 200:
        api.unexpected(r, 200)  # names a TODO, or the exception a 5xx left in the log
    body = _json_of(r, "POST /chat")
    expect(
        isinstance(body, dict) and is_uuid(body.get("thread_id")),
        "POST /chat must answer {thread_id, messages} with the thread's UUID",
        expected={"thread_id": thread_id or "a new UUID", "messages": ["..."]},
        actual=shorten(body),
    )
    messages = _check_messages(body.get("messages"), "POST /chat")
    if thread_id is not None:
        expect(
            _same_thread(body["thread_id"], thread_id),
            "POST /chat with a thread_id answered for another thread",
            expected=thread_id,
            actual=body["thread_id"],
        )
    if not messages or messages[0] != user_message(prompt):
        messages = [user_message(prompt), *messages]
    expect(
        any(m["role"] == "model" for m in messages),
        "POST /chat answered without the assistant's messages: pass the history to respond()",
        actual=shorten(body),
    )
    return str(body["thread_id"]), messages


def history(api: ChatApi, thread_id: str, who: str = "") -> list[dict[str, Any]]:
    """GET /history/{thread_id}: the thread's messages (an unknown thread may also be 404)."""
    r = api.get(f"/history/{thread_id}", expect_status=None)
    if r.status_code == 404:
        return []
    if r.status_code != 200:
        api.unexpected(r, 200)
    try:
        body = r.json()
    except ValueError:
        fail(f"GET /history{who} did not answer JSON", actual=shorten(r.text))
    where = f"GET /history{who}"
    expect(
        isinstance(body, dict) and "messages" in body,
        f"{where} must answer {{thread_id, messages}}",
        expected={"thread_id": thread_id, "messages": ["..."]},
        actual=shorten(body),
    )
    return _check_messages(body["messages"], where)


def model_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(
        p["text"] for m in messages if m["role"] == "model" for p in m["parts"] if "text" in p
    )


def expect_first_message(api: ChatApi, thread_id: str, first: str, rationale: str) -> list[dict]:
    """Ask "what was my first message?" and expect `first` quoted; returns the turn's messages.

    The assistant knows only what the turn passed to respond(), so its quote proves the turn
    loaded the whole thread from the database (not from memory, not a part of it).
    """
    _, asked = turn(api, "what was my first message?", thread_id)
    answer = FIRST_RE.search(model_text(asked))
    expect(
        answer is not None and answer.group(1) == first,
        rationale,
        expected=f'Your first message was: "{first}"',
        actual=model_text(asked),
    )
    return asked


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [p["text"] for m in messages if m["role"] == "user" for p in m["parts"] if "text" in p]


def _brief(m: dict[str, Any]) -> str:
    parts = []
    for p in m.get("parts", []):
        if "text" in p:
            parts.append(" ".join(str(p["text"]).split()))
        elif "function_call" in p:
            parts.append(f"[function_call {json.dumps(p['function_call'])}]")
        elif "function_response" in p:
            parts.append(f"[function_response {json.dumps(p['function_response'])}]")
        else:
            parts.append(f"[{shorten(p, 70)}]")
    return shorten(f"{m.get('role')}: {' '.join(parts)}", 90)


def listing(messages: list[dict[str, Any]]) -> str:
    """One short line per message, numbered: readable in the report, unlike raw JSON."""
    if not messages:
        return "(no messages)"
    return "\n".join(f"{n}. {_brief(m)}" for n, m in enumerate(messages, 1))


def explain_history(
    got: list[dict], want: list[dict], others: list[dict], where: str, lost: str | None = None
) -> None:
    """Fail with the most specific reason why `got` is not the thread's history `want`.

    `lost` is the rationale for a `got` that stops short of `want` (its last turns missing):
    what that means depends on what happened just before, so the caller says it.
    """
    if got == want:
        return
    if lost and len(got) < len(want) and got == want[: len(got)]:
        fail(lost, expected=f"{len(want)} messages", actual=f"{len(got)} messages")
    details = {
        "expected": listing(want),
        "actual": listing(got),
    }
    foreign = [m for m in got if m not in want and m in others]
    if foreign:
        fail(
            f"{where} returned another thread's messages: history is not filtered by thread_id",
            **details,
        )
    if got == list(reversed(want)):
        fail(f"{where}: messages come newest first; order them by id, oldest first", **details)
    if not got and want:
        fail(f"{where} is empty although the thread has {len(want)} messages", **details)
    if sorted(map(json.dumps, got)) == sorted(map(json.dumps, want)):
        fail(
            f"{where}: the thread's messages are all there but out of order; ORDER BY id", **details
        )
    if len(got) < len(want) and all(m in want for m in got):
        fail(
            f"{where} misses {len(want) - len(got)} of the thread's messages: a stale copy kept "
            "in memory, or a write that was not committed?",
            **details,
        )
    if len(got) > len(want) and all(m in got for m in want):
        fail(f"{where} holds messages that were never sent (duplicates?)", **details)
    fail(f"{where} does not return the thread's messages as they were sent", **details)


# --- reading the SQLite file ourselves ---------------------------------------------------------


def db_path(database_url: str) -> Path:
    return Path(database_url.removeprefix("sqlite:///"))


def open_db(path: Path) -> sqlite3.Connection:
    expect(
        path.is_file(),
        "there is no database file where DATABASE_URL points: read DATABASE_URL from the "
        "environment (sqlite:///path) and open that file",
        expected=str(path),
        actual="no such file",
    )
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def db_rows(path: Path) -> list[sqlite3.Row]:
    conn = open_db(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        expect(
            "messages" in tables,
            "the database file has no `messages` table: create it when the backend starts "
            "(CREATE TABLE IF NOT EXISTS messages ...)",
            expected="a table named messages",
            actual=f"tables: {sorted(tables)}",
        )
        return conn.execute("SELECT * FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


def thread_rows(rows: list[sqlite3.Row], thread_id: str) -> list[sqlite3.Row]:
    return [r for r in rows if _same_thread(r["thread_id"], thread_id)]


def row_message(row: sqlite3.Row) -> dict[str, Any]:
    raw = row["parts"]
    try:
        parts = json.loads(raw)
    except (TypeError, ValueError):
        fail(
            "the parts column must hold the message's parts as JSON text (json.dumps(parts))",
            expected='[{"text": "..."}]',
            actual=shorten(repr(raw), 200),
        )
    if isinstance(parts, dict) and "parts" in parts:
        fail(
            "the parts column holds the whole message; store only its parts array there "
            "(the role has its own column)",
            expected='[{"text": "..."}]',
            actual=shorten(raw, 200),
        )
    expect(
        isinstance(parts, list),
        "the parts column must hold a JSON array of parts",
        expected='[{"text": "..."}]',
        actual=shorten(raw, 200),
    )
    return {"role": row["role"], "parts": parts}


def explain_rows(rows: list[sqlite3.Row], want: list[dict], thread_id: str) -> None:
    got = [row_message(r) for r in rows]
    where = f"rows of thread {thread_id[:8]}… in the messages table"
    if not got:
        fail(
            "POST /chat answered, but the thread has no rows in the messages table: insert "
            "one row per message and commit the transaction",
            expected=f"{len(want)} rows",
            actual="0 rows",
        )
    if got == want:
        return
    details = {
        "expected": listing(want),
        "actual": listing(got),
    }
    if len(got) != len(want):
        fail(
            f"expected one row per message: the thread has {len(want)} messages but "
            f"{len(got)} rows",
            **details,
        )
    if sorted(map(json.dumps, got)) == sorted(map(json.dumps, want)):
        fail(
            f"the {where} are out of order: insert the user's message first, then the "
            "assistant's messages in the order respond() returned them",
            **details,
        )
    fail(f"the {where} differ from the messages POST /chat answered", **details)


# --- the page ------------------------------------------------------------------------------


def chat_messages(page: Page) -> list[tuple[str, str]]:
    """`[(name, text), ...]` for every st.chat_message, top to bottom, whatever is inside."""
    return [(b.name, b.text) for b in page.bubbles]


def text_lines(texts: list[str]) -> str:
    return "\n".join(shorten(" ".join(t.split()), 100) for t in texts) or "(nothing)"


def page_listing(rendered: list[tuple[str, str]]) -> str:
    """The page's chat messages, one short numbered line each."""
    if not rendered:
        return "(no chat messages on the page)"
    return "\n".join(
        f"{n}. {name}: {shorten(' '.join(text.split()), 80)}"
        for n, (name, text) in enumerate(rendered, 1)
    )


def missing_from_page(rendered: list[tuple[str, str]], messages: list[dict]) -> str | None:
    """The first user or model text of `messages` the page does not show in order, if any.

    User texts must be in `user` chat messages; model texts in any other chat message (several
    may share one bubble). Telemetry is not looked at here.
    """
    i = 0
    for m in messages:
        if m["role"] not in ("user", "model"):
            continue
        for part in m["parts"]:
            text = part.get("text", "").strip()
            if not text:
                continue
            j = i
            while j < len(rendered) and not (
                (rendered[j][0] == "user") == (m["role"] == "user") and text in rendered[j][1]
            ):
                j += 1
            if j == len(rendered):
                return f"{m['role']}: {text}"
            i = j + 1 if m["role"] == "user" else j
    return None


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_backends(spawn: Any, databases: Any) -> list[Backend]:
    """Two backends on one database: 3.2 and 3.3 stop, kill and start them; 3.4 uses the pair.

    Booting processes is most of a check's time, so these two serve three milestones.
    """
    return spawn(databases.fresh_url(), count=2)


def _alive(backends: list[Backend]) -> list[Backend]:
    """Start again whichever of the pair an earlier, failed check left stopped."""
    down = [b for b in backends if not b.alive]
    if down:
        start_all(down)
    return backends


# --- 3.1 messages appear in messages.db --------------------------------------------------------


@pytest.mark.milestone("3.1")
def test_table_is_created_at_startup(shared_backend: Backend):
    path = db_path(shared_backend.env["DATABASE_URL"])
    conn = open_db(path)
    try:
        columns = {r["name"]: r for r in conn.execute("PRAGMA table_info(messages)")}
        expect(
            bool(columns),
            "the database file has no `messages` table after the backend started: create it "
            "at startup (CREATE TABLE IF NOT EXISTS messages ...)",
            expected=str(path),
            actual="no messages table",
        )
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        expect(
            not missing,
            f"the messages table lacks the column(s) {', '.join(missing)} (SPEC §2)",
            expected=list(REQUIRED_COLUMNS),
            actual=list(columns),
        )
        expect(
            columns["id"]["pk"] == 1 and columns["id"]["type"].upper() == "INTEGER",
            "messages.id must be the INTEGER PRIMARY KEY: the thread's order is the id order",
            expected="id INTEGER PRIMARY KEY AUTOINCREMENT",
            actual=f"id {columns['id']['type']} (pk={columns['id']['pk']})",
        )
        indexes = {}
        for index in conn.execute("PRAGMA index_list(messages)"):
            info = conn.execute(f"PRAGMA index_info({json.dumps(index['name'])})").fetchall()
            indexes[index["name"]] = [r["name"] for r in sorted(info, key=lambda r: r["seqno"])]
        # In SQLite an index on (thread_id) alone ends with the rowid, i.e. id, implicitly.
        expect(
            any(
                cols[:2] == ["thread_id", "id"] or cols == ["thread_id"]
                for cols in indexes.values()
            ),
            "the messages table has no index on (thread_id, id): reading one thread in order "
            "would scan the whole table (CREATE INDEX ... ON messages (thread_id, id))",
            expected="an index on (thread_id, id)",
            actual=indexes or "no index",
        )
    finally:
        conn.close()


@pytest.mark.milestone("3.1")
def test_each_message_is_a_row(shared_backend: Backend, api: ChatApi):
    path = db_path(shared_backend.env["DATABASE_URL"])
    before = {r["id"] for r in db_rows(path)}
    a, first = turn(api, "Hello! This is the first message of thread A.", None)
    b, other = turn(api, "tell me about the dragon", None)
    expect(
        not _same_thread(a, b),
        "two POST /chat with thread_id null got the same thread: start a new thread (uuid4) "
        "for each",
        actual=[a, b],
    )
    _, dice = turn(api, "roll 2d6+1", a)
    want_a, want_b = first + dice, other
    new = [r for r in db_rows(path) if r["id"] not in before]
    strays = [
        r for r in new if not (_same_thread(r["thread_id"], a) or _same_thread(r["thread_id"], b))
    ]
    expect(
        not strays,
        "rows were stored under a thread_id that is not the thread's id",
        expected=[a, b],
        actual=sorted({str(r["thread_id"]) for r in strays}),
    )
    explain_rows(thread_rows(new, a), want_a, a)
    explain_rows(thread_rows(new, b), want_b, b)
    empty = [dict(r) for r in new if r["created_at"] in (None, "")]
    expect(
        not empty,
        "every row needs its created_at (e.g. CURRENT_TIMESTAMP)",
        actual=shorten(empty[:1]),
    )


@pytest.mark.milestone("3.1")
def test_history_is_the_thread_oldest_first(api: ChatApi):
    a, turn1 = turn(api, "I carry a green lantern and a short sword.", None)
    b, other = turn(api, "hello from another thread", None)
    _, turn2 = turn(api, "roll 2d6+1", a)
    _, turn3 = turn(api, "what was my first message?", a)
    want = turn1 + turn2 + turn3
    explain_history(history(api, a), want, other, "GET /history for thread A")
    explain_history(history(api, b), other, want, "GET /history for thread B")
    # The assistant only knows what the turn gave it: the answer proves the whole thread went in.
    first = FIRST_RE.search(model_text(turn3))
    expect(
        first is not None and first.group(1) == user_texts(turn1)[0],
        "asked 'what was my first message?', the assistant did not quote the thread's first "
        "message: load the whole thread, oldest first, and pass it to respond()",
        expected=f'Your first message was: "{user_texts(turn1)[0]}"',
        actual=model_text(turn3),
    )
    unknown = str(uuid.uuid4())
    expect(
        history(api, unknown) == [],
        "GET /history for a thread that has no messages must answer an empty list",
        expected=[],
        actual=shorten(history(api, unknown)),
    )


@pytest.mark.milestone("3.1")
def test_hostile_strings_are_stored_literally(shared_backend: Backend, api: ChatApi):
    path = db_path(shared_backend.env["DATABASE_URL"])
    before = len(db_rows(path))
    prompts = [
        "'); DROP TABLE messages; --",
        "Robert'); DELETE FROM messages WHERE ('1'='1",
        '" OR 1=1 -- and a \\ backslash, a %s and a {braces}',
        "héllo 🐉 — ünïcödé, tabs\tand\nnewlines",
        "x" * 8000,  # the longest prompt allowed
    ]
    thread_id = None
    sent = []
    for prompt in prompts:
        r = api.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": thread_id})
        expect(
            r.status_code == 200,
            "POST /chat failed on a prompt holding quotes or SQL: pass values as ? "
            "parameters, never format them into the SQL string",
            expected=f"200 for {shorten(prompt, 60)!r}",
            actual=f"{r.status_code}: {shorten(r.text, 300)}",
        )
        thread_id, _ = turn(api, "hello again", r.json()["thread_id"])
        sent += [prompt, "hello again"]
    stored = user_texts(history(api, thread_id))
    expect(
        stored == sent,
        "prompts holding quotes, SQL or unicode were not stored literally",
        expected=[shorten(p, 60) for p in sent],
        actual=[shorten(p, 60) for p in stored],
    )
    rows = db_rows(path)
    expect(
        len(rows) > before,
        "rows disappeared from the messages table after prompts holding SQL: never build SQL "
        "by formatting the prompt into it",
        expected=f"more than {before} rows",
        actual=f"{len(rows)} rows",
    )
    in_db = user_texts([row_message(r) for r in thread_rows(rows, thread_id)])
    expect(
        in_db == sent,
        "the parts column does not hold the prompts exactly as sent",
        expected=[shorten(p, 60) for p in sent],
        actual=[shorten(p, 60) for p in in_db],
    )


# --- 3.2 a restarted backend keeps the history ------------------------------------------------


@pytest.mark.milestone("3.2")
def test_restarted_backends_keep_the_history(own_backends: list[Backend]):
    stopped, killed = own_backends
    firsts = [
        "I am Ada, and I carry a green lantern.",
        "Remember this before the crash.",
    ]
    threads, wants = [], []
    for backend, first, dice in zip(
        own_backends, firsts, ("roll 2d6+1", "roll 3d8-2"), strict=True
    ):
        api = ChatApi(backend)
        try:
            tid, t1 = turn(api, first, None)
            _, t2 = turn(api, dice, tid)
            explain_history(history(api, tid), t1 + t2, [], "GET /history before the restart")
        finally:
            api.close()
        threads.append(tid)
        wants.append(t1 + t2)

    # One stops politely (SIGTERM), the other is killed (SIGKILL, as a crash or the OOM killer
    # would: no shutdown handler runs). Both boot again in parallel.
    stopped.stop()
    killed.kill()
    start_all(own_backends)

    for backend, how, tid, first, want in zip(
        own_backends, ("restarted", "killed and started"), threads, firsts, wants, strict=True
    ):
        api = ChatApi(backend)
        try:
            got = history(api, tid)
            if not got:
                fail(
                    f"after the backend was {how}, GET /history is empty: the history was kept in "
                    "process memory, not read from the database",
                    expected=f"the {len(want)} messages sent before",
                    actual=[],
                )
            explain_history(
                got,
                want,
                [],
                f"GET /history after the backend was {how}",
                lost=f"turns the backend had answered were lost when it was {how}: commit each "
                "turn's transaction before answering",
            )
            t3 = expect_first_message(
                api,
                tid,
                first,
                f"after the backend was {how} the assistant did not see the earlier messages: "
                "each turn must load the thread from the database before calling respond()",
            )
            _, t4 = turn(api, "how many messages have I sent?", tid)
            count = COUNT_RE.search(model_text(t4))
            expect(
                count is not None and count.group(1) == "4",
                f"after the backend was {how} the assistant miscounted the user's messages: "
                "each turn must load the whole thread from the database",
                expected="You have sent 4 messages in this conversation.",
                actual=model_text(t4),
            )
            explain_history(
                history(api, tid),
                want + t3 + t4,
                [],
                f"GET /history after turns on the {how} backend",
            )
        finally:
            api.close()


# --- 3.3 refreshing the page keeps the history -------------------------------------------------


@pytest.mark.milestone("3.3")
def test_refresh_shows_the_whole_history(target: Path, own_backends: list[Backend]):
    from grader.toolkit.page import Page

    own_backend = _alive(own_backends)[0]
    at = Page(target, own_backend.url)
    first = "Good evening, game master: I open the door of the inn."
    at = at.send(first)
    tid = at.query.get("thread_id")
    expect(
        isinstance(tid, str) and is_uuid(tid),
        "after the first message the page must keep the thread id in the URL: "
        "st.query_params['thread_id'] = the thread_id POST /chat answered",
        expected="?thread_id=<uuid>",
        actual=dict(at.query),
    )
    api = ChatApi(own_backend)
    try:
        expect(
            user_texts(history(api, tid))[:1] == [first],
            "the thread id the page put in the URL is not the thread its message was stored in",
            expected=first,
            actual=user_texts(history(api, tid)),
        )
        at = at.send("roll 2d6+1")
        expect(
            _same_thread(at.query.get("thread_id"), tid),
            "the second message changed the thread id in the URL: send the URL's thread_id "
            "with every prompt",
            expected=tid,
            actual=at.query.get("thread_id"),
        )
        want = history(api, tid)
        expect(
            user_texts(want) == [first, "roll 2d6+1"],
            "the page's two messages are not both in the thread it shows",
            expected=[first, "roll 2d6+1"],
            actual=user_texts(want),
        )
    finally:
        api.close()

    own_backend.restart()
    fresh = Page(target, own_backend.url, {"thread_id": tid})
    missing = missing_from_page(chat_messages(fresh), want)
    expect(
        missing is None,
        "a new page session opened with ?thread_id=… does not show the whole conversation: on "
        "every run read the thread id from st.query_params and render GET /history/{thread_id}",
        expected=f"every message, in order; missing {shorten(missing or '', 120)!r}",
        actual=page_listing(chat_messages(fresh)),
    )

    api = ChatApi(own_backend)
    try:
        _, t3 = turn(api, "what was my first message?", tid)
    finally:
        api.close()
    fresh = fresh.rerun("re-running the page")
    missing = missing_from_page(chat_messages(fresh), want + t3)
    expect(
        missing is None,
        "the page did not show a turn another client stored in its thread: render GET "
        "/history on every run instead of keeping messages in st.session_state",
        expected=f"every message, in order; missing {shorten(missing or '', 120)!r}",
        actual=page_listing(chat_messages(fresh)),
    )


@pytest.mark.milestone("3.3")
def test_new_chat_starts_a_thread(target: Path, shared_backend: Backend, api: ChatApi):
    from grader.toolkit.page import Page

    old, t1 = turn(api, "This thread is the old chat.", None)
    at = Page(target, shared_backend.url, {"thread_id": old})
    expect(
        missing_from_page(chat_messages(at), t1) is None,
        "the page opened with ?thread_id=… does not show that thread's messages",
        expected=user_texts(t1),
        actual=page_listing(chat_messages(at)),
    )
    at = at.click("new_chat")
    expect(
        not any(name == "user" for name, _ in chat_messages(at)),
        "after clicking new_chat the page still shows the old conversation",
        expected="no messages of the old thread",
        actual=page_listing(chat_messages(at)),
    )
    at = at.send("hello from the new chat")
    new = at.query.get("thread_id")
    expect(
        is_uuid(new) and not _same_thread(new, old),
        "after new_chat the next message must go to a new thread with its own id in the URL",
        expected=f"a thread id other than {old}",
        actual=dict(at.query),
    )
    explain_history(history(api, old), t1, [], "GET /history of the old thread after new_chat")


# --- 3.4 two backends, one conversation --------------------------------------------------------


@pytest.mark.milestone("3.4")
def test_two_backends_serve_one_conversation(own_backends: list[Backend]):
    one, two = _alive(own_backends)
    apis = [ChatApi(one), ChatApi(two)]
    names = [f"{one.name} (port {one.port})", f"{two.name} (port {two.port})"]
    prompts = [
        "Hello, game master! I am Ada.",
        "roll 2d6+1",
        "tell me about the dragon",
        "how many messages have I sent?",
        "what was my first message?",
    ]
    try:
        tid, want, turns = None, [], []
        for n, prompt in enumerate(prompts):
            i = n % 2
            tid, messages = turn(apis[i], prompt, tid)
            want += messages
            turns.append(messages)
            for j in (0, 1):
                got = history(apis[j], tid)
                explain_history(
                    got,
                    want,
                    [],
                    f"GET /history on {names[j]}",
                    lost=None
                    if j == i
                    else f"{names[j]} does not see the turn {names[i]} just stored: history is "
                    "kept in process memory, not read from the database on every request",
                )
        count = COUNT_RE.search(model_text(turns[3]))
        expect(
            count is not None and count.group(1) == "4",
            f"{names[1]} miscounted the messages of a thread whose turns went to both backends: "
            "each turn must load the whole thread from the database",
            expected="You have sent 4 messages in this conversation.",
            actual=model_text(turns[3]),
        )
        answer = FIRST_RE.search(model_text(turns[4]))
        expect(
            answer is not None and answer.group(1) == prompts[0],
            f"{names[0]} did not quote the thread's first message after turns on both "
            "backends: each turn must load the whole thread from the database",
            expected=f'Your first message was: "{prompts[0]}"',
            actual=model_text(turns[4]),
        )
    finally:
        for api in apis:
            api.close()


# --- 3.5 clearing one thread leaves the others -------------------------------------------------


@pytest.mark.milestone("3.5")
def test_delete_clears_one_thread(shared_backend: Backend, api: ChatApi):
    path = db_path(shared_backend.env["DATABASE_URL"])
    a, a1 = turn(api, "Thread A, first message.", None)
    _, a2 = turn(api, "roll 2d6+1", a)
    b, b1 = turn(api, "Thread B must survive the clear.", None)
    rows_b = [dict(r) for r in thread_rows(db_rows(path), b)]

    r = api.delete(f"/history/{a}", expect_status=None)
    if TODO_IN_TEXT.search(r.text):
        fail(
            f"DELETE /history/{{thread_id}} reached {TODO_IN_TEXT.search(r.text).group(0)}, "
            "which is not done yet",
            actual=f"{r.status_code}: {shorten(r.text)}",
        )
    expect(
        r.status_code == 204,
        "DELETE /history/{thread_id} must answer 204 No Content",
        expected=204,
        actual=f"{r.status_code}: {shorten(r.text)}",
    )
    left = history(api, a)
    expect(
        left == [],
        "after DELETE /history/A, GET /history/A still returns messages",
        expected=[],
        actual=listing(left),
    )
    expect(
        history(api, b) != [],
        "DELETE /history/A also removed thread B's messages: delete WHERE thread_id = ? only",
        expected=f"thread B's {len(b1)} messages",
        actual=[],
    )
    explain_history(history(api, b), b1, a1 + a2, "GET /history for thread B after clearing A")
    rows = db_rows(path)
    expect(
        not thread_rows(rows, a),
        "DELETE /history/A answered, but thread A's rows are still in the messages table",
        expected="0 rows",
        actual=f"{len(thread_rows(rows, a))} rows",
    )
    expect(
        [dict(r) for r in thread_rows(rows, b)] == rows_b,
        "DELETE /history/A also changed thread B's rows: delete WHERE thread_id = ? only",
        expected=f"{len(rows_b)} rows of thread B, unchanged",
        actual=f"{len(thread_rows(rows, b))} rows",
    )
    again = api.delete(f"/history/{a}", expect_status=None)
    expect(
        again.status_code in (204, 404),
        "clearing a thread that is already empty must not fail",
        expected="204",
        actual=f"{again.status_code}: {shorten(again.text)}",
    )
    turn(api, "A fresh start for thread A.", a)
    expect_first_message(
        api,
        a,
        "A fresh start for thread A.",
        "after clearing thread A the assistant still saw its old messages",
    )


@pytest.mark.milestone("3.5")
def test_clear_button_clears_the_shown_thread(target: Path, shared_backend: Backend, api: ChatApi):
    from grader.toolkit.page import Page

    shown, s1 = turn(api, "This thread is on the page.", None)
    _, s2 = turn(api, "roll 2d6+1", shown)
    other, o1 = turn(api, "This thread is not on the page.", None)
    at = Page(target, shared_backend.url, {"thread_id": shown})
    expect(
        missing_from_page(chat_messages(at), s1 + s2) is None,
        "the page opened with ?thread_id=… does not show that thread's messages",
        expected=user_texts(s1 + s2),
        actual=page_listing(chat_messages(at)),
    )
    at = at.click("clear_history")
    still = [m for m in chat_messages(at) if m[0] == "user"]
    expect(
        not still,
        "after clicking clear_history the page still shows the thread's messages",
        expected="no user messages",
        actual=page_listing(chat_messages(at)),
    )
    left = history(api, shown)
    expect(
        left == [],
        "the clear_history button did not clear the thread on the backend: call "
        "DELETE /history/{thread_id} with the thread id from the URL",
        expected=[],
        actual=listing(left),
    )
    explain_history(
        history(api, other), o1, s1 + s2, "GET /history of another thread after clear_history"
    )


# --- 3.6 the telemetry toggle ------------------------------------------------------------------


@pytest.mark.milestone("3.6")
def test_telemetry_toggle(target: Path, shared_backend: Backend, api: ChatApi):
    from grader.toolkit.page import Page

    tid, t1 = turn(api, "hello there", None)
    # 1d20+30 totals 31 to 50, a number that cannot be read off the call's arguments.
    _, t2 = turn(api, "roll 1d20+30", tid)
    messages = t1 + t2
    responses = [
        p["function_response"] for m in messages for p in m["parts"] if "function_response" in p
    ]
    expect(bool(responses), "the dice roll was not recorded as a tool call", actual=messages)
    total = str(responses[0]["response"].get("total"))

    at = Page(target, shared_backend.url, {"thread_id": tid})
    at = at.toggle("show_tool_telemetry", True)
    shown = at.texts()
    missing = missing_from_page(chat_messages(at), messages)
    expect(
        missing is None,
        "with show_tool_telemetry on, the page does not show every user and model message",
        expected=f"missing {shorten(missing or '', 120)!r}",
        actual=page_listing(chat_messages(at)),
    )

    at = at.toggle("show_tool_telemetry", False)
    hidden_view = at.texts()
    missing = missing_from_page(chat_messages(at), messages)
    expect(
        missing is None,
        "with show_tool_telemetry off the page hid more than tool telemetry: user and model "
        "text must stay",
        expected=f"missing {shorten(missing or '', 120)!r}",
        actual=page_listing(chat_messages(at)),
    )
    leaks = [t for t in hidden_view if TOOL in t]
    expect(
        not leaks,
        "with show_tool_telemetry off the page still shows the tool call or response",
        expected=f"nothing mentioning {TOOL}",
        actual=text_lines(leaks),
    )
    # The response may be drawn without the tool's name: look for its total outside the texts.
    spoken = [p["text"] for m in messages for p in m["parts"] if "text" in p]
    leaks = [
        t
        for t in hidden_view
        if re.search(rf"\b{total}\b", t) and not any(t in x or x in t for x in spoken)
    ]
    expect(
        not leaks,
        "with show_tool_telemetry off the page still shows the tool's response",
        expected=f"no tool result (total {total}) outside the model's own text",
        actual=text_lines(leaks),
    )

    telemetry = [t for t in shown if t not in hidden_view]
    expect(
        any(TOOL in t for t in telemetry),
        f"with show_tool_telemetry on the page does not show the function call ({TOOL}), "
        "labelled, e.g. 'Calling tool `roll_dice(...)`'",
        expected=f"a line naming {TOOL}",
        actual=text_lines(shown),
    )
    expect(
        any(re.search(rf"\b{total}\b", t) for t in telemetry),
        "with show_tool_telemetry on the page does not show the function response (the "
        "tool's result)",
        expected=f"the tool's answer, with its total {total}",
        actual=text_lines(telemetry),
    )
    at = at.toggle("show_tool_telemetry", True)
    expect(
        any(TOOL in t for t in at.texts()),
        "switching show_tool_telemetry back on does not show the telemetry again",
        actual=text_lines(at.texts()),
    )


# --- 3.7 bad input gets a clear 422 ------------------------------------------------------------

BAD_CHAT_BODIES = [
    ({"prompt": ""}, "an empty prompt"),
    ({"prompt": "  \n\t "}, "a blank prompt"),
    ({"prompt": "x" * 8001}, "an 8,001-character prompt"),
    ({}, "no prompt"),
    ({"prompt": None}, "a null prompt"),
    ({"prompt": 42}, "a prompt that is a number"),
    ({"prompt": "hi", "thread_id": "not-a-uuid"}, "a thread_id that is not a UUID"),
    ({"prompt": "hi", "thread_id": "'; DROP TABLE messages; --"}, "a thread_id holding SQL"),
    ({"prompt": "hi", "thread_id": 42}, "a thread_id that is a number"),
    ({"prompt": "hi", "colour": "green"}, "an unknown field"),
    ([{"prompt": "hi"}], "a list instead of an object"),
]
BAD_PATHS = ["not-a-uuid", "42", "'; DROP TABLE messages; --", "a" * 300]
HOW_TO = {
    "an unknown field": "forbid extra fields (model_config = ConfigDict(extra='forbid'))",
    "thread_id": "declare thread_id as `UUID | None`",
    "prompt": "declare prompt as a str of 1 to 8,000 characters with a non-blank character",
}


def _how_to(what: str) -> str:
    return next((fix for key, fix in HOW_TO.items() if key in what), "validate it with pydantic")


def _expect_422(r: Any, request: str, why: str) -> None:
    expect(
        r.status_code == 422,
        f"{request} with {why} answered {r.status_code}, not 422: {_how_to(why)}",
        expected="422 with a JSON detail",
        actual=f"{r.status_code}: {shorten(r.text, 300)}",
    )
    try:
        body = r.json()
    except ValueError:
        body = None
    expect(
        isinstance(body, dict) and "detail" in body,
        f"{request} with {why} must answer a JSON body with a `detail`",
        expected='{"detail": ...}',
        actual=shorten(r.text, 300),
    )


@pytest.mark.milestone("3.7")
def test_bad_chat_input_gets_422(api: ChatApi):
    for body, why in BAD_CHAT_BODIES:
        _expect_422(api.post("/chat", expect_status=None, json=body), "POST /chat", why)
    for raw, why in (
        (b'{"prompt": "hi"', "malformed JSON"),
        (b"", "an empty body"),
        (b"prompt=hi", "a body that is not JSON"),
    ):
        r = api.post(
            "/chat", expect_status=None, content=raw, headers={"content-type": "application/json"}
        )
        _expect_422(r, "POST /chat", why)


@pytest.mark.milestone("3.7")
def test_bad_thread_ids_get_422(api: ChatApi):
    for bad in BAD_PATHS:
        for method in ("GET", "DELETE"):
            r = api.request(method, f"/history/{bad}", expect_status=None)
            _expect_422(
                r, f"{method} /history/{shorten(bad, 30)}", "a thread id that is not a UUID"
            )
    body = api.json("GET", "/health")
    expect(
        body == {"status": "ok"},
        "the backend stopped answering GET /health after bad input",
        expected={"status": "ok"},
        actual=body,
    )
