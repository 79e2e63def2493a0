"""Chapter 3 milestones: the history lives in SQLite, so restarts, refreshes and a second backend
all see the same conversation; clearing one thread; the telemetry toggle; bad input.

Black box throughout: the checks talk HTTP to real backend processes, read the SQLite file
themselves, and drive the page with Streamlit's AppTest. They hold for any correct solution,
whatever its SQL, module layout or extra columns.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.toolkit.chat import ChatApi, is_uuid, same_thread
from grader.toolkit.conversation import Conversation, expect_remembers, user_texts
from grader.toolkit.dbview import DbView, explain_rows
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.explain import explain_history, listing
from grader.toolkit.milestone import milestone
from grader.toolkit.preload import in_background
from grader.toolkit.procs import Backend

if TYPE_CHECKING:
    from grader.toolkit.page import Page

TOOL = "roll_dice"
TOGGLE = "show_tool_telemetry"

# The page checks need Streamlit (a second to import): import it while the backend checks run.
in_background("grader.toolkit.page", "3.3", "3.5", "3.6")


def db_of(backend: Backend) -> DbView:
    return DbView(backend.env["DATABASE_URL"], backend_dir=backend.workdir)


def open_page(target: Path, backend: Backend, thread_id: str | None = None) -> Page:
    from grader.toolkit.page import Page

    return Page(target, backend.url, {"thread_id": thread_id} if thread_id else None)


# --- 3.1 messages appear in messages.db --------------------------------------------------------


@milestone("3.1")
def table_is_created_at_startup(shared_backend: Backend) -> None:
    """The backend creates the messages table, id first, indexed by (thread_id, id)."""
    db = db_of(shared_backend)
    db.expect_table()
    expect(
        db.primary_key() == ["id"] and "INT" in db.columns()["id"].upper(),
        "messages.id must be the INTEGER PRIMARY KEY: the thread's order is the id order",
        expected="id INTEGER PRIMARY KEY AUTOINCREMENT",
        actual=f"primary key {db.primary_key()}, id {db.columns()['id']}",
    )
    indexes = db.indexes()
    # In SQLite an index on (thread_id) alone ends with the rowid, i.e. id, implicitly.
    expect(
        any(cols[:2] == ["thread_id", "id"] or cols == ["thread_id"] for cols in indexes.values()),
        "the messages table has no index on (thread_id, id): reading one thread in order would "
        "scan the whole table (CREATE INDEX ... ON messages (thread_id, id))",
        expected="an index on (thread_id, id)",
        actual=indexes or "no index",
    )


@milestone("3.1")
def each_message_is_a_row(shared_backend: Backend, api: ChatApi) -> None:
    """Every message of a turn is one row, under its thread's id, in order, with created_at."""
    db = db_of(shared_backend)
    before = {r.id for r in db.rows()}
    a = api.turn("Hello! This is the first message of thread A.")
    b = api.turn("tell me about the dragon")
    expect(
        not same_thread(a.thread_id, b.thread_id),
        "two POST /chat with thread_id null got the same thread: start a new thread (uuid4) "
        "for each",
        actual=[a.thread_id, b.thread_id],
    )
    dice = api.turn("roll 2d6+1", a.thread_id)
    new = [r for r in db.rows() if r.id not in before]
    strays = [r for r in new if r.thread_id not in (a.thread_id, b.thread_id)]
    expect(
        not strays,
        "rows were stored under a thread_id that is not the thread's id",
        expected=[a.thread_id, b.thread_id],
        actual=sorted({str(r.stored_thread_id) for r in strays}),
    )
    explain_rows([r for r in new if r.thread_id == a.thread_id], a.messages + dice.messages, "A")
    explain_rows([r for r in new if r.thread_id == b.thread_id], b.messages, "B")
    undated = [r for r in new if r.created_at in (None, "")]
    expect(
        not undated,
        "every row needs its created_at (e.g. CURRENT_TIMESTAMP)",
        actual=shorten(repr(undated[:1])),
    )


@milestone("3.1")
def history_is_the_thread_oldest_first(api: ChatApi) -> Conversation:
    """GET /history is one thread's messages, oldest first; the assistant was given all of them."""
    a = api.turn("I carry a green lantern and a short sword.")
    b = api.turn("hello from another thread")
    a_all = [*a.messages, *api.turn("roll 2d6+1", a.thread_id).messages]
    explain_history(api.history(a.thread_id), a_all, "GET /history of thread A", b.messages)
    explain_history(api.history(b.thread_id), b.messages, "GET /history of thread B", a_all)
    written = Conversation(a.thread_id, a_all)
    quoted, asked = api.ask_first_message(a.thread_id)
    expect(
        quoted == written.first_prompt,
        "asked 'what was my first message?', the assistant did not quote the thread's first "
        "message: load the whole thread, oldest first, and pass it to respond()",
        expected=f'Your first message was: "{written.first_prompt}"',
        actual=asked.text,
    )
    explain_history(api.history(str(uuid.uuid4())), [], "GET /history of a thread never used")
    return Conversation(a.thread_id, [*a_all, *asked.messages])


HOSTILE_PROMPTS = [
    "'); DROP TABLE messages; --",
    "Robert'); DELETE FROM messages WHERE ('1'='1",
    '" OR 1=1 -- and a \\ backslash, a %s and a {braces}',
    "héllo 🐉 — ünïcödé, tabs\tand\nnewlines",
    "x" * 8000,  # the longest prompt allowed
]


@milestone("3.1")
def hostile_strings_are_stored_literally(shared_backend: Backend, api: ChatApi) -> None:
    """Prompts holding quotes, SQL and unicode are stored and answered as they were sent."""
    db = db_of(shared_backend)
    before = len(db.rows())
    thread_id, sent = None, []
    for prompt in HOSTILE_PROMPTS:
        r = api.post("/chat", expect_status=None, json={"prompt": prompt, "thread_id": thread_id})
        if r.status_code != 200:
            fail(
                f"POST /chat failed on a prompt holding quotes or SQL ({shorten(prompt, 40)!r}): "
                "pass values as ? parameters, never format them into the SQL string"
                + (f"; {api.last_cause()}" if api.last_cause() else ""),
                expected="200",
                actual=f"{r.status_code}: {shorten(r.text, 300)}",
            )
        thread_id = api.turn("hello again", r.json()["thread_id"]).thread_id
        sent += [prompt, "hello again"]
    expect(
        user_texts(api.history(thread_id)) == sent,
        "prompts holding quotes, SQL or unicode were not stored literally",
        expected=[shorten(p, 60) for p in sent],
        actual=[shorten(p, 60) for p in user_texts(api.history(thread_id))],
    )
    expect(
        len(db.rows()) > before,
        "rows disappeared from the messages table after prompts holding SQL: never build SQL "
        "by formatting the prompt into it",
        expected=f"more than {before} rows",
        actual=f"{len(db.rows())} rows",
    )
    stored = user_texts([r.message() for r in db.thread(thread_id)])
    expect(
        stored == sent,
        "the parts column does not hold the prompts exactly as sent",
        expected=[shorten(p, 60) for p in sent],
        actual=[shorten(p, 60) for p in stored],
    )


# --- 3.2 a restarted backend keeps the history ------------------------------------------------


def expect_survived(backend: Backend, written: Conversation, how: str) -> Conversation:
    with ChatApi(backend) as chat:
        got = chat.history(written.thread_id)
        if not got:
            fail(
                f"after the backend was {how}, GET /history is empty: the history was kept in "
                "process memory, not read from the database",
                expected=f"the {len(written.messages)} messages sent before",
                actual=[],
            )
        explain_history(
            got,
            written.messages,
            f"GET /history after the backend was {how}",
            lost=f"turns the backend had answered were lost when it was {how}: commit each "
            "turn's transaction before answering",
        )
        longer = expect_remembers(chat, written, f"after the backend was {how}")
        explain_history(
            chat.history(written.thread_id), longer.messages, f"GET /history on the {how} backend"
        )
    return longer


@milestone("3.2", after=history_is_the_thread_oldest_first)
def a_restarted_backend_keeps_the_history(
    written: Conversation, shared_backend: Backend
) -> Conversation:
    """After a graceful restart, the thread 3.1 wrote is all there, and the assistant sees it."""
    shared_backend.restart()
    return expect_survived(shared_backend, written, "restarted")


@milestone("3.2", after=a_restarted_backend_keeps_the_history)
def a_killed_backend_keeps_the_history(written: Conversation, shared_backend: Backend) -> None:
    """After a SIGKILL (a crash, the OOM killer: no shutdown code runs), nothing is lost."""
    shared_backend.kill()
    shared_backend.start()
    expect_survived(shared_backend, written, "killed and started again")


# --- 3.3 refreshing the page keeps the history -------------------------------------------------


@milestone("3.3")
def a_refreshed_page_shows_the_whole_history(target: Path, shared_backend: Backend) -> None:
    """The page keeps the thread id in the URL; a new session on that URL shows the thread."""
    from grader.toolkit.page import expect_shows

    first = "Good evening, game master: I open the door of the inn."
    page = open_page(target, shared_backend).send(first)
    tid = page.query.get("thread_id")
    expect(
        isinstance(tid, str) and is_uuid(tid),
        "after the first message the page must keep the thread id in the URL: "
        "st.query_params['thread_id'] = the thread_id POST /chat answered",
        expected="?thread_id=<uuid>",
        actual=page.query,
    )
    with ChatApi(shared_backend) as chat:
        expect(
            user_texts(chat.history(tid))[:1] == [first],
            "the thread id the page put in the URL is not the thread its message was stored in",
            expected=first,
            actual=user_texts(chat.history(tid)),
        )
        page.send("roll 2d6+1")
        expect(
            same_thread(page.query.get("thread_id"), tid),
            "the second message changed the thread id in the URL: send the URL's thread_id "
            "with every prompt",
            expected=tid,
            actual=page.query.get("thread_id"),
        )
        want = chat.history(tid)
        expect(
            user_texts(want) == [first, "roll 2d6+1"],
            "the page's two messages are not both in the thread it shows",
            expected=[first, "roll 2d6+1"],
            actual=user_texts(want),
        )
    shared_backend.restart()
    fresh = open_page(target, shared_backend, tid)
    expect_shows(
        fresh,
        want,
        "a new page session opened with ?thread_id=… does not show the whole conversation: on "
        "every run read the thread id from st.query_params and render GET /history/{thread_id}",
    )
    with ChatApi(shared_backend) as chat:
        another = chat.turn("what was my first message?", tid)
    expect_shows(
        fresh.rerun(),
        [*want, *another.messages],
        "the page did not show a turn another client stored in its thread: render GET "
        "/history on every run instead of keeping messages in st.session_state",
    )


@milestone("3.3")
def new_chat_starts_a_thread(target: Path, shared_backend: Backend, api: ChatApi) -> None:
    """New chat empties the page; the next message starts a new thread with its id in the URL."""
    from grader.toolkit.page import bubble_listing, expect_shows

    old = api.turn("This thread is the old chat.")
    page = open_page(target, shared_backend, old.thread_id)
    expect_shows(
        page, old.messages, "the page opened with ?thread_id=… does not show that thread's messages"
    )
    page.click("new_chat")
    expect(
        not any(b.name == "user" for b in page.bubbles),
        "after clicking new_chat the page still shows the old conversation",
        expected="no messages of the old thread",
        actual=bubble_listing(page.bubbles),
    )
    page.send("hello from the new chat")
    new = page.query.get("thread_id")
    expect(
        is_uuid(new) and not same_thread(new, old.thread_id),
        "after new_chat the next message must go to a new thread with its own id in the URL",
        expected=f"a thread id other than {old.thread_id}",
        actual=page.query,
    )
    explain_history(
        api.history(old.thread_id), old.messages, "GET /history of the old thread after new_chat"
    )


# --- 3.4 two backends, one conversation --------------------------------------------------------

ALTERNATING = [
    "Hello, game master! I am Ada.",
    "roll 2d6+1",
    "tell me about the dragon",
]


@milestone("3.4")
def two_backends_serve_one_conversation(shared_backend: Backend, spawn: Any) -> None:
    """Turns alternate between two backends on one database; each sees every turn at once."""
    (second,) = spawn(shared_backend.env["DATABASE_URL"])
    names = [f"{b.name} (port {b.port})" for b in (shared_backend, second)]
    with ChatApi(shared_backend) as one, ChatApi(second) as two:
        chats = (one, two)
        tid, want = None, []
        for n, prompt in enumerate(ALTERNATING):
            i = n % 2
            answered = chats[i].turn(prompt, tid)
            tid, want = answered.thread_id, [*want, *answered.messages]
            for j in (0, 1):
                explain_history(
                    chats[j].history(tid),
                    want,
                    f"GET /history on {names[j]}",
                    lost=None
                    if j == i
                    else f"{names[j]} does not see the turn {names[i]} just stored: history is "
                    "kept in process memory, not read from the database on every request",
                )
        expect_remembers(two, Conversation(tid, want), f"on {names[1]}, after turns on both")


# --- 3.5 clearing one thread leaves the others -------------------------------------------------


@milestone("3.5")
def delete_clears_one_thread(shared_backend: Backend, api: ChatApi) -> None:
    """DELETE /history/A answers 204, empties A, and leaves B's messages and rows untouched."""
    db = db_of(shared_backend)
    a = api.turn("Thread A, first message.")
    a_all = [*a.messages, *api.turn("roll 2d6+1", a.thread_id).messages]
    b = api.turn("Thread B must survive the clear.")
    rows_b = db.thread(b.thread_id)
    api.clear(a.thread_id)
    left = api.history(a.thread_id)
    expect(
        left == [],
        "after DELETE /history/A, GET /history/A still returns messages",
        expected=[],
        actual=listing(left),
    )
    expect(
        api.history(b.thread_id) != [],
        "DELETE /history/A also removed thread B's messages: delete WHERE thread_id = ? only",
        expected=f"thread B's {len(b.messages)} messages",
        actual=[],
    )
    explain_history(
        api.history(b.thread_id), b.messages, "GET /history of B after clearing A", a_all
    )
    expect(
        not db.thread(a.thread_id),
        "DELETE /history/A answered, but thread A's rows are still in the messages table",
        expected="0 rows",
        actual=f"{len(db.thread(a.thread_id))} rows",
    )
    expect(
        db.thread(b.thread_id) == rows_b,
        "DELETE /history/A also changed thread B's rows: delete WHERE thread_id = ? only",
        expected=f"{len(rows_b)} rows of thread B, unchanged",
        actual=f"{len(db.thread(b.thread_id))} rows",
    )
    again = api.delete(f"/history/{a.thread_id}", expect_status=None)
    expect(
        again.status_code in (204, 404),
        "clearing a thread that is already empty must not fail",
        expected="204",
        actual=f"{again.status_code}: {shorten(again.text)}",
    )
    restart = api.turn("A fresh start for thread A.", a.thread_id)
    quoted, asked = api.ask_first_message(a.thread_id)
    expect(
        quoted == "A fresh start for thread A.",
        "after clearing thread A the assistant still saw its old messages",
        expected=f'Your first message was: "{restart.messages[0]["parts"][0]["text"]}"',
        actual=asked.text,
    )


@milestone("3.5")
def the_clear_button_clears_the_shown_thread(
    target: Path, shared_backend: Backend, api: ChatApi
) -> None:
    """The clear_history button empties the page and its thread on the backend, nothing else."""
    from grader.toolkit.page import bubble_listing, expect_shows

    shown = api.turn("This thread is on the page.")
    shown_all = [*shown.messages, *api.turn("roll 2d6+1", shown.thread_id).messages]
    other = api.turn("This thread is not on the page.")
    page = open_page(target, shared_backend, shown.thread_id)
    expect_shows(
        page, shown_all, "the page opened with ?thread_id=… does not show that thread's messages"
    )
    page.click("clear_history")
    left = api.history(shown.thread_id)
    expect(
        left == [],
        "the clear_history button did not clear the thread on the backend: call "
        "DELETE /history/{thread_id} with the thread id from the URL",
        expected=[],
        actual=listing(left),
    )
    expect(
        not any(b.name == "user" for b in page.bubbles),
        "after clicking clear_history the page still shows the thread's messages",
        expected="no user messages",
        actual=bubble_listing(page.bubbles),
    )
    explain_history(
        api.history(other.thread_id),
        other.messages,
        "GET /history of another thread after clear_history",
        shown_all,
    )


# --- 3.6 the telemetry toggle ------------------------------------------------------------------


def text_lines(texts: list[str]) -> str:
    return "\n".join(shorten(" ".join(t.split()), 100) for t in texts) or "(nothing)"


@milestone("3.6")
def the_toggle_hides_telemetry_and_nothing_else(
    target: Path, shared_backend: Backend, api: ChatApi
) -> None:
    """With the toggle off, tool calls and responses are hidden; every text stays; on, both show."""
    from grader.toolkit.page import expect_shows

    hello = api.turn("hello there")
    # 1d20+30 totals 31 to 50, a number that cannot be read off the call's arguments.
    dice = api.turn("roll 1d20+30", hello.thread_id)
    messages = [*hello.messages, *dice.messages]
    total = str(dice.reply[1]["parts"][0]["function_response"]["response"].get("total"))
    spoken = [p["text"] for m in messages for p in m["parts"] if "text" in p]

    page = open_page(target, shared_backend, hello.thread_id).toggle(TOGGLE, True)
    shown = page.texts()
    expect_shows(
        page, messages, f"with {TOGGLE} on, the page does not show every user and model message"
    )
    hidden_view = page.toggle(TOGGLE, False).texts()
    expect_shows(
        page,
        messages,
        f"with {TOGGLE} off the page hid more than tool telemetry: user and model text must stay",
    )
    leaks = [t for t in hidden_view if TOOL in t]
    expect(
        not leaks,
        f"with {TOGGLE} off the page still shows the tool call or response",
        expected=f"nothing mentioning {TOOL}",
        actual=text_lines(leaks),
    )
    # The response may be drawn without the tool's name: look for its total outside the texts.
    leaks = [
        t
        for t in hidden_view
        if re.search(rf"\b{total}\b", t) and not any(t in x or x in t for x in spoken)
    ]
    expect(
        not leaks,
        f"with {TOGGLE} off the page still shows the tool's response",
        expected=f"no tool result (total {total}) outside the model's own text",
        actual=text_lines(leaks),
    )
    telemetry = [t for t in shown if t not in hidden_view]
    expect(
        any(TOOL in t for t in telemetry),
        f"with {TOGGLE} on the page does not show the function call ({TOOL}), labelled, e.g. "
        "'Calling tool `roll_dice(...)`'",
        expected=f"a line naming {TOOL}",
        actual=text_lines(shown),
    )
    expect(
        any(re.search(rf"\b{total}\b", t) for t in telemetry),
        f"with {TOGGLE} on the page does not show the function response (the tool's result)",
        expected=f"the tool's answer, with its total {total}",
        actual=text_lines(telemetry),
    )
    expect(
        any(TOOL in t for t in page.toggle(TOGGLE, True).texts()),
        f"switching {TOGGLE} back on does not show the telemetry again",
        actual=text_lines(page.texts()),
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
BAD_RAW_BODIES = [
    (b'{"prompt": "hi"', "malformed JSON"),
    (b"", "an empty body"),
    (b"prompt=hi", "a body that is not JSON"),
]
BAD_PATHS = ["not-a-uuid", "42", "'; DROP TABLE messages; --", "a" * 300]
HOW_TO = {
    "an unknown field": "forbid extra fields (model_config = ConfigDict(extra='forbid'))",
    "thread_id": "declare thread_id as `UUID | None`",
    "prompt": "declare prompt as a str of 1 to 8,000 characters with a non-blank character",
}


def expect_422(r: Any, request: str, why: str) -> None:
    fix = next((fix for key, fix in HOW_TO.items() if key in why), "validate it with pydantic")
    expect(
        r.status_code == 422,
        f"{request} with {why} answered {r.status_code}, not 422: {fix}",
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


@milestone("3.7")
def bad_input_gets_422(spawn: Any, database_url: str) -> None:
    """Bad bodies and thread ids that are not UUIDs get 422 with a JSON detail, on every route."""
    (backend,) = spawn(database_url)  # its own: an earlier check may have broken the shared one
    with ChatApi(backend) as api:
        for body, why in BAD_CHAT_BODIES:
            expect_422(api.post("/chat", expect_status=None, json=body), "POST /chat", why)
        for raw, why in BAD_RAW_BODIES:
            headers = {"content-type": "application/json"}
            r = api.post("/chat", expect_status=None, content=raw, headers=headers)
            expect_422(r, "POST /chat", why)
        for bad in BAD_PATHS:
            for method in ("GET", "DELETE"):
                r = api.request(method, f"/history/{bad}", expect_status=None)
                why = "a thread id that is not a UUID"
                expect_422(r, f"{method} /history/{shorten(bad, 30)}", why)
        expect(
            api.json("GET", "/health") == {"status": "ok"},
            "the backend stopped answering GET /health after bad input",
        )
