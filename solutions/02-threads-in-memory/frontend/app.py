"""Chapter 2: a Streamlit chat page that talks to one thread on the backend.

The page keeps the thread id and the thread's messages in `st.session_state`; the backend keeps
the thread too, in its own memory. Tool calls and their results are shown, labelled, inside the
assistant's chat bubble.
"""

import itertools
import json
import os

import httpx
import streamlit as st

BACKEND_URL = os.environ.get("BACKEND_URL", "http://localhost:8000")

st.set_page_config(page_title="Make It Scale — chapter 2", page_icon="🎲")
st.title("🎲 Game master")
st.caption("Try “roll 2d6+1”, “tell me about the dragon”, or “what was my first message?”.")


def as_code(text: str) -> str:
    """`text` as Markdown inline code, which st.error and st.caption show as typed (no links,
    images or HTML). On one line and without backticks, nothing in it can end the code early."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"


# --8<-- [start:session]
if "thread_id" not in st.session_state:
    st.session_state.thread_id = None  # None until the backend starts a thread for us
    st.session_state.messages = []  # the thread's messages, as the backend sent them
# --8<-- [end:session]


# --8<-- [start:new-chat]
with st.sidebar:
    if st.button("New chat", key="new_chat", icon="➕"):
        # Forget the thread: the next message goes out with thread_id null, and the backend
        # starts a new one. The old thread is still on the backend, under its own id.
        st.session_state.thread_id = None
        st.session_state.messages = []
    st.caption(
        f"Thread {as_code(st.session_state.thread_id)}"
        if st.session_state.thread_id
        else "A new thread starts with your first message."
    )
# --8<-- [end:new-chat]


# --8<-- [start:render]
def show_part(part: dict) -> None:
    # Every text is shown as typed: st.markdown would obey Markdown in a prompt (or in a reply
    # quoting it), and ![x](http://...) would make every viewer's browser fetch that image.
    if "text" in part:
        st.text(part["text"])
    elif "function_call" in part:
        call = part["function_call"]
        args = json.dumps(call.get("args", {}))
        st.caption(f"🔧 Calling tool {as_code(call['name'])} with {as_code(args)}")
    elif "function_response" in part:
        answer = part["function_response"]
        result = json.dumps(answer.get("response"))
        st.caption(f"🔧 Tool {as_code(answer['name'])} answered {as_code(result)}")


def speaker(message: dict) -> str:
    return "user" if message["role"] == "user" else "assistant"


def show(messages: list[dict]) -> None:
    """The user's messages in their own bubbles; each run of model and tool messages (the
    tool telemetry, then the answer) in one assistant bubble."""
    for name, group in itertools.groupby(messages, key=speaker):
        with st.chat_message(name):
            for message in group:
                for part in message["parts"]:
                    show_part(part)


# --8<-- [end:render]


# --8<-- [start:ask]
def ask_backend(prompt: str) -> dict:
    """POST the prompt to the current thread; the backend answers the turn's messages."""
    response = httpx.post(
        f"{BACKEND_URL}/chat",
        json={"prompt": prompt, "thread_id": st.session_state.thread_id},
        timeout=30,
    )
    response.raise_for_status()
    reply = response.json()
    if not isinstance(reply, dict) or "thread_id" not in reply or "messages" not in reply:
        raise ValueError(f"expected {{thread_id, messages}}, got {str(reply)[:200]}")
    return reply


# --8<-- [end:ask]


def backend_detail(response: httpx.Response) -> str:
    """The `detail` of an error answer, readable: FastAPI's 422 lists one entry per problem."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(
            f"{(problem.get('loc') or ['?'])[-1]}: {problem.get('msg')}"
            if isinstance(problem, dict)
            else str(problem)
            for problem in detail
        )
    return str(detail)


def what_to_do(status: int) -> str:
    if status == 501:
        return "Finish that TODO, then send your message again."
    if status < 500:
        return "Change your message and send it again."
    return "Check the backend's terminal for its log, then try again."


show(st.session_state.messages)

if prompt := st.chat_input("Say something to the game master", max_chars=8000):
    show([{"role": "user", "parts": [{"text": prompt}]}])
    try:
        with st.spinner("The game master is thinking…"):
            reply = ask_backend(prompt)
        show(reply["messages"][1:])  # [0] is the user's message, drawn above
    except NotImplementedError as exc:
        st.error(f"{exc} is not done yet: finish it, then send your message again.")
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        detail = as_code(backend_detail(exc.response))  # it may echo the prompt: no Markdown
        st.error(f"The backend answered {status}: {detail}. {what_to_do(status)}")
    except httpx.HTTPError as exc:
        st.error(
            f"Could not reach the backend at {BACKEND_URL} ({type(exc).__name__}). "
            "Is it running? Start it with `grader run 2`."
        )
    except (KeyError, TypeError, ValueError) as exc:
        st.error(
            f"The backend answered something this page doesn't understand ({as_code(str(exc))}). "
            "Check that POST /chat answers {thread_id, messages}."
        )
    else:
        # Only a turn the backend accepted joins the conversation on the page. Rerun, so the
        # whole page (the thread id in the sidebar too) is drawn from the new state.
        st.session_state.thread_id = reply["thread_id"]
        st.session_state.messages += reply["messages"]
        st.rerun()
