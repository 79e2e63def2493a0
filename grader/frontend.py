"""Drive a learner's Streamlit page with Streamlit's AppTest, as a browser session would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamlit.testing.v1 import AppTest

from grader.check import fail, shorten

PAGE_TIMEOUT = 30


@contextmanager
def backend_env(backend_url: str) -> Iterator[None]:
    """AppTest runs the page in this process, so the page reads BACKEND_URL from our environ."""
    old = os.environ.get("BACKEND_URL")
    os.environ["BACKEND_URL"] = backend_url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BACKEND_URL", None)
        else:
            os.environ["BACKEND_URL"] = old


def _run(at: AppTest, what: str) -> AppTest:
    try:
        at.run(timeout=PAGE_TIMEOUT)
    except RuntimeError as exc:  # AppTest raises RuntimeError when a run times out
        fail(f"the page did not finish {what} within {PAGE_TIMEOUT} s", actual=str(exc))
    if at.exception:
        first = at.exception[0]
        message = first.message or ""
        fail(
            f"the page crashed while {what}",
            expected="a page without an exception (show st.error for a backend problem)",
            actual=shorten(f"{message}\n" + "\n".join(first.stack_trace[-6:]), 1200),
        )
    return at


def open_page(
    chapter_dir: Path, backend_url: str, query_params: dict[str, str] | None = None
) -> AppTest:
    """A fresh browser session on the page (a refresh, as far as Streamlit can tell)."""
    at = AppTest.from_file(str(chapter_dir / "frontend" / "app.py"), default_timeout=PAGE_TIMEOUT)
    for key, value in (query_params or {}).items():
        at.query_params[key] = value
    with backend_env(backend_url):
        return _run(at, "loading")


def send(at: AppTest, backend_url: str, prompt: str) -> AppTest:
    if not at.chat_input:
        fail("the page has no st.chat_input to type a message in")
    at.chat_input[0].set_value(prompt)
    with backend_env(backend_url):
        return _run(at, f"sending {prompt!r}")


def rendered_messages(at: AppTest) -> list[tuple[str, str]]:
    """`[(name, text), ...]` for every st.chat_message on the page, top to bottom."""
    out = []
    for message in at.chat_message:
        texts = [m.value for m in message.markdown]
        texts += [c.value for c in message.code]
        texts += [c.value for c in message.caption]
        out.append((message.name, "\n".join(str(t) for t in texts)))
    return out


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]
