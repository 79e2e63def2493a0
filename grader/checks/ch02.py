"""Chapter 2 milestones: the message model, threads kept apart, a dice roll recorded whole, and
two demos of what keeping history in process memory costs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from grader.check import Api, expect, fail, is_uuid, shorten, user_message
from grader.frontend import PAGE_TIMEOUT, backend_env, open_page, rendered_messages, send

ROLES = ("user", "model", "tool")
FIRST = "what was my first message?"
DICE_TURN = ["model: function_call", "tool: function_response", "model: text"]


# --- what a message looks like -------------------------------------------------------------


def part_problem(part: Any) -> str | None:
    """What is wrong with one part, or None when it has the documented shape."""
    if not isinstance(part, dict) or len(part) != 1:
        keys = sorted(part) if isinstance(part, dict) else type(part).__name__
        return f"a part must hold exactly one of text, function_call, function_response; got {keys}"
    ((key, value),) = part.items()
    if key == "text":
        return None if isinstance(value, str) else "a text part's value must be a string"
    if key in ("function_call", "function_response"):
        inner = "args" if key == "function_call" else "response"
        ok = (
            isinstance(value, dict)
            and isinstance(value.get("name"), str)
            and isinstance(value.get(inner), dict)
        )
        shape = f'{{"{key}": {{"name": str, "{inner}": {{...}}}}}}'
        return None if ok else f"a {key} part must be {shape}"
    return f"unknown part key {key!r}; a part holds text, function_call or function_response"


def message_problem(message: Any) -> str | None:
    """What is wrong with one message, or None when it has the documented shape."""
    if not isinstance(message, dict) or set(message) != {"role", "parts"}:
        keys = sorted(message) if isinstance(message, dict) else type(message).__name__
        return f'a message must be {{"role": ..., "parts": [...]}} and nothing else; got {keys}'
    if message["role"] not in ROLES:
        return f"role must be one of {', '.join(ROLES)}; got {message['role']!r}"
    parts = message["parts"]
    if not isinstance(parts, list) or not parts:
        return "parts must be a non-empty list"
    return next((p for p in map(part_problem, parts) if p), None)


def describe(message: Any) -> str:
    """`user: "hello"`, `model: function_call roll_dice`: one message in a few words."""
    if message_problem(message):
        return shorten(message, 80)
    kinds = []
    for part in message["parts"]:
        ((key, value),) = part.items()
        kinds.append(shorten(value, 40) if key == "text" else f"{key} {value['name']}")
    return f"{message['role']}: {', '.join(kinds)}"


def summary(messages: list[Any], limit: int = 10) -> list[str]:
    """`describe` for each message, at most `limit` of them."""
    shown = [describe(m) for m in messages[:limit]]
    return shown + ([f"… {len(messages) - limit} more"] if len(messages) > limit else [])


def kinds(messages: list[Any]) -> list[str]:
    """`["model: function_call", ...]`: role and part keys, without the content."""
    return [f"{m['role']}: {', '.join(k for p in m['parts'] for k in p)}" for m in messages]


def text_of(message: dict[str, Any]) -> str:
    return " ".join(p["text"] for p in message["parts"] if "text" in p)


# --- talking to the backend ------------------------------------------------------------------


def post_chat(api: Api, prompt: str, thread_id: str | None = None) -> tuple[str, list[Any]]:
    """One turn: `(thread_id, the messages it added)`, failing on a body of the wrong shape."""
    body = api.json("POST", "/chat", json={"prompt": prompt, "thread_id": thread_id})
    expect(
        isinstance(body, dict)
        and isinstance(body.get("thread_id"), str)
        and isinstance(body.get("messages"), list),
        'POST /chat must answer {"thread_id": "<uuid>", "messages": [...]}',
        expected={"thread_id": "<uuid>", "messages": ["…the turn's messages…"]},
        actual=shorten(body, 300),
    )
    return body["thread_id"], body["messages"]


def chat(api: Api, prompt: str, thread_id: str | None = None) -> tuple[str, list[Any]]:
    """One turn: `(thread_id, the assistant's messages)`; 2.1 checks the user's comes first."""
    thread_id, messages = post_chat(api, prompt, thread_id)
    if messages and messages[0] == user_message(prompt):
        messages = messages[1:]
    return thread_id, messages


def history(api: Api, thread_id: str) -> list[Any]:
    body = api.json("GET", f"/history/{thread_id}")
    expect(
        isinstance(body, dict)
        and body.get("thread_id") == thread_id
        and isinstance(body.get("messages"), list),
        'GET /history/<id> must answer {"thread_id": "<that id>", "messages": [...]}',
        expected={"thread_id": thread_id, "messages": ["…"]},
        actual=shorten(body, 300),
    )
    return body["messages"]


def expect_history(api: Api, thread_id: str, want: list[Any], name: str, others: list[str]) -> None:
    """GET /history/<id> must be exactly `want`; else say how it differs, in one line."""
    got = history(api, thread_id)
    if got == want:
        return
    shown = {"expected": summary(want), "actual": summary(got)}
    foreign = [text_of(m) for m in got if isinstance(m, dict) and text_of(m) in others]
    if foreign:
        fail(
            f"GET /history/<{name}> holds {foreign[0]!r}, a message of another thread: "
            "each thread must keep only its own messages",
            **shown,
        )
    if len(got) != len(want):
        fail(
            f"GET /history/<{name}> has {len(got)} messages; the turns of {name} added "
            f"{len(want)} (each prompt and everything the assistant answered)",
            **shown,
        )
    first = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
    fail(
        f"GET /history/<{name}> differs at message {first}: the history must hold each turn's "
        "messages as POST /chat answered them, oldest first",
        expected=want[first],
        actual=got[first],
    )


def tag() -> str:
    """A few random characters, so texts are unique even on a backend other checks used."""
    return uuid.uuid4().hex[:6]


# --- 2.1 the message model -------------------------------------------------------------------


@pytest.mark.milestone("2.1")
def test_chat_answers_the_turn_as_messages(api):
    for prompt in ("roll 2d6+1", "tell me about the dragon"):
        thread_id, messages = post_chat(api, prompt)
        expect(
            is_uuid(thread_id),
            f"POST /chat answered thread_id {thread_id!r}, which is not a UUID",
            expected="a UUID such as 'f47ac10b-58cc-4372-a567-0e02b2c3d479'",
            actual=thread_id,
        )
        expect(
            bool(messages),
            f"POST /chat {prompt!r} answered no messages; the turn's messages are missing",
            actual=messages,
        )
        for i, message in enumerate(messages):
            problem = message_problem(message)
            if problem:
                fail(
                    f"message {i} of POST /chat's answer: {problem}",
                    expected={"role": "model", "parts": [{"text": "…"}]},
                    actual=message,
                )
        sent = user_message(prompt)
        expect(
            messages[0] == sent and all(m["role"] != "user" for m in messages[1:]),
            "POST /chat must answer the messages this turn added: the user's message first, "
            "then the assistant's",
            expected=summary([sent, {"role": "model", "parts": [{"text": "…"}]}]),
            actual=summary(messages),
        )
        expect(
            messages[-1]["role"] == "model" and any("text" in p for p in messages[-1]["parts"]),
            "the last message of a turn must be the model's text answer",
            actual=summary(messages),
        )


@pytest.mark.milestone("2.1")
def test_a_null_thread_id_starts_a_new_thread(api):
    first, _ = chat(api, "hello")
    second, _ = chat(api, "hello")
    expect(
        is_uuid(first) and is_uuid(second) and first != second,
        "two POST /chat with thread_id null must start two threads with different UUIDs",
        expected="two different UUIDs",
        actual=[first, second],
    )
    again, _ = chat(api, "tell me about the guild", first)
    expect(
        again == first,
        "POST /chat with an existing thread_id must answer that same thread_id",
        expected=first,
        actual=again,
    )
    for i, message in enumerate(history(api, first)):
        problem = message_problem(message)
        if problem:
            fail(f"message {i} of GET /history/<id>: {problem}", actual=message)


BAD_CHAT_BODIES = [
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


@pytest.mark.milestone("2.1")
@pytest.mark.parametrize(
    ("what", "request_kw"), BAD_CHAT_BODIES, ids=[w for w, _ in BAD_CHAT_BODIES]
)
def test_bad_chat_input_gets_422(api, what, request_kw):
    r = api.post("/chat", expect_status=None, **request_kw)
    expect(
        r.status_code == 422,
        f"POST /chat with {what} answered {r.status_code}; bad input must get 422",
        expected="422 with a JSON detail",
        actual=f"{r.status_code}: {shorten(r.text, 200)}",
    )


@pytest.mark.milestone("2.1")
def test_bad_thread_ids_and_limits(api):
    for bad in ("not-a-uuid", "12345", "0" * 33):
        r = api.get(f"/history/{bad}", expect_status=None)
        expect(
            r.status_code == 422,
            f"GET /history/{bad} answered {r.status_code}; a thread id that is not a UUID gets 422",
            expected="422",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    _, messages = chat(api, "x" * 8000)  # the limit itself is allowed
    expect(
        bool(messages), "POST /chat with a prompt of exactly 8,000 characters answered no messages"
    )
    body = api.json("GET", "/health")
    expect(
        body == {"status": "ok"},
        "after the bad requests, GET /health no longer answers {'status': 'ok'}",
        actual=body,
    )


# --- 2.2 threads are isolated ------------------------------------------------------------------


@pytest.mark.milestone("2.2")
def test_each_thread_has_only_its_own_messages(api):
    t = tag()
    prompts = {
        "A": [f"hello from thread A {t}", "tell me about the guild"],
        "B": [f"hello from thread B {t}", "tell me about the tavern"],
    }
    ids: dict[str, str | None] = {"A": None, "B": None}
    want: dict[str, list[Any]] = {"A": [], "B": []}
    for turn in range(2):  # interleaved, as two people chatting at once would be
        for name in ("A", "B"):
            prompt = prompts[name][turn]
            ids[name], messages = chat(api, prompt, ids[name])
            want[name] += [user_message(prompt), *messages]
    expect(
        ids["A"] != ids["B"],
        "two conversations started with thread_id null got the same thread id",
        actual=ids,
    )
    for name, other in (("A", "B"), ("B", "A")):
        expect_history(api, ids[name], want[name], name, prompts[other])


@pytest.mark.milestone("2.2")
def test_the_assistant_sees_this_threads_history(api):
    t = tag()
    first_a, first_b = f"my name is Aria {t}", f"my name is Bram {t}"
    a, _ = chat(api, first_a)
    b, _ = chat(api, first_b)
    chat(api, "tell me about the dragon", a)
    _, messages = chat(api, FIRST, b)
    answer = text_of(messages[-1]) if messages else ""
    if first_a in answer:
        fail(
            "in thread B the assistant quoted thread A's first message: pass respond() "
            "only this thread's messages",
            expected=f'Your first message was: "{first_b}"',
            actual=answer,
        )
    expect(
        first_b in answer,
        f"in thread B, asked {FIRST!r}, the assistant did not name B's first message: pass "
        "respond() the thread's whole history, new message last",
        expected=f'Your first message was: "{first_b}"',
        actual=answer,
    )
    _, messages = chat(api, "how many messages have I sent?", a)
    answer = text_of(messages[-1]) if messages else ""
    expect(
        "3 messages" in answer,
        f"in thread A, after 3 prompts, the assistant counted differently: {answer!r}",
        expected="You have sent 3 messages in this conversation.",
        actual=answer,
    )


def click(at: AppTest, key: str, backend_url: str) -> AppTest:
    buttons = [b for b in at.button if b.key == key]
    if not buttons:
        fail(f"the page has no button with key={key!r}", actual=[b.key for b in at.button])
    buttons[0].click()
    with backend_env(backend_url):
        at.run(timeout=PAGE_TIMEOUT)
    if at.exception:
        fail(f"the page crashed after clicking {key!r}", actual=at.exception[0].message)
    return at


def last_answer(at: AppTest) -> str:
    if at.error:
        fail("the page shows an error", actual=at.error[0].value)
    messages = rendered_messages(at)
    if not messages or messages[-1][0] != "assistant":
        fail("the page does not end with the assistant's answer", actual=messages)
    return messages[-1][1]


@pytest.mark.milestone("2.2")
def test_the_page_keeps_its_thread_and_new_chat_starts_another(target, shared_backend):
    url, first = shared_backend.url, f"my name is Cara {tag()}"
    at = send(open_page(target, url), url, first)
    answer = last_answer(send(at, url, FIRST))
    expect(
        first in answer,
        "the page's second message started a new thread: send the thread_id the backend "
        "answered with every following message",
        expected=f'Your first message was: "{first}"',
        actual=answer,
    )
    at = click(at, "new_chat", url)
    expect(
        not rendered_messages(at),
        "after New chat the page still shows the old conversation",
        actual=rendered_messages(at),
    )
    answer = last_answer(send(at, url, FIRST))
    expect(
        first not in answer,
        "after New chat the assistant still remembers the old thread: New chat must send "
        "thread_id null next",
        expected=f'Your first message was: "{FIRST}"',
        actual=answer,
    )


# --- 2.3 a dice roll is recorded whole -------------------------------------------------------


@pytest.mark.milestone("2.3")
def test_a_dice_roll_is_call_response_and_answer(api):
    thread_id, turn = chat(api, "roll 2d6+1")
    expect(
        kinds(turn) == DICE_TURN,
        "POST /chat 'roll 2d6+1' must answer 3 messages: the model's function_call, the "
        "tool's function_response, the model's text",
        expected=DICE_TURN,
        actual=summary(turn),
    )
    call = turn[0]["parts"][0]["function_call"]
    result = turn[1]["parts"][0]["function_response"]
    expect(
        call["name"] == result["name"] == "roll_dice",
        "the dice turn's call and response must both name the tool roll_dice",
        actual=[call, result],
    )
    total = result["response"].get("total")
    expect(
        isinstance(total, int) and str(total) in text_of(turn[2]),
        "the model's answer does not state the total the tool's response holds",
        expected=f"an answer naming the total {total}",
        actual=text_of(turn[2]),
    )
    got = history(api, thread_id)
    want = [user_message("roll 2d6+1"), *turn]
    expect(
        got == want,
        f"after a dice roll GET /history/<id> has {len(got)} messages; expected 4: your "
        "prompt, the function_call, the function_response and the answer",
        expected=summary(want),
        actual=summary(got),
    )


@pytest.mark.milestone("2.3")
def test_the_page_shows_tool_calls_and_responses(target, shared_backend):
    url = shared_backend.url
    at = send(open_page(target, url), url, "roll 2d6+1")
    answer = last_answer(at)
    expect(
        answer.count("roll_dice") >= 2 and "total" in answer and "You rolled" in answer,
        "the assistant's message on the page must show the roll_dice call, its response "
        "(with the total) and the answer",
        expected="Calling tool `roll_dice` with …, Tool `roll_dice` answered {… total …}, "
        "You rolled 2d6+1: …",
        actual=answer,
    )


# --- 2.4 and 2.5 demos: what history in process memory costs --------------------------------


@pytest.mark.milestone("2.4")
def test_a_restarted_backend_still_has_the_history(shared_backend):
    # The module's shared backend is not needed after this, so it is the one restarted.
    api = Api(shared_backend.url)
    try:
        thread_id, _ = chat(api, "hello")
        chat(api, "roll 2d6+1", thread_id)
        before = len(history(api, thread_id))
    finally:
        api.close()
    shared_backend.restart()
    api = Api(shared_backend.url)
    try:
        after = len(history(api, thread_id))
    finally:
        api.close()
    expect(
        after == before,
        f"after a restart, GET /history/<id> has {after} messages; it had {before} before",
    )


@pytest.mark.milestone("2.5")
def test_two_backends_agree_about_one_thread(spawn, database_url):
    a, b = spawn(database_url, count=2)
    api_a, api_b = Api(a.url), Api(b.url)
    try:
        thread_id, _ = chat(api_a, "hello")
        on_a, on_b = len(history(api_a, thread_id)), len(history(api_b, thread_id))
    finally:
        api_a.close()
        api_b.close()
    expect(
        on_a == on_b,
        f"backend A stored {on_a} messages in the thread; backend B has {on_b} for it",
    )
