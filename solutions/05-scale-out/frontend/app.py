"""Chapter 5: chapter 4's chat page, which holds nothing but a thread id in the URL, now
sending each prompt with an Idempotency-Key.

The conversation lives in the backend's database. On every run the page asks
`GET /history/{thread_id}` and draws what it gets, so a refresh, a second tab or a shared link
shows the same conversation, whichever backend process answers. A prompt whose answer is lost
on the way is sent once more with the same key: the backend stores it once either way.
"""

import json
import os
import uuid

import httpx
import streamlit as st

BACKEND_URL = os.environ.get("BACKEND_URL", "http://localhost:8000")

st.set_page_config(page_title="Make It Scale — chapter 5", page_icon="🎲")
st.title("🎲 Game master")
st.caption("Try “roll 2d6+1”, “tell me about the dragon”, or “what was my first message?”.")


class BackendProblem(Exception):
    """Talking to the backend went wrong; the message says what happened and what to do."""


class NoAnswer(BackendProblem):
    """The request got no answer from a backend: it may or may not have been carried out."""


def as_code(text: str) -> str:
    """`text` as Markdown inline code, which st.error and st.caption show as typed (no links,
    images or HTML). On one line and without backticks, nothing in it can end the code early."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"


def _detail(response: httpx.Response) -> str:
    """The backend's `detail` as inline code: it may echo what was sent, and st.error must not
    render that as Markdown."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return as_code(response.text[:300])
    return as_code(detail[:300] if isinstance(detail, str) else json.dumps(detail)[:300])


def backend(method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the backend; any failure becomes a BackendProblem the page can show."""
    try:
        response = httpx.request(method, f"{BACKEND_URL}{path}", timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise NoAnswer(
            f"Could not reach the backend at {BACKEND_URL} ({type(exc).__name__}). "
            "Is it running? Start it with `grader run 5`, then reload this page."
        ) from exc
    if response.status_code in (502, 504):  # nginx: the instance it chose did not answer
        raise NoAnswer(
            f"No backend instance answered {method} {path} ({response.status_code} from the "
            "load balancer). Are the instances running? Try again in a moment."
        )
    if response.status_code == 501:
        raise BackendProblem(
            f"The backend says: {_detail(response)}. Finish that TODO in backend/, then reload."
        )
    if response.status_code == 422:
        raise BackendProblem(
            f"The backend rejected {method} {path}: {_detail(response)}. "
            "Change your message and send it again."
        )
    if response.status_code == 409:  # a resend while the first try is still being answered
        raise BackendProblem(
            f"The backend is still answering this message: {_detail(response)}. "
            "Reload the page in a moment to see the answer."
        )
    if response.status_code == 503:
        raise BackendProblem(
            f"The backend cannot reach its database: {_detail(response)}. "
            "Check DATABASE_URL, then try again."
        )
    if response.is_error:
        raise BackendProblem(
            f"The backend answered {response.status_code} to {method} {path}: "
            f"{_detail(response)}. Its log says more."
        )
    return response


def current_thread_id() -> str | None:
    """The thread this page shows: `?thread_id=...` in the URL, or None for a new chat."""
    return st.query_params.get("thread_id")


def remember_thread_id(thread_id: str) -> None:
    """Keep the thread id in the URL: a refresh or a shared link reopens this conversation."""
    st.query_params["thread_id"] = thread_id


def fetch_history(thread_id: str) -> list[dict]:
    """Every message of the thread, oldest first, as the backend's database has it."""
    return backend("GET", f"/history/{thread_id}").json()["messages"]


def is_thread_id(text: str) -> bool:
    """Thread ids are UUIDs. A link can carry anything in ?thread_id=, so check it before it
    goes into a URL: `../health` would ask another route. (The canonical form only: uuid.UUID
    also reads forms such as `{...}` and `urn:uuid:...`.)"""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


# --8<-- [start:send-prompt]
def send_prompt(prompt: str, thread_id: str | None) -> str:
    """One turn: the backend stores it; the answer names the thread (a new one if None).

    An instance killed mid-turn, or a connection cut, leaves the page not knowing whether the
    turn was stored. Sending it again is safe only because both tries carry one key: the
    backend replays the stored answer instead of storing the turn twice.
    """
    body = {"prompt": prompt, "thread_id": thread_id}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    try:
        answer = backend("POST", "/chat", json=body, headers=headers)
    except NoAnswer:
        answer = backend("POST", "/chat", json=body, headers=headers)
    return answer.json()["thread_id"]
    # --8<-- [end:send-prompt]


def clear_history(thread_id: str) -> None:
    backend("DELETE", f"/history/{thread_id}")


def describe_tool_part(part: dict) -> str:
    """Tool telemetry, labelled so nobody mistakes it for the game master's words."""
    if "function_call" in part:
        call = part["function_call"]
        args = ", ".join(f"{key}={value!r}" for key, value in call.get("args", {}).items())
        signature = f"{call['name']}({args})"
        return f"🛠️ Calling tool {as_code(signature)}"
    answer = part["function_response"]
    result = json.dumps(answer["response"])
    return f"🛠️ Tool {as_code(answer['name'])} answered {as_code(result)}"


def is_visible(part: dict, show_telemetry: bool) -> bool:
    """Text is always shown; function calls and responses only when the toggle is on."""
    return "text" in part or show_telemetry


def render(message: dict, show_telemetry: bool) -> None:
    parts = [p for p in message["parts"] if is_visible(p, show_telemetry)]
    if not parts:
        return  # a message that was all telemetry, with telemetry hidden
    if message["role"] == "user":
        bubble = st.chat_message("user")
    elif message["role"] == "tool":
        bubble = st.chat_message("tool", avatar="🛠️")
    else:
        bubble = st.chat_message("assistant")
    with bubble:
        for part in parts:
            if "text" in part:
                # As typed: st.markdown would obey Markdown in a prompt (or a reply quoting it),
                # and ![x](http://...) would make every viewer's browser fetch that image.
                st.text(part["text"])
            else:
                st.caption(describe_tool_part(part))  # Markdown, its untrusted parts as_code


# The widgets come first and outside any `try`, so they exist on every run, whatever fails.
with st.sidebar:
    show_telemetry = st.toggle("Show tool calls", value=True, key="show_tool_telemetry")
    new_chat = st.button("New chat", key="new_chat")
    clear = st.button("Clear history", key="clear_history")
prompt = st.chat_input("Say something to the game master")

try:
    thread_id = current_thread_id()
    if thread_id and not is_thread_id(thread_id):
        st.query_params.pop("thread_id", None)  # a broken or crafted link: start a new chat
        thread_id = None
        st.error(
            "This link is not a valid conversation: its thread id is malformed. "
            "Send a message to start a new chat."
        )
    if new_chat:
        st.query_params.pop("thread_id", None)
        thread_id = None  # the first message of the new chat gets a fresh thread from the backend
    if clear and thread_id:
        clear_history(thread_id)
        st.query_params.pop("thread_id", None)
        thread_id = None  # the thread is empty now: the next message starts a new one
        st.toast("History cleared. Your next message starts a new chat.")
    st.sidebar.caption(
        f"Thread {as_code(thread_id)}"
        if thread_id
        else "A new chat starts with your first message."
    )
    if thread_id:
        for message in fetch_history(thread_id):
            render(message, show_telemetry)
    if prompt:
        with st.chat_message("user"):
            st.text(prompt)
        with st.spinner("The game master is thinking…"):
            remember_thread_id(send_prompt(prompt, thread_id))
        st.rerun()  # draw the page again, from /history, with this turn in it
except BackendProblem as exc:
    st.error(str(exc))
except NotImplementedError as exc:
    st.error(f"{exc} is not done yet: finish it in frontend/app.py, then reload the page.")
