"""Chapter 6's promise, in a real browser: conversations a chapter 4 backend stored, upgraded by
`alembic upgrade head`, are served to their owner in chapter 6's page, and to nobody else.

The chapter 4 solution (a real uvicorn process) writes two conversations into a SQLite file;
chapter 6's migrations upgrade the file with `LEGACY_OWNER`; `grader run 6 --solution` serves
it. In Chromium the owner logs in, finds both threads in the sidebar, opens one and reads it
whole; a reload (a new Streamlit session: the token is gone) asks for the login again and then
reopens the same thread from the URL; a newcomer sees none of it. Screenshots go to
test-artifacts/ch06-*.png, the app's output to ch06-run.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from browser import (
    ARTIFACTS,
    ROOT,
    UI_TIMEOUT_MS,
    chat_messages,
    free_ports,
    launch_browser,
    running,
    wait_for_chat_input,
)

from grader.toolkit.procs import Backend

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CH4, CH6 = (
    ROOT / "solutions" / "04-choosing-a-database",
    ROOT / "solutions" / "06-users-and-migrations",
)
FIRST = "Hello! I am Ada, and I chatted here before there were users."
OWNER, PASSWORD = "ada_lovelace", "analytical-engine-1843"


def chat_on_chapter_4(url: str, workdir: Path) -> tuple[str, str]:
    """Two conversations stored by the chapter 4 solution: (the first thread, the second)."""
    backend = Backend(CH4, workdir, env={"DATABASE_URL": url, "ASSISTANT_PROVIDER": "offline"})
    backend.start()
    try:
        with httpx.Client(base_url=backend.url, timeout=30) as client:
            first = client.post("/chat", json={"prompt": FIRST}).json()["thread_id"]
            client.post("/chat", json={"prompt": "roll 2d6+1", "thread_id": first})
            second = client.post("/chat", json={"prompt": "A second conversation"}).json()
        return first, second["thread_id"]
    finally:
        backend.stop()


def log_in(page: Page, username: str, password: str) -> None:
    form = page.locator('[data-testid="stForm"]').first
    form.get_by_role("textbox", name="Username").fill(username)
    form.get_by_role("textbox", name="Password").fill(password)
    form.get_by_role("button", name="Log in").click()


def open_thread(page: Page, thread_id: str) -> None:
    page.locator(f".st-key-thread_{thread_id} button").click()


def shows_first_thread(page: Page) -> None:
    from playwright.sync_api import expect

    expect(chat_messages(page, "user").filter(has_text=FIRST)).to_have_count(
        1, timeout=UI_TIMEOUT_MS
    )
    expect(chat_messages(page, "assistant").filter(has_text="You rolled 2d6+1")).to_have_count(
        1, timeout=UI_TIMEOUT_MS
    )
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_chapter_4_database_upgraded_is_served_to_its_owner(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path / 'messages.db'}"
    first, second = chat_on_chapter_4(url, tmp_path / "ch4")
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    env |= {"LEGACY_OWNER": OWNER, "LEGACY_OWNER_PASSWORD": PASSWORD}
    upgrade = [sys.executable, "-m", "alembic", "upgrade", "head"]
    done = subprocess.run(upgrade, cwd=CH6, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    backend_port, page_port = free_ports(2)
    cmd = [sys.executable, "-m", "grader", "run", "6", "--solution"]
    cmd += ["--backend-port", str(backend_port), "--frontend-port", str(page_port)]
    ready = {
        "backend": f"http://127.0.0.1:{backend_port}/health",
        "page": f"http://127.0.0.1:{page_port}/_stcore/health",
    }
    with running(cmd, ARTIFACTS / "ch06-run.log", ready, cwd=ROOT, env=env), launch_browser() as b:
        page = b.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(f"http://127.0.0.1:{page_port}")
        log_in(page, OWNER, PASSWORD)
        for thread in (first, second):
            expect(page.locator(f".st-key-thread_{thread}")).to_have_count(1)
        open_thread(page, first)
        shows_first_thread(page)
        assert f"thread_id={first}" in page.url
        page.screenshot(path=str(ARTIFACTS / "ch06-owner.png"), full_page=True)

        page.reload()  # a new session: logged out, the thread still in the URL
        log_in(page, OWNER, PASSWORD)
        shows_first_thread(page)
        wait_for_chat_input(page)
        assert "eyJ" not in page.url, "the token must never be in the URL"

        page.get_by_role("button", name="Log out").click()
        other = b.new_page()
        other.goto(f"http://127.0.0.1:{page_port}")
        register = other.locator('[data-testid="stForm"]').last
        other.get_by_role("tab", name="Register").click()
        register.get_by_role("textbox", name="Username").fill("newcomer")
        register.get_by_role("textbox", name="Password").fill("a-new-password")
        register.get_by_role("button", name="Register").click()
        wait_for_chat_input(other)
        for thread in (first, second):
            expect(other.locator(f".st-key-thread_{thread}")).to_have_count(0)
        other.screenshot(path=str(ARTIFACTS / "ch06-newcomer.png"), full_page=True)
