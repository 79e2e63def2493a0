"""`grader run N`: start a chapter's backend and frontend together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from grader.manifest import Chapter
from grader.toolkit.balancer import HOW_TO_GET, Balancer, BalancerUnavailable, nginx_binary
from grader.toolkit.procs import free_port, stop_pid


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


# Chapters 1 and 2 keep everything in process memory; chapter 3 brings the table.
FIRST_CHAPTER_WITH_A_DATABASE = 3


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


def migrate(target: Path, env: dict[str, str]) -> bool:
    """`alembic upgrade head` in a chapter with migrations (chapter 6 on), as its README says
    to run it: the backend refuses a database that is not at the newest migration."""
    if not (target / "alembic.ini").is_file():
        return True
    print("Upgrading the database: alembic upgrade head")
    command = [sys.executable, "-m", "alembic", "upgrade", "head"]
    done = subprocess.run(command, cwd=target, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        print("\ngrader: `alembic upgrade head` failed; its error is printed above.")
        return False
    return True


def run_app(chapter: Chapter, target: Path, args: argparse.Namespace) -> int:
    instances = getattr(args, "instances", 1)
    if instances < 1:
        print("grader: --instances must be 1 or more")
        return 2
    for port, flag in (
        (args.backend_port, "--backend-port"),
        (args.frontend_port, "--frontend-port"),
    ):
        if not _port_free(port):
            print(f"grader: port {port} is already in use; stop what uses it or pass {flag} N")
            return 2
    if instances > 1 and nginx_binary() is None:
        print(f"grader: --instances {instances}: {HOW_TO_GET}")
        return 2
    # With several instances the page talks to nginx, on --backend-port; the instances listen
    # on free ports behind it.
    backend_ports = (
        [args.backend_port] if instances == 1 else [free_port() for _ in range(instances)]
    )
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    url = database_url(args.db, target)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BACKEND_URL": backend_url,
        "PYTHONUNBUFFERED": "1",
    }
    dev_key = (target / "alembic.ini").is_file() and not os.environ.get("SECRET_KEY")
    if dev_key:
        # A chapter with users signs tokens with SECRET_KEY; on the learner's own machine the
        # published development key will do, and the banner says so.
        env["DEV_MODE"] = "1"
    if not migrate(target, env):
        return 1
    frontend_cmd = [sys.executable, "-m", "streamlit", "run", "frontend/app.py"]
    frontend_cmd += ["--server.port", str(args.frontend_port), "--server.address", "127.0.0.1"]
    frontend_cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # `kill PID` (SIGTERM) must stop both children too, not leave them orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Starting chapter {chapter.number} ({chapter.title}) from {target}")
    backends: list[subprocess.Popen] = []
    others: list[subprocess.Popen] = []
    balancer: Balancer | None = None
    try:
        for port in backend_ports:
            cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1"]
            cmd += ["--port", str(port)]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
            backends.append(subprocess.Popen(cmd, cwd=target, env=env, start_new_session=True))
        for port, backend in zip(backend_ports, backends, strict=True):
            if not _wait_health(f"http://127.0.0.1:{port}", backend):
                print("\ngrader: the backend did not come up; its error is printed above.")
                return 1
        lines = [f"  backend:  {backend_url}  (API docs: {backend_url}/docs)"]
        if instances > 1:
            folder = Path(tempfile.mkdtemp(prefix="grader-nginx-"))
            # Kept before it starts, so that `finally` removes its folder even when it fails to.
            balancer = Balancer(backend_ports, folder, "grader run", args.backend_port)
            balancer.start()
            lines = [
                f"  nginx:    {backend_url}  (round robin over {instances} instances)",
                *(
                    f"  instance {n}: http://127.0.0.1:{port}  (PID {b.pid})"
                    for n, (port, b) in enumerate(zip(backend_ports, backends, strict=True), 1)
                ),
            ]
        frontend = subprocess.Popen(frontend_cmd, cwd=target, env=env, start_new_session=True)
        others.append(frontend)
        lines.append(f"  frontend: http://127.0.0.1:{args.frontend_port}")
        if chapter.number >= FIRST_CHAPTER_WITH_A_DATABASE:
            lines.append(f"  database: {describe_database(url, target)}")
        if dev_key:
            lines.append(
                "  tokens:   signed with the public development key (DEV_MODE=1); set "
                "SECRET_KEY to use a key of your own"
            )
        print(
            "\n" + "\n".join(lines) + "\n\n"
            f"Open the frontend and chat. Next: edit chapters/{chapter.slug}, then run "
            f"`grader check {chapter.number}` (in another terminal, after `source .venv/bin/activate`). "
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        return _supervise(backends, frontend, backend_ports, balancer)
    except BalancerUnavailable as exc:
        print(f"grader: {exc}")
        return 1
    except KeyboardInterrupt:
        print("\nStopping…")
        return 0
    finally:
        if balancer is not None:
            balancer.stop()
            shutil.rmtree(balancer.folder, ignore_errors=True)
        for p in [*others, *backends]:
            stop_pid(p)


def _supervise(
    backends: list[subprocess.Popen],
    frontend: subprocess.Popen,
    ports: list[int],
    balancer: Balancer | None,
) -> int:
    """Wait until the page stops, or every backend has (one of several may stop: nginx routes
    around it, which is the point of running several)."""
    reported: set[int] = set()
    while frontend.poll() is None:
        for port, backend in zip(ports, backends, strict=True):
            if backend.poll() is not None and port not in reported:
                reported.add(port)
                if balancer is not None and len(reported) < len(backends):
                    print(f"grader: the instance on port {port} stopped; nginx routes around it.")
        if len(reported) == len(backends):
            print("grader: the backend stopped; stopping the page.")
            return 1
        time.sleep(0.5)
    print("grader: the page stopped; stopping the backend.")
    return 1
