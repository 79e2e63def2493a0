"""Plumbing for the browser tests: run a chapter's app as a learner would, drive it in Chromium.

    from browser import launch_browser, run_app, wait_for_chat_input

    with run_app(1) as (backend_url, frontend_url), launch_browser() as browser:
        page = browser.new_page()
        page.goto(frontend_url)
        wait_for_chat_input(page).fill("roll 2d6+1")

`run_app` starts `python -m grader run N` (the command behind the README's first step) on free
ports, in its own process group, and stops it by PID (with `running`, which test_docs_browser.py
uses for its docs server too). `launch_browser` uses Debian's Chromium at /usr/bin/chromium
through Playwright; it never downloads a browser. Without Chromium or Playwright the test is
skipped locally and fails when `CI` is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from procwatch import ctrl_c_possible

from grader.toolkit.procs import pid_alive

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"  # git-ignored: screenshots and logs of the browser tests
CHROMIUM = os.environ.get("GRADER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT = float(os.environ.get("GRADER_STARTUP_TIMEOUT", "60"))
UI_TIMEOUT_MS = 30_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have it (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; the fields after the last ")" don't.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.parent.name))
    return found


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop `grader run` (or any process `running` started) the way Ctrl-C does.

    `grader run` starts the backend and the page each in a session of its own, so signalling its
    process group does not reach them: SIGINT lets it stop them itself. Whatever is still alive
    after `grace` seconds (its group, and the groups of the children it started) is killed, by
    PID.
    """
    children = _children(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for child in children:
        if pid_alive(child):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)


def _wait_until(
    what: str, url: str, proc: subprocess.Popen[bytes], log: Path, program: str
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"`{program}` exited with code {proc.returncode} before the {what} was "
                    f"up:\n{log.read_text(errors='replace')[-3000:]}",
                    pytrace=False,
                )
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
    pytest.fail(
        f"the {what} did not answer {url} within {STARTUP_TIMEOUT:.0f} s (last: {last}):\n"
        f"{log.read_text(errors='replace')[-3000:]}",
        pytrace=False,
    )


@contextlib.contextmanager
def running(
    cmd: list[str],
    log_path: Path,
    ready: dict[str, str],
    cwd: Path,
    env: dict[str, str] | None = None,
    program: str = "grader run",
) -> Iterator[None]:
    """Run `cmd` in a process group of its own for the `with` block, its output in `log_path`.

    Before the block, each of `ready` ({what: URL}) answers 200; if `program` exits or a URL
    does not answer in time, the test fails with the end of its log. It is stopped by PID after.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    with log_path.open("wb") as log, ctrl_c_possible():
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for what, url in ready.items():
            _wait_until(what, url, proc, log_path, program)
        yield
    finally:
        _stop(proc)


@contextlib.contextmanager
def run_app(chapter: int, solution: bool = True) -> Iterator[tuple[str, str]]:
    """Start chapter `chapter` with `grader run`; yield `(backend_url, frontend_url)`.

    The backend answers /health and the page's Streamlit server is up before this yields.
    The app's output goes to test-artifacts/chNN-run.log.
    """
    backend_port, frontend_port = free_ports(2)
    cmd = [sys.executable, "-m", "grader", "run", str(chapter)]
    cmd += ["--solution"] if solution else []
    cmd += ["--backend-port", str(backend_port), "--frontend-port", str(frontend_port)]
    log_path = ARTIFACTS / f"ch{chapter:02d}-run.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ASSISTANT_PROVIDER": "offline"}
    # A fresh database per run: not the shell's DATABASE_URL, not a file in solutions/.
    db_dir = Path(tempfile.mkdtemp(prefix="browser-db-"))
    env["DATABASE_URL"] = f"sqlite:///{db_dir / 'messages.db'}"
    backend_url = f"http://127.0.0.1:{backend_port}"
    frontend_url = f"http://127.0.0.1:{frontend_port}"
    ready = {"backend": f"{backend_url}/health", "page": f"{frontend_url}/_stcore/health"}
    try:
        with running(cmd, log_path, ready, cwd=ROOT, env=env):
            yield backend_url, frontend_url
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)


@contextlib.contextmanager
def launch_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (no browser download, ever)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_chat_input(page: Page, timeout_ms: int = UI_TIMEOUT_MS) -> Locator:
    """The page's `st.chat_input` text area, once Streamlit has rendered it."""
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.wait_for(state="visible", timeout=timeout_ms)
    return box


def chat_messages(page: Page, role: str) -> Locator:
    """`st.chat_message(role)` blocks on the page; `role` is "user" or "assistant"."""
    avatar = "stChatMessageAvatarUser" if role == "user" else "stChatMessageAvatarAssistant"
    return page.locator('[data-testid="stChatMessage"]').filter(
        has=page.locator(f'[data-testid="{avatar}"]')
    )
