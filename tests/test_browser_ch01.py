"""The README's promise, in a real browser: one command brings up both services, /health is ok,
and a message typed in the page gets the assistant's answer."""

from __future__ import annotations

import httpx
import pytest
from browser import ARTIFACTS, chat_messages, launch_browser, run_app, wait_for_chat_input

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_chapter_1_chat_in_a_real_browser() -> None:
    with run_app(1, solution=True) as (backend_url, frontend_url), launch_browser() as browser:
        health = httpx.get(f"{backend_url}/health", timeout=5)
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok"}

        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(frontend_url)
        box = wait_for_chat_input(page)
        box.click()
        box.press_sequentially("roll 2d6+1")
        box.press("Enter")

        user = chat_messages(page, "user").filter(has_text="roll 2d6+1")
        user.first.wait_for(state="visible", timeout=30_000)
        answer = chat_messages(page, "assistant").filter(has_text="You rolled 2d6+1")
        answer.first.wait_for(state="visible", timeout=30_000)
        assert answer.count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stAlert"]').count() == 0

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ch01-chat.png"), full_page=True)
