"""Chapter 2 milestones: the message model, threads kept apart, a dice roll recorded whole, and
two demos of what keeping history in process memory costs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from grader.toolkit.chat import ChatApi, Message, text_of, user_message
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.explain import explain_history, kinds, listing
from grader.toolkit.milestone import milestone
from grader.toolkit.preload import in_background
from grader.toolkit.procs import Backend

DICE = "roll 2d6+1"
DICE_TURN = ["model: function_call", "tool: function_response", "model: text"]

# The page checks need Streamlit (a second to import): import it while the backend checks run.
in_background("grader.toolkit.page", "2.2", "2.3")


def tag() -> str:
    """A few random characters, so texts are unique even on a backend other checks used."""
    return uuid.uuid4().hex[:6]


# --- 2.1 the message model -------------------------------------------------------------------


@milestone("2.1")
def chat_answers_the_turn_as_messages(api: ChatApi) -> None:
    """POST /chat answers {thread_id, messages}: the user's message, then the assistant's."""
    for prompt in (DICE, "tell me about the dragon"):
        turn = api.turn(prompt)
        expect(
            turn.echoed_prompt and all(m["role"] != "user" for m in turn.reply),
            "POST /chat must answer the messages this turn added: the user's message first, "
            "then the assistant's",
            expected=listing([user_message(prompt), {"role": "model", "parts": [{"text": "…"}]}]),
            actual=listing(turn.messages if turn.echoed_prompt else turn.reply),
        )
        last = turn.reply[-1]
        expect(
            last["role"] == "model" and any("text" in p for p in last["parts"]),
            "the last message of a turn must be the model's text answer",
            actual=listing(turn.messages),
        )


@milestone("2.1")
def a_null_thread_id_starts_a_new_thread(api: ChatApi) -> None:
    """thread_id null starts a thread (a new UUID each time); an id continues that thread."""
    first, second = api.turn("hello"), api.turn("hello")
    expect(
        first.thread_id != second.thread_id,
        "two POST /chat with thread_id null must start two threads with different UUIDs",
        expected="two different UUIDs",
        actual=[first.thread_id, second.thread_id],
    )
    api.turn("tell me about the guild", first.thread_id)  # answers for that same thread
    api.history(first.thread_id)  # every message has the documented shape


BAD_CHAT_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("a thread_id that is not a UUID", {"json": {"prompt": "hi", "thread_id": "not-a-uuid"}}),
    ("a numeric thread_id", {"json": {"prompt": "hi", "thread_id": 12345}}),
    ("a blank prompt", {"json": {"prompt": "   ", "thread_id": None}}),
    ("an empty prompt", {"json": {"prompt": "", "thread_id": None}}),
    ("no prompt", {"json": {"thread_id": None}}),
    ("a prompt of 8,001 characters", {"json": {"prompt": "x" * 8001, "thread_id": None}}),
    ("a prompt that is not a string", {"json": {"prompt": 42, "thread_id": None}}),
    ("an unknown field", {"json": {"prompt": "hi", "thread_id": None, "user": "mallory"}}),
    ("a body that is not an object", {"json": ["hi"]}),
    (
        "malformed JSON",
        {"content": b'{"prompt": "hi",', "headers": {"content-type": "application/json"}},
    ),
]


@milestone("2.1")
def bad_input_gets_422(api: ChatApi) -> None:
    """Bad bodies and thread ids that are not UUIDs get 422; the limits themselves are fine."""
    for what, request in BAD_CHAT_BODIES:
        r = api.post("/chat", expect_status=None, **request)
        expect(
            r.status_code == 422,
            f"POST /chat with {what} answered {r.status_code}; bad input must get 422",
            expected="422 with a JSON detail",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    for bad in ("not-a-uuid", "12345", "0" * 33):
        r = api.get(f"/history/{bad}", expect_status=None)
        expect(
            r.status_code == 422,
            f"GET /history/{bad} answered {r.status_code}; a thread id that is not a UUID gets 422",
            expected="422",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    api.turn("x" * 8000)  # the limit itself is allowed
    expect(
        api.json("GET", "/health") == {"status": "ok"},
        "after the bad requests, GET /health no longer answers {'status': 'ok'}",
    )


# --- 2.2 threads are isolated ------------------------------------------------------------------


@milestone("2.2")
def each_thread_has_only_its_own_messages(api: ChatApi) -> None:
    """Two conversations interleaved: each thread's history holds its own turns, in order."""
    t = tag()
    prompts = {
        "A": [f"hello from thread A {t}", "tell me about the guild"],
        "B": [f"hello from thread B {t}", "tell me about the tavern"],
    }
    ids: dict[str, str | None] = {"A": None, "B": None}
    want: dict[str, list[Message]] = {"A": [], "B": []}
    for turn in range(2):  # interleaved, as two people chatting at once would be
        for name in ("A", "B"):
            answered = api.turn(prompts[name][turn], ids[name])
            ids[name] = answered.thread_id
            want[name] += answered.messages
    for name, other in (("A", "B"), ("B", "A")):
        explain_history(
            api.history(ids[name]),
            want[name],
            f"GET /history of thread {name}",
            others=want[other],
        )
    never_used = str(uuid.uuid4())
    r = api.get(f"/history/{never_used}", expect_status=None)
    if r.status_code != 200:
        fail(
            f"GET /history of a thread nobody has used answered {r.status_code}: such a thread "
            "is an empty thread, 200 with no messages",
            expected={"thread_id": never_used, "messages": []},
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    explain_history(api.history(never_used), [], "GET /history of a thread nobody has used")


@milestone("2.2")
def the_assistant_sees_this_threads_history(api: ChatApi) -> None:
    """The assistant is given this thread's whole history, and only this thread's."""
    t = tag()
    first_a, first_b = f"my name is Aria {t}", f"my name is Bram {t}"
    a, b = api.turn(first_a).thread_id, api.turn(first_b).thread_id
    api.turn("tell me about the dragon", a)
    quoted, asked = api.ask_first_message(b)
    if quoted == first_a:
        fail(
            "in thread B the assistant quoted thread A's first message: pass respond() only "
            "this thread's messages",
            expected=f'Your first message was: "{first_b}"',
            actual=asked.text,
        )
    expect(
        quoted == first_b,
        "in thread B, asked what its first message was, the assistant did not name it: pass "
        "respond() the thread's whole history, new message last",
        expected=f'Your first message was: "{first_b}"',
        actual=asked.text,
    )
    count, asked = api.ask_count(a)
    expect(
        count == 3,
        f"in thread A, after 3 prompts, the assistant counted {count}: it must see every "
        "earlier prompt of the thread",
        expected="You have sent 3 messages in this conversation.",
        actual=asked.text,
    )


@milestone("2.2")
def the_page_keeps_its_thread(target: Path, shared_backend: Backend) -> None:
    """The page sends the thread id it was given; New chat starts another thread."""
    from grader.toolkit.page import Page, bubble_listing, since_last_user

    first = f"my name is Cara {tag()}"
    page = Page(target, shared_backend.url).send(first).send("what was my first message?")
    expect(
        first in since_last_user(page.bubbles),
        "the page's second message started a new thread: send the thread_id the backend "
        "answered with every following message",
        expected=f'Your first message was: "{first}"',
        actual=bubble_listing(page.bubbles),
    )
    page.click("new_chat")
    expect(
        not page.bubbles,
        "after New chat the page still shows the old conversation",
        actual=bubble_listing(page.bubbles),
    )
    page.send("what was my first message?")
    expect(
        first not in since_last_user(page.bubbles),
        "after New chat the assistant still remembers the old thread: New chat must send "
        "thread_id null next",
        expected='Your first message was: "what was my first message?"',
        actual=bubble_listing(page.bubbles),
    )


# --- 2.3 a dice roll is recorded whole -------------------------------------------------------


@milestone("2.3")
def a_dice_roll_is_call_response_and_answer(api: ChatApi) -> None:
    """A dice roll is the model's call, the tool's response and the answer, all in the history."""
    turn = api.turn(DICE)
    expect(
        kinds(turn.reply) == DICE_TURN,
        f"POST /chat {DICE!r} must answer 3 messages after the prompt: the model's "
        "function_call, the tool's function_response, the model's text",
        expected=DICE_TURN,
        actual=listing(turn.reply),
    )
    call = turn.reply[0]["parts"][0]["function_call"]
    result = turn.reply[1]["parts"][0]["function_response"]
    expect(
        call["name"] == result["name"] == "roll_dice",
        "the dice turn's call and response must both name the tool roll_dice",
        actual=[call, result],
    )
    total = result["response"].get("total")
    expect(
        isinstance(total, int) and str(total) in text_of(turn.reply[2:]),
        "the model's answer does not state the total the tool's response holds",
        expected=f"an answer naming the total {total}",
        actual=turn.text,
    )
    got = api.history(turn.thread_id)
    if len(got) == 2 and got == [turn.messages[0], turn.messages[-1]]:
        fail(
            "GET /history holds the prompt and the final answer but not the tool call and its "
            "response: store every message of the turn",
            expected=listing(turn.messages),
            actual=listing(got),
        )
    explain_history(got, turn.messages, "GET /history after a dice roll")


@milestone("2.3")
def the_page_shows_tool_calls_and_responses(target: Path, shared_backend: Backend) -> None:
    """The page shows the roll_dice call, its response with the total, and the answer."""
    from grader.toolkit.page import Page, since_last_user

    shown = since_last_user(Page(target, shared_backend.url).send(DICE).bubbles)
    expect(
        shown.count("roll_dice") >= 2 and "total" in shown and "You rolled" in shown,
        "after a dice roll the page must show the roll_dice call, its response (with the "
        "total) and the answer",
        expected="Calling tool `roll_dice` with …, Tool `roll_dice` answered {… total …}, "
        "You rolled 2d6+1: …",
        actual=shown,
    )


# --- 2.4 and 2.5 demos: what history in process memory costs --------------------------------


@milestone("2.4")
def a_restarted_backend_keeps_the_history(spawn: Any, database_url: str) -> None:
    """Demo: a thread written before a restart is still there after it."""
    (backend,) = spawn(database_url)
    with ChatApi(backend) as api:
        thread_id = api.turn("hello").thread_id
        before = api.history(thread_id)
    backend.restart()
    with ChatApi(backend) as api:
        after = api.history(thread_id)
    expect(
        after == before,
        f"after a restart, GET /history of the thread has {len(after)} messages; it had "
        f"{len(before)} before",
    )


@milestone("2.5")
def two_backends_agree_about_one_thread(spawn: Any, database_url: str) -> None:
    """Demo: a thread written through one backend process is readable through another."""
    a, b = spawn(database_url, count=2)
    with ChatApi(a) as on_a, ChatApi(b) as on_b:
        thread_id = on_a.turn("hello").thread_id
        seen_a, seen_b = on_a.history(thread_id), on_b.history(thread_id)
    expect(
        seen_a == seen_b,
        f"backend A stored {len(seen_a)} messages in the thread; backend B has {len(seen_b)}",
    )
