"""Chapter 3's promise, in a real browser: the page holds nothing but a thread id in the URL.

Chat (a plain prompt and a dice roll), reload the page: the URL still names the thread and every
message is drawn again from the backend's database. The telemetry toggle shows and hides the
tool call and the tool's answer, and never the text around them. Screenshots of each step go to
test-artifacts/ch03-*.png.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import httpx
import pytest
from browser import (
    ARTIFACTS,
    UI_TIMEOUT_MS,
    chat_messages,
    launch_browser,
    run_app,
    wait_for_chat_input,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

THREAD_IN_URL = re.compile(r"[?&]thread_id=([0-9a-f-]{36})")
PROMPTS = ["tell me about the dragon", "roll 2d6+1"]
CALL_TEXT = "Calling tool roll_dice(count=2, sides=6, modifier=1)"
ANSWER_TEXT = "Tool roll_dice answered"


def _count(locator: Locator, n: int) -> None:
    """Wait (bounded) until `locator` matches exactly `n` elements."""
    from playwright.sync_api import expect

    expect(locator).to_have_count(n, timeout=UI_TIMEOUT_MS)


def _messages(page: Page, has_text: str | None = None) -> Locator:
    """Every `st.chat_message` block (user, assistant and tool), optionally holding `has_text`."""
    blocks = page.locator('[data-testid="stChatMessage"]')
    return blocks.filter(has_text=has_text) if has_text else blocks


def _send(page: Page, prompt: str) -> None:
    box = wait_for_chat_input(page)
    box.click()
    box.press_sequentially(prompt)
    box.press("Enter")


def _settled(page: Page) -> None:
    """The last rerun is over (no spinner, nothing stale) and it drew no error."""
    _count(page.locator('[data-testid="stSpinner"]'), 0)
    _count(page.locator('[data-stale="true"]'), 0)
    assert page.locator('[data-testid="stException"]').count() == 0
    alerts = page.locator('[data-testid="stAlert"]')
    assert alerts.count() == 0, alerts.all_inner_texts()


def _set_telemetry(page: Page, on: bool) -> None:
    """Flip the sidebar's `show_tool_telemetry` toggle until it is `on`, as a user would."""
    from playwright.sync_api import expect

    widget = page.locator(".st-key-show_tool_telemetry")
    switch = widget.get_by_role("switch", name="Show tool calls")
    if switch.is_checked() != on:
        widget.get_by_text("Show tool calls").click()
    expect(switch).to_be_checked(checked=on, timeout=UI_TIMEOUT_MS)
    _settled(page)


def test_chapter_3_history_survives_a_reload_and_the_toggle_hides_only_telemetry() -> None:
    with run_app(3, solution=True) as (backend_url, frontend_url), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        ARTIFACTS.mkdir(exist_ok=True)

        page.goto(frontend_url)
        wait_for_chat_input(page)
        assert not THREAD_IN_URL.search(page.url), f"a fresh page names no thread: {page.url}"

        _send(page, PROMPTS[0])
        _count(chat_messages(page, "assistant").filter(has_text="Vessarine"), 1)
        page.wait_for_url(THREAD_IN_URL)
        _send(page, PROMPTS[1])
        _count(chat_messages(page, "assistant").filter(has_text="You rolled 2d6+1"), 1)
        _settled(page)
        page.screenshot(path=str(ARTIFACTS / "ch03-chat.png"), full_page=True)

        match = THREAD_IN_URL.search(page.url)
        assert match, f"after a turn the URL carries ?thread_id=: {page.url}"
        thread_id = match.group(1)
        history = httpx.get(f"{backend_url}/history/{thread_id}", timeout=10).json()["messages"]
        roles = [m["role"] for m in history]
        assert roles == ["user", "model", "user", "model", "tool", "model"], roles
        texts = [p["text"] for m in history for p in m["parts"] if "text" in p]
        assert [texts[0], texts[2]] == PROMPTS, texts
        # The toggle starts on: the tool call and its answer are messages of their own.
        _count(_messages(page), len(history))

        # A reload is a new Streamlit session: nothing survives it but the URL.
        page.reload()
        wait_for_chat_input(page)
        reloaded = THREAD_IN_URL.search(page.url)
        assert reloaded and reloaded.group(1) == thread_id, page.url
        _count(_messages(page), len(history))
        _settled(page)
        for text in texts:
            _count(_messages(page, text), 1)
        _count(chat_messages(page, "user"), 2)
        _count(_messages(page, CALL_TEXT), 1)
        _count(_messages(page, ANSWER_TEXT), 1)
        page.screenshot(path=str(ARTIFACTS / "ch03-after-reload.png"), full_page=True)

        _set_telemetry(page, False)
        _count(_messages(page, CALL_TEXT), 0)
        _count(_messages(page, ANSWER_TEXT), 0)
        _count(_messages(page), len(texts))

        _set_telemetry(page, True)
        _count(_messages(page, CALL_TEXT), 1)
        rolls = history[4]["parts"][0]["function_response"]["response"]["rolls"]
        _count(_messages(page, ANSWER_TEXT).filter(has_text=f'"rolls": {json.dumps(rolls)}'), 1)
        _count(_messages(page), len(history))
        page.screenshot(path=str(ARTIFACTS / "ch03-telemetry.png"), full_page=True)

        _set_telemetry(page, False)
        _count(_messages(page, CALL_TEXT), 0)
        _count(_messages(page, ANSWER_TEXT), 0)
        _count(_messages(page), len(texts))
        for text in texts:
            _count(_messages(page, text), 1)
        page.screenshot(path=str(ARTIFACTS / "ch03-telemetry-off.png"), full_page=True)
