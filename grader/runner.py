"""`grader run N`: start a chapter's backend and frontend together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from grader.manifest import Chapter
from grader.toolkit.procs import stop_pid


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def database_url(db: str, target: Path) -> str:
    if db == "sqlite":
        # Relative to the chapter folder, where the backend runs: the file sits beside your code.
        return os.environ.get("DATABASE_URL", "sqlite:///./messages.db")
    from grader.dbservers.persistent import url_for_run

    return url_for_run(db)


def describe_database(url: str, cwd: Path) -> str:
    """The banner's word on DATABASE_URL: the SQLite file or the server, never a password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "DATABASE_URL is set to something that is not a database URL"
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return "SQLite in memory (gone when the backend stops)"
        # A relative path is relative to the chapter folder, where the backend runs.
        return f"SQLite file {(cwd / parsed.database).resolve()}"
    where = f"{parsed.host}:{parsed.port}" if parsed.port else f"{parsed.host} (default port)"
    return f"{parsed.get_backend_name()} at {where}, {parsed.render_as_string(hide_password=True)}"


def run_app(chapter: Chapter, target: Path, args: argparse.Namespace) -> int:
    for port, flag in (
        (args.backend_port, "--backend-port"),
        (args.frontend_port, "--frontend-port"),
    ):
        if not _port_free(port):
            print(f"grader: port {port} is already in use; stop what uses it or pass {flag} N")
            return 2
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    url = database_url(args.db, target)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BACKEND_URL": backend_url,
        "PYTHONUNBUFFERED": "1",
    }
    backend_cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1"]
    backend_cmd += ["--port", str(args.backend_port)]
    if args.workers:
        backend_cmd += ["--workers", str(args.workers)]
    frontend_cmd = [sys.executable, "-m", "streamlit", "run", "frontend/app.py"]
    frontend_cmd += ["--server.port", str(args.frontend_port), "--server.address", "127.0.0.1"]
    frontend_cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # `kill PID` (SIGTERM) must stop both children too, not leave them orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Starting chapter {chapter.number} ({chapter.title}) from {target}")
    procs: list[subprocess.Popen] = []
    try:
        backend = subprocess.Popen(backend_cmd, cwd=target, env=env, start_new_session=True)
        procs.append(backend)
        if not _wait_health(backend_url, backend):
            print("\ngrader: the backend did not come up; its error is printed above.")
            return 1
        frontend = subprocess.Popen(frontend_cmd, cwd=target, env=env, start_new_session=True)
        procs.append(frontend)
        print(
            f"\n  backend:  {backend_url}  (API docs: {backend_url}/docs)\n"
            f"  frontend: http://127.0.0.1:{args.frontend_port}\n"
            f"  database: {describe_database(url, target)}\n\n"
            f"Open the frontend and chat. Next: edit chapters/{chapter.slug}, then run "
            f"`grader check {chapter.number}` (in another terminal, after `source .venv/bin/activate`). "
            "Ctrl-C stops both.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("grader: a process stopped; stopping the other.")
        return 1
    except KeyboardInterrupt:
        print("\nStopping…")
        return 0
    finally:
        for p in procs:
            stop_pid(p)
