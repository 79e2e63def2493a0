"""The learner's own server, `grader db up|down`: it outlives the command, found again by its PID.

Its data lives in `.grader/db/<kind>/` (git-ignored), its state (PID, port, URL) in
`server.json` there. It uses the fixed user, password and port of the compose profiles, so one
DATABASE_URL works for both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.dbservers.errors import DatabaseUnavailable
from grader.dbservers.server import STOP_GRACE, first_signal, forget
from grader.dbservers.start import start
from grader.dbservers.urls import (
    LABELS,
    LEARNER_DATABASE,
    LEARNER_PASSWORD,
    LEARNER_PORTS,
    LEARNER_USER,
    kind_of_url,
    learner_url,
)
from grader.toolkit.procs import pid_alive, port_open, stop_group

DB_HOME = REPO_ROOT / ".grader" / "db"
DOWN_GRACE = 3 * STOP_GRACE  # a server with the learner's data gets longer to shut down cleanly


def home_of(kind: str, home: Path | None = None) -> Path:
    """The folder of the persistent `kind` server: its data, log and state file."""
    return (home or DB_HOME) / kind


def state_path(kind: str, home: Path | None = None) -> Path:
    return home_of(kind, home) / "server.json"


def read_state(kind: str, home: Path | None = None) -> dict[str, Any] | None:
    """The running server's state (PID, port, URL, data, log), or None when it does not run."""
    try:
        state = json.loads(state_path(kind, home).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid) or not _looks_like_server(pid, kind):
        return None
    return state


def _looks_like_server(pid: int, kind: str) -> bool:
    """Guards against a PID reused by another program since the server stopped."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the PID file
    return (
        ("postgres" in cmdline)
        if kind == "postgres"
        else ("mysqld" in cmdline or "mariadbd" in cmdline)
    )


def db_up(kind: str, port: int | None = None, home: Path | None = None) -> tuple[dict, bool]:
    """Start (or find) the persistent server; returns (state, started_now)."""
    state = read_state(kind, home)
    if state:
        return state, False
    port = port or LEARNER_PORTS[kind]
    if port_open(port):
        raise DatabaseUnavailable(
            f"port {port} is already taken (another server, or `docker compose --profile {kind}`"
            f" already runs?). If it is the compose database, just use "
            f"DATABASE_URL='{learner_url(kind, port)}'; otherwise pass --port N."
        )
    workdir = home_of(kind, home)
    server = start(
        kind,
        workdir=workdir,
        port=port,
        user=LEARNER_USER,
        password=LEARNER_PASSWORD,
        database=LEARNER_DATABASE,
        keep=True,
        fast=False,
    )
    forget(server)  # it outlives this process: `grader db down` stops it by its PID
    state = {
        "kind": kind,
        "pid": server.pid,
        "port": port,
        "url": learner_url(kind, port),
        "data": str(workdir / "data"),
        "log": str(server.log_path),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    state_path(kind, home).write_text(json.dumps(state, indent=2))
    return state, True


def db_down(kind: str, home: Path | None = None, purge: bool = False) -> dict | None:
    """Stop the persistent server by its saved PID; `purge` also deletes its data."""
    state = read_state(kind, home)
    if state:
        stop_group(state["pid"], first_signal(kind), DOWN_GRACE)
    with contextlib.suppress(FileNotFoundError):
        state_path(kind, home).unlink()
    if purge:
        shutil.rmtree(home_of(kind, home), ignore_errors=True)
    return state


def url_for_run(kind: str) -> str:
    """DATABASE_URL for `grader run N --db <kind>`: the `grader db up` (or compose) server."""
    env = os.environ.get("DATABASE_URL", "")
    if env and kind_of_url(env) == kind:
        return env
    state = read_state(kind)
    if state:
        return state["url"]
    if port_open(LEARNER_PORTS[kind]):
        # Something listens where `docker compose --profile <kind>` publishes its database.
        return learner_url(kind)
    raise SystemExit(
        f"grader: no {LABELS[kind]} server is running for `--db {kind}`. Start one with "
        f"`grader db up {kind}` (or `docker compose --profile {kind} up -d`), or export "
        f"DATABASE_URL for the server you have."
    )
