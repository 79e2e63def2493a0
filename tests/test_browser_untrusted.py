"""The page treats every text as data (SPEC §2 "Robustness"), proved in a real browser.

A prompt holding a Markdown image and a Markdown link is shown as typed: the image's server gets
no request, and neither the user's bubble nor the assistant's (the offline assistant quotes a
prompt it does not understand) holds an <img> or an <a> made from it. From chapter 3 the thread
id comes from the URL: a crafted `?thread_id=` shows a friendly error, never a traceback or a
link, and reaches no other backend route. Clear history says so and starts a new conversation,
and the sidebar names the thread shown.

The AppTest tests at the end prove the same of every chapter's page against a fake backend, in
a second, without a browser.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest
from browser import ROOT, UI_TIMEOUT_MS, chat_messages, launch_browser, run_app, wait_for_chat_input

if TYPE_CHECKING:
    from playwright.sync_api import Page

SOLUTIONS = sorted((ROOT / "solutions").glob("0[1-4]-*"))
THREAD_IN_URL = re.compile(r"[?&]thread_id=([0-9a-f-]{36})")
NOT_A_CONVERSATION = "not a valid conversation"


class _Canary(BaseHTTPRequestHandler):
    """Counts every request: a page that shows text as text makes none."""

    def _any(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _any

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def canary() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 whose `.paths` lists the requests it got."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def attack_prompt(host: str) -> str:
    """A Markdown image and a Markdown link to `host`, short enough for the assistant to quote."""
    prompt = f"![x](http://{host}/p.png) [Log in](http://{host}/l)"
    assert len(prompt) <= 80, "the offline assistant quotes at most 80 characters"
    return prompt


def _settled(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stSpinner"]')).to_have_count(0, timeout=UI_TIMEOUT_MS)
    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=UI_TIMEOUT_MS)


def _send(page: Page, prompt: str) -> None:
    box = wait_for_chat_input(page)
    box.click()
    box.press_sequentially(prompt)
    box.press("Enter")


def _no_markup_from(page: Page, host: str) -> None:
    """No image or link on the page points at `host`, and no exception is drawn."""
    assert page.locator(f'img[src*="{host}"]').count() == 0, "an <img> was made from the text"
    links = page.locator(f'a[href*="{host}"]')
    assert links.count() == 0, f"a link was made from the text: {links.all_inner_texts()}"
    in_bubbles = page.locator('[data-testid="stChatMessage"] a, [data-testid="stChatMessage"] img')
    assert in_bubbles.count() == 0, "a chat message holds an <a> or an <img>"
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "KeyError" not in body, body[-1500:]


def _prompt_and_echo_are_text(page: Page, frontend_url: str, host: str) -> str:
    """Send the attack prompt; both bubbles show it literally. Returns the prompt."""
    from playwright.sync_api import expect

    prompt = attack_prompt(host)
    page.goto(frontend_url)
    _send(page, prompt)
    expect(chat_messages(page, "assistant").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    _settled(page)
    _no_markup_from(page, host)
    # The literal text, brackets and all, in the user's bubble and in the assistant's quote.
    expect(chat_messages(page, "user").filter(has_text=prompt)).to_have_count(1)
    echo = chat_messages(page, "assistant").filter(has_text=f'answer "{prompt}"')
    expect(echo).to_have_count(1)
    return prompt


@contextmanager
def chapter_in_a_browser(chapter: int) -> Iterator[tuple[ThreadingHTTPServer, Page, str, str]]:
    """A canary server, the chapter's app (backend and page), and a browser tab for it."""
    with (
        canary() as server,
        run_app(chapter) as (_, frontend_url),
        launch_browser() as browser,
    ):
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield server, page, frontend_url, f"127.0.0.1:{server.server_address[1]}"


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
@pytest.mark.parametrize("chapter", [1, 2])
def test_a_prompt_and_its_echo_show_as_typed(chapter: int) -> None:
    with chapter_in_a_browser(chapter) as (server, page, frontend_url, host):
        _prompt_and_echo_are_text(page, frontend_url, host)
        page.wait_for_timeout(500)  # an image the page did request would have arrived by now
        assert server.paths == [], f"the page made the browser fetch {server.paths}"


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
@pytest.mark.parametrize("chapter", [3, 4])
def test_text_links_and_clearing_on_a_url_thread_page(chapter: int) -> None:
    """Chapters 3–4: the prompt and its echo as text (after a reload too), the thread id in the
    sidebar, Clear history with feedback and a fresh conversation, and crafted links."""
    from playwright.sync_api import expect

    with chapter_in_a_browser(chapter) as (server, page, frontend_url, host):
        prompt = _prompt_and_echo_are_text(page, frontend_url, host)

        page.wait_for_url(THREAD_IN_URL)
        thread_id = THREAD_IN_URL.search(page.url).group(1)
        page.reload()  # drawn again from GET /history
        expect(chat_messages(page, "user").filter(has_text=prompt)).to_have_count(1)
        _settled(page)
        _no_markup_from(page, host)
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar).to_contain_text(thread_id)

        page.locator(".st-key-clear_history button").click()
        expect(page.get_by_text("History cleared")).to_be_visible()
        expect(chat_messages(page, "user")).to_have_count(0)
        expect(page).not_to_have_url(re.compile("thread_id="))
        expect(sidebar).not_to_contain_text(thread_id)

        crafted = {
            "a path": "../health",
            "a Markdown link": f"[Session expired, log in](http://{host}/l)",
            "HTML": f'<img src="http://{host}/i.png">',
        }
        for what, bad in crafted.items():
            page.goto(f"{frontend_url}/?{urlencode({'thread_id': bad})}")
            wait_for_chat_input(page)
            alerts = page.locator('[data-testid="stAlert"], [data-testid="stException"]')
            alerts.first.wait_for(state="visible")
            _settled(page)
            expect(page.locator('[data-testid="stAlert"]')).to_contain_text(NOT_A_CONVERSATION)
            assert page.locator('[data-testid="stAlert"] a').count() == 0, what
            _no_markup_from(page, host)
            expect(page.get_by_text("New chat").first).to_be_visible()

        page.wait_for_timeout(500)
        assert server.paths == [], f"the page made the browser fetch {server.paths}"


# --- AppTest: the same promises, every chapter, against a fake backend ---------------------------

EVIL = "![x](http://evil.invalid/p.png) [Session expired, log in](http://evil.invalid/l)"
THREAD = "3f2b8c1e-5d4a-4e6b-9c7d-1a2b3c4d5e6f"  # fixed: xdist workers must collect the same ids


class _FakeBackend(BaseHTTPRequestHandler):
    """Answers like a chapter's backend, and echoes the prompt in every reply."""

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _messages(self) -> list[dict]:
        return [
            {"role": "user", "parts": [{"text": EVIL}]},
            {"role": "model", "parts": [{"function_call": {"name": "t", "args": {"q": EVIL}}}]},
            {"role": "tool", "parts": [{"function_response": {"name": "t", "response": EVIL}}]},
            {"role": "model", "parts": [{"text": f"You said: {EVIL}"}]},
        ]

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        if self.path == f"/history/{THREAD}":
            self._json(200, {"thread_id": THREAD, "messages": self._messages()})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json(
            200, {"reply": f"You said: {EVIL}", "thread_id": THREAD, "messages": self._messages()}
        )

    def do_DELETE(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeBackend)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _markdown_bodies(page) -> list[str]:
    """Everything the page hands to Streamlit's Markdown renderer, sidebar and alerts included."""
    at = page.at
    bodies = [e.value for e in [*at.markdown, *at.caption, *at.error, *at.success, *at.info]]
    return [b for b in bodies if isinstance(b, str)]


def _no_live_markdown(page) -> None:
    """Nothing handed to Markdown holds the prompt's link or image outside inline code."""
    for body in _markdown_bodies(page):
        outside_code = re.sub(r"`[^`\n]*`", "", body)
        assert "evil.invalid" not in outside_code, body


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_the_page_shows_prompts_replies_and_telemetry_as_text(
    solution: Path, fake_backend: ThreadingHTTPServer
) -> None:
    from grader.toolkit.page import Page

    page = Page(solution, f"http://127.0.0.1:{fake_backend.server_address[1]}").send("hello")
    texts = "\n".join(b.text for b in page.bubbles)
    assert EVIL in texts, texts
    _no_live_markdown(page)


@pytest.mark.parametrize("solution", SOLUTIONS[2:], ids=lambda p: p.name)
@pytest.mark.parametrize(
    "bad", ["../health", "[text](http://evil.invalid/l)", f"{THREAD}/../../health", ""]
)
def test_a_crafted_thread_link_gets_a_friendly_error(
    solution: Path, bad: str, fake_backend: ThreadingHTTPServer
) -> None:
    from grader.toolkit.page import Page

    before = len(fake_backend.paths)
    url = f"http://127.0.0.1:{fake_backend.server_address[1]}"
    page = Page(solution, url, {"thread_id": bad}, allow_error=True)  # crashes fail here
    asked = fake_backend.paths[before:]
    assert asked == [], f"the page asked the backend {asked} for thread id {bad!r}"
    if bad:
        assert any(NOT_A_CONVERSATION in e for e in page.errors), page.errors
        _no_live_markdown(page)
    else:
        assert page.errors == []


@pytest.mark.parametrize("solution", SOLUTIONS[2:], ids=lambda p: p.name)
def test_clear_history_says_so_and_starts_a_new_conversation(
    solution: Path, fake_backend: ThreadingHTTPServer
) -> None:
    from grader.toolkit.page import Page

    url = f"http://127.0.0.1:{fake_backend.server_address[1]}"
    page = Page(solution, url, {"thread_id": THREAD})
    assert any(THREAD in t for t in page.texts()), "the sidebar does not name the thread"
    page.click("clear_history")
    assert f"/history/{THREAD}" in fake_backend.paths
    assert "thread_id" not in page.query, page.query
    assert not page.bubbles, page.bubbles
    feedback = [str(t.value) for t in page.at.toast] + [str(s.value) for s in page.at.success]
    assert any("History cleared" in f for f in feedback), feedback
    assert not any(THREAD in t for t in page.texts()), page.texts()
