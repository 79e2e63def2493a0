"""Chapter 6: chapter 5's chat page, now for logged-in users, with their threads in the sidebar.

A visitor sees a login form and a register form, nothing else. Logging in (registering logs in
at once) gets an access token from `POST /token`, which the page keeps in `st.session_state`
only: never in the URL, where browser history, server logs and every shared link would keep
it too. Each request carries it as `Authorization: Bearer ...`; a 401 means it expired (or
was never good), so the page forgets it and asks to log in again.

The thread shown is still in the URL, so after logging in again a reload reopens it. It opens
only for its owner: to anyone else the backend answers 404, as for a thread that does not
exist. The sidebar lists the user's own threads, newest first, a page at a time.
"""

import json
import os
import string
import uuid

import httpx
import streamlit as st

BACKEND_URL = os.environ.get("BACKEND_URL", "http://localhost:8000")

st.set_page_config(page_title="Make It Scale — chapter 6", page_icon="🎲")
st.title("🎲 Game master")


class BackendProblem(Exception):
    """Talking to the backend went wrong; the message says what happened and what to do."""


class NoAnswer(BackendProblem):
    """The request got no answer from a backend: it may or may not have been carried out."""


class NotLoggedIn(BackendProblem):
    """401: the request carried no token the backend accepts (none, expired, or forged)."""


class NotFound(BackendProblem):
    """404: for a thread, it does not exist or it is another user's; the backend does not say
    which, so nobody can learn which thread ids exist."""


class Conflict(BackendProblem):
    """409: what conflicts depends on the route (a username taken, a turn still answering)."""


class Rejected(BackendProblem):
    """422: the backend refused what was sent (a blank prompt, a username it does not allow)."""


def as_code(text: str) -> str:
    """`text` as Markdown inline code, which st.error and st.caption show as typed (no links,
    images or HTML). On one line and without backticks, nothing in it can end the code early."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"


def as_label(text: str) -> str:
    """`text` for a button label, which Streamlit renders as Markdown: each ASCII punctuation
    character backslash-escaped, which Markdown shows as that character and nothing more, so a
    title such as `![x](http://...)` is shown as typed and fetches nothing. On one line."""
    return "".join(f"\\{c}" if c in string.punctuation else c for c in " ".join(text.split()))


def _detail(response: httpx.Response) -> str:
    """The backend's `detail` as inline code: it may echo what was sent, and st.error must not
    render that as Markdown."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return as_code(response.text[:300])
    return as_code(detail[:300] if isinstance(detail, str) else json.dumps(detail)[:300])


def backend(
    method: str, path: str, headers: dict[str, str] | None = None, **kwargs
) -> httpx.Response:
    """One request to the backend; any failure becomes a BackendProblem the page can show.

    Once logged in, every request carries the token: every route but /users and /token needs it.
    """
    headers = dict(headers or {})
    if "token" in st.session_state:
        headers["Authorization"] = f"Bearer {st.session_state.token}"
    try:
        response = httpx.request(
            method, f"{BACKEND_URL}{path}", headers=headers, timeout=30, **kwargs
        )
    except httpx.HTTPError as exc:
        raise NoAnswer(
            f"Could not reach the backend at {BACKEND_URL} ({type(exc).__name__}). "
            "Is it running? Start it with `grader run 6`, then reload this page."
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
    if response.status_code == 401:
        raise NotLoggedIn("Your session expired, log in again.")
    if response.status_code == 404:
        raise NotFound(
            "This conversation does not exist, or it belongs to another user. "
            "Send a message to start a new chat."
        )
    if response.status_code == 422:
        raise Rejected(
            f"The backend rejected {method} {path}: {_detail(response)}. "
            "Change your message and send it again."
        )
    if response.status_code == 409:  # a resend while the first try is still being answered
        raise Conflict(
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


def log_in(username: str, password: str) -> None:
    """Trade the username and password for a token (OAuth2's password flow: a form, not JSON).
    The page keeps the token, never the password."""
    try:
        answer = backend("POST", "/token", data={"username": username, "password": password})
    except NotLoggedIn:
        raise BackendProblem("Wrong username or password. Check both and try again.") from None
    st.session_state.token = answer.json()["access_token"]
    st.session_state.username = username


def register(username: str, password: str) -> None:
    """Create the account, then log in with it at once: nobody wants to type it all twice."""
    try:
        backend("POST", "/users", json={"username": username, "password": password})
    except Conflict:
        raise BackendProblem(
            f"The username {as_code(username)} is taken. Pick another one."
        ) from None
    except Rejected:
        raise BackendProblem(
            "Pick a username of 3 to 64 letters, digits, `_`, `.` or `-`, "
            "and a password of 8 to 128 characters."
        ) from None
    log_in(username, password)


def forget_threads() -> None:
    """Drop the loaded thread list: the next run loads its first page again, fresh."""
    st.session_state.pop("threads", None)
    st.session_state.pop("next_cursor", None)


def log_out() -> None:
    """Forget the token and what was loaded with it. The thread id stays in the URL: it opens
    the thread only for its owner, whoever logs in next."""
    st.session_state.pop("token", None)
    st.session_state.pop("username", None)
    forget_threads()


def show_login_forms() -> None:
    """The visitor's page: log in, or register (and be logged in). Once logged in, run again."""
    if reason := st.session_state.pop("logged_out_because", None):
        st.warning(reason)
    login_tab, register_tab = st.tabs(["Log in", "Register"])
    with login_tab, st.form("login"):
        login_username = st.text_input("Username", key="login_username")
        login_password = st.text_input("Password", type="password", key="login_password")
        logging_in = st.form_submit_button("Log in")
    with register_tab, st.form("register"):
        register_username = st.text_input("Username", key="register_username")
        register_password = st.text_input("Password", type="password", key="register_password")
        registering = st.form_submit_button("Register")
    if not (logging_in or registering):
        return
    try:
        if logging_in:
            log_in(login_username, login_password)
        else:
            register(register_username, register_password)
    except BackendProblem as exc:
        st.error(str(exc))
        return
    st.rerun()  # draw the page again, logged in (Streamlit then forgets the forms' passwords)


def load_threads(cursor: str | None = None) -> None:
    """One page of the user's threads, newest first, after those already loaded. The list and
    the cursor of the next page live in st.session_state, so a rerun does not ask again."""
    params = {"cursor": cursor} if cursor else {}
    page = backend("GET", "/threads", params=params).json()
    st.session_state.threads = st.session_state.get("threads", []) + page["threads"]
    st.session_state.next_cursor = page["next_cursor"]


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


if "token" not in st.session_state:
    show_login_forms()
    st.stop()  # a visitor gets the forms only: no chat, no threads

st.caption("Try “roll 2d6+1”, “tell me about the dragon”, or “what was my first message?”.")
# The widgets come first and outside any `try`, so they exist on every run, whatever fails.
with st.sidebar:
    st.caption(f"Logged in as {as_code(st.session_state.username)}")
    logout = st.button("Log out", key="logout")
    show_telemetry = st.toggle("Show tool calls", value=True, key="show_tool_telemetry")
    new_chat = st.button("New chat", key="new_chat")
    clear = st.button("Clear history", key="clear_history")
prompt = st.chat_input("Say something to the game master")

if logout:
    log_out()
    st.rerun()  # draw the page again, as a visitor's

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
        forget_threads()  # the backend's list may have changed with it: load it afresh
        st.toast("History cleared. Your next message starts a new chat.")
    st.sidebar.caption(
        f"Thread {as_code(thread_id)}"
        if thread_id
        else "A new chat starts with your first message."
    )
    if "threads" not in st.session_state:
        load_threads()
    with st.sidebar:
        st.subheader("Your chats")
        for thread in st.session_state.threads:
            # A title is the user's own words: as_label keeps Markdown in it from rendering.
            # (It may also be blank: a prompt's first characters can all be spaces.)
            st.button(
                as_label(thread["title"]) or "Untitled chat",
                key=f"thread_{thread['thread_id']}",
                # Before the next run: that run finds this thread in the URL, like a link.
                on_click=remember_thread_id,
                args=(thread["thread_id"],),
            )
        if st.session_state.next_cursor and st.button("Load more", key="load_more_threads"):
            load_threads(st.session_state.next_cursor)
            st.rerun()  # draw the list again, one page longer
    if thread_id:
        for message in fetch_history(thread_id):
            render(message, show_telemetry)
    if prompt:
        with st.chat_message("user"):
            st.text(prompt)
        with st.spinner("The game master is thinking…"):
            remember_thread_id(send_prompt(prompt, thread_id))
        forget_threads()  # the thread of this turn is now the newest: load the list afresh
        st.rerun()  # draw the page again, from /history, with this turn in it
except NotLoggedIn as exc:
    log_out()
    st.session_state.logged_out_because = str(exc)
    st.rerun()  # draw the login form, with the reason, instead of the chat
except NotFound as exc:
    st.query_params.pop("thread_id", None)  # not the caller's thread: the next message starts one
    forget_threads()  # the list was read before: read it again
    st.error(str(exc))
except BackendProblem as exc:
    st.error(str(exc))
except NotImplementedError as exc:
    st.error(f"{exc} is not done yet: finish it in frontend/app.py, then reload the page.")
