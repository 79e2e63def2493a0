"""The one reader of a learner's Streamlit page, driven with Streamlit's `AppTest`.

AppTest runs the page's script in this process, as a browser session would run it on the
server: `Page(...)` is a fresh session (a refresh, as far as Streamlit can tell), and `send`,
`click` and `toggle` are what a user does. Only AppTest's public API is used. Every action is a
step of the check's log; a crash, a timeout or an `st.error` fails the check unless the check
asked for errors (`allow_error=True`), and an `st.error` naming `TODO N.M` says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from grader.toolkit import steps
from grader.toolkit.expect import TODO_IN_TEXT, expect, fail, shorten

TIMEOUT = 30


@dataclass(frozen=True)
class Bubble:
    """One `st.chat_message`: who speaks (`user`, `assistant`, …) and every text inside it."""

    name: str
    text: str


@contextmanager
def _backend_env(backend_url: str) -> Iterator[None]:
    """The page reads BACKEND_URL from the environment, and AppTest runs it in this process."""
    old = os.environ.get("BACKEND_URL")
    os.environ["BACKEND_URL"] = backend_url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BACKEND_URL", None)
        else:
            os.environ["BACKEND_URL"] = old


def _texts(nodes: Any) -> list[str]:
    """The text of every element under `nodes`, whichever element the page drew it with:
    values (markdown, caption, code, text, json, alerts) and labels (expanders, buttons)."""
    texts = []
    for node in nodes:
        for attr in ("value", "label"):
            try:
                value = getattr(node, attr, None)
            except Exception:  # some elements have no value to read
                continue
            if isinstance(value, str) and value.strip():
                texts.append(value)
    return texts


class Page:
    """A browser session on `chapter_dir/frontend/app.py`, talking to `backend_url`."""

    def __init__(
        self,
        chapter_dir: Path,
        backend_url: str,
        query: dict[str, str] | None = None,
        allow_error: bool = False,
    ) -> None:
        self.backend_url = backend_url
        self.at = AppTest.from_file(
            str(chapter_dir / "frontend" / "app.py"), default_timeout=TIMEOUT
        )
        for key, value in (query or {}).items():
            self.at.query_params[key] = value
        shown = "".join(f"?{k}={v}" for k, v in (query or {}).items())
        self._run(f"open the page{shown}", allow_error)

    def _run(self, what: str, allow_error: bool) -> Page:
        steps.record(f"page: {what}")
        with _backend_env(self.backend_url):
            try:
                self.at.run(timeout=TIMEOUT)
            except RuntimeError as exc:  # AppTest's way of saying the script timed out
                fail(f"the page did not finish ({what}) within {TIMEOUT} s", actual=str(exc))
        if self.at.exception:
            first = self.at.exception[0]
            fail(
                f"the page crashed ({what})",
                expected="a page without an exception (show st.error for a backend problem)",
                actual=shorten(f"{first.message}\n" + "\n".join(first.stack_trace[-6:]), 1200),
            )
        if self.errors and not allow_error:
            todo = next((m.group(0) for e in self.errors if (m := TODO_IN_TEXT.search(e))), None)
            if todo:
                fail(
                    f"the page reached {todo}, which is not done yet ({what})",
                    actual=self.errors[0],
                )
            fail(f"the page shows an error ({what})", expected="no st.error", actual=self.errors[0])
        return self

    def rerun(self, what: str = "run the page again") -> Page:
        """Run the script again, as Streamlit does on any interaction."""
        return self._run(what, allow_error=False)

    def send(self, prompt: str, allow_error: bool = False) -> Page:
        if not self.at.chat_input:
            fail("the page has no st.chat_input to type a message in")
        self.at.chat_input[0].set_value(prompt)
        return self._run(f"send {shorten(prompt, 60)!r}", allow_error)

    def click(self, key: str) -> Page:
        try:
            button = self.at.button(key=key)
        except KeyError:
            fail(
                f"the page has no st.button with key={key!r} (the chapter names its widget keys)",
                actual=[b.key for b in self.at.button],
            )
        button.click()
        return self._run(f"click {key!r}", allow_error=False)

    def toggle(self, key: str, value: bool) -> Page:
        try:
            widget = self.at.toggle(key=key)
        except KeyError:
            fail(f"the page has no st.toggle with key={key!r} (the chapter names its widget keys)")
        widget.set_value(value)
        return self._run(f"turn {key!r} {'on' if value else 'off'}", allow_error=False)

    def fill(self, key: str, value: str) -> Page:
        """Type `value` into the text input `key` (it reaches the script on the next run)."""
        try:
            widget = self.at.text_input(key=key)
        except KeyError:
            fail(
                f"the page has no st.text_input with key={key!r} (the chapter names its widget keys)",
                actual=[t.key for t in self.at.text_input],
            )
        widget.input(value)
        steps.record(f"page: type into {key!r}")
        return self

    def submit(self, label: str, allow_error: bool = False) -> Page:
        """Press the form's submit button labelled `label`."""
        found = [b for b in self.at.button if b.label == label]
        if not found:
            fail(
                f"the page has no button labelled {label!r} (a form's st.form_submit_button)",
                actual=[b.label for b in self.at.button],
            )
        found[0].click()
        return self._run(f"press {label!r}", allow_error)

    def has_text_input(self, key: str) -> bool:
        return any(t.key == key for t in self.at.text_input)

    def button_keys(self, prefix: str = "") -> list[str]:
        """The keys of the page's buttons that start with `prefix`, top to bottom (sidebar too)."""
        return [b.key for b in self.at.button if b.key and b.key.startswith(prefix)]

    def session_values(self) -> dict[str, Any]:
        """What the session keeps (st.session_state), by key: where a page keeps its secrets."""
        return self.at.session_state.to_dict()

    @property
    def query(self) -> dict[str, Any]:
        return dict(self.at.query_params)

    @property
    def errors(self) -> list[str]:
        return [str(e.value) for e in self.at.error]

    @property
    def bubbles(self) -> list[Bubble]:
        """Every st.chat_message, top to bottom, with all the text drawn inside it."""
        return [Bubble(m.name, "\n".join(_texts(m))) for m in self.at.chat_message]

    def texts(self) -> list[str]:
        """Every piece of text on the page, main area and sidebar."""
        return _texts([*self.at.main, *self.at.sidebar])


def bubble_listing(bubbles: list[Bubble]) -> str:
    """The page's chat messages, one short numbered line each, for the report."""
    if not bubbles:
        return "(no chat messages on the page)"
    return "\n".join(
        f"{n}. {b.name}: {shorten(' '.join(b.text.split()), 80)}" for n, b in enumerate(bubbles, 1)
    )


def since_last_user(bubbles: list[Bubble]) -> str:
    """The text of every bubble after the last user bubble: the answer to the last prompt,
    whether the page draws it in one assistant bubble or one bubble per message."""
    last = max((i for i, b in enumerate(bubbles) if b.name == "user"), default=-1)
    return "\n".join(b.text for b in bubbles[last + 1 :])


def missing_from_page(bubbles: list[Bubble], messages: list[dict[str, Any]]) -> str | None:
    """The first user or model text of `messages` the page does not show in order, if any.

    User texts must be in `user` bubbles; model texts in any other bubble (several may share one
    bubble, or each have its own). Tool telemetry is not looked at here.
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
            while j < len(bubbles) and not (
                (bubbles[j].name == "user") == (m["role"] == "user") and text in bubbles[j].text
            ):
                j += 1
            if j == len(bubbles):
                return f"{m['role']}: {text}"
            i = j + 1 if m["role"] == "user" else j
    return None


def expect_shows(page: Page, messages: list[dict[str, Any]], rationale: str) -> None:
    """Fail with `rationale` unless the page shows every user and model text of `messages`."""
    missing = missing_from_page(page.bubbles, messages)
    expect(
        missing is None,
        rationale,
        expected=f"every message, in order; missing {shorten(missing or '', 120)!r}",
        actual=bubble_listing(page.bubbles),
    )
