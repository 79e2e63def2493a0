"""Chapter 1: a Streamlit chat page that sends each prompt to the backend.

The conversation lives in `st.session_state`, i.e. in this browser tab's session: refresh the
page and it is gone. Later chapters fix that.
"""

import os

import httpx
import streamlit as st

BACKEND_URL = os.environ.get("BACKEND_URL", "http://localhost:8000")

st.set_page_config(page_title="Make It Scale — chapter 1", page_icon="🎲")
st.title("🎲 Game master")
st.caption("Try “roll 2d6+1”, “tell me about the dragon”, or “help”.")

if "messages" not in st.session_state:
    st.session_state.messages = []  # [(role, text), ...] for this browser session only

for role, text in st.session_state.messages:
    with st.chat_message(role):
        # st.text shows the text as typed. st.markdown would obey Markdown in it: a prompt
        # holding ![x](http://...) would make every viewer's browser fetch that image.
        st.text(text)


def as_code(text: str) -> str:
    """`text` as Markdown inline code, which st.error and st.caption show as typed (no links,
    images or HTML). On one line and without backticks, nothing in it can end the code early."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"


def ask_backend(prompt: str) -> str:
    response = httpx.post(f"{BACKEND_URL}/chat", json={"prompt": prompt}, timeout=30)
    response.raise_for_status()
    return response.json()["reply"]


if prompt := st.chat_input("Say something to the game master"):
    st.session_state.messages.append(("user", prompt))
    with st.chat_message("user"):
        st.text(prompt)
    try:
        reply = ask_backend(prompt)
    except httpx.HTTPStatusError as exc:
        # The answer may echo the prompt: as_code keeps st.error from rendering it as Markdown.
        st.error(f"The backend answered {exc.response.status_code}: {as_code(exc.response.text)}")
    except httpx.HTTPError as exc:
        st.error(
            f"Could not reach the backend at {BACKEND_URL} ({type(exc).__name__}). "
            "Is it running? Start it with `grader run 1`."
        )
    else:
        st.session_state.messages.append(("assistant", reply))
        with st.chat_message("assistant"):
            st.text(reply)
