"""Chapter 5's promise, in a real browser: three instances behind nginx, on Postgres, serve one
conversation, and it goes on when one instance is killed.

`grader run 5 --solution --instances 3 --db postgres` starts the instances, nginx in front of
them and the page, which talks to nginx only. The test chats, reloads, SIGKILLs an instance,
chats again and reloads again: every message is still there and the assistant still quotes the
first one. Screenshots go to test-artifacts/ch05-*.png, the app's output to ch05-run.log.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

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

from grader.dbservers.binaries import binaries_available
from grader.dbservers.start import start
from grader.toolkit.balancer import nginx_binary

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.databases,
    pytest.mark.xdist_group("browser"),
]

INSTANCE = re.compile(r"instance \d+: http://127\.0\.0\.1:(\d+)\s+\(PID (\d+)\)")
FIRST = "Hello! I am Ada, and any instance may answer me."


@contextmanager
def three_instances_on_postgres() -> Iterator[tuple[str, list[int]]]:
    """`grader run 5 --instances 3 --db postgres` on a throwaway server: (page URL, PIDs)."""
    if nginx_binary() is None or not binaries_available("postgres"):
        if os.environ.get("CI"):
            pytest.fail("CI must have nginx and postgresql (.ci/run installs them)")
        pytest.skip("needs Debian's nginx and postgresql packages")
    server = start("postgres")
    try:
        url = server.create_database("browser_ch05")
        nginx_port, page_port = free_ports(2)
        cmd = [sys.executable, "-m", "grader", "run", "5", "--solution", "--instances", "3"]
        cmd += ["--db", "postgres", "--backend-port", str(nginx_port)]
        cmd += ["--frontend-port", str(page_port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATABASE_URL": url}
        log_path = ARTIFACTS / "ch05-run.log"
        ready = {
            "nginx": f"http://127.0.0.1:{nginx_port}/health",
            "page": f"http://127.0.0.1:{page_port}/_stcore/health",
        }
        with running(cmd, log_path, ready, cwd=ROOT, env=env):
            pids = [int(pid) for _, pid in INSTANCE.findall(log_path.read_text())]
            assert len(pids) == 3, log_path.read_text()
            yield f"http://127.0.0.1:{page_port}", pids
    finally:
        server.stop()


def send(page: Page, prompt: str, answer: str) -> None:
    box = wait_for_chat_input(page)
    box.click()
    box.press_sequentially(prompt)
    box.press("Enter")
    settled(page, answer)


def settled(page: Page, answer: str) -> None:
    """The assistant's `answer` is on the page, the rerun is over, and no error was drawn."""
    from playwright.sync_api import expect

    expect(chat_messages(page, "assistant").filter(has_text=answer)).to_have_count(
        1, timeout=UI_TIMEOUT_MS
    )
    expect(page.locator('[data-testid="stSpinner"]')).to_have_count(0, timeout=UI_TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    alerts = page.locator('[data-testid="stAlert"]')
    assert alerts.count() == 0, alerts.all_inner_texts()


def test_three_instances_behind_nginx_keep_one_conversation_when_one_is_killed() -> None:
    with three_instances_on_postgres() as (page_url, pids), launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(page_url)
        send(page, FIRST, "Hello, traveller!")
        send(page, "roll 2d6+1", "You rolled 2d6+1")
        page.screenshot(path=str(ARTIFACTS / "ch05-chat.png"), full_page=True)

        page.reload()
        settled(page, "You rolled 2d6+1")
        assert chat_messages(page, "user").count() == 2

        os.killpg(pids[0], signal.SIGKILL)
        time.sleep(0.5)  # nginx notices on the next connection it tries
        send(page, "how many messages have I sent?", "You have sent 3 messages")
        send(page, "what was my first message?", f'Your first message was: "{FIRST}"')

        page.reload()
        settled(page, f'Your first message was: "{FIRST}"')
        assert chat_messages(page, "user").count() == 4
        page.screenshot(path=str(ARTIFACTS / "ch05-after-kill.png"), full_page=True)
