"""What starting a Postgres or MariaDB server takes, whichever it is.

Its system user (servers refuse to run as root, so as root they run as the `postgres` / `mysql`
user the packages create), its data folder, its one-time setup (initdb, mariadb-install-db),
and its process: in its own session, on a free loopback port, waited for until it accepts
connections, and killed with its log's last lines in the error when it does not.
"""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grader.dbservers.errors import DatabaseUnavailable, describe, how_to_get
from grader.dbservers.server import Server, track
from grader.dbservers.urls import LABELS, PACKAGES
from grader.toolkit.procs import free_port, stop_group, wait_until

STARTUP_TIMEOUT = float(os.environ.get("GRADER_DB_STARTUP_TIMEOUT", "30"))
SYSTEM_USERS = {"postgres": "postgres", "mysql": "mysql"}


def run_as(kind: str) -> dict[str, Any]:
    """Popen arguments that drop root to the database's system user (servers refuse root)."""
    if os.geteuid() != 0:
        return {}
    name = SYSTEM_USERS[kind]
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise DatabaseUnavailable(
            f"the grader runs as root and {LABELS[kind]} refuses to; it needs the `{name}` "
            f"system user, which `sudo apt-get install {PACKAGES[kind]}` creates. "
            + how_to_get(kind)
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown_for(kind: str, *paths: Path) -> None:
    """Hand `paths` to the server's system user (when the grader runs as root)."""
    as_user = run_as(kind)
    if as_user:
        for p in paths:
            _check_reachable(kind, p, as_user["user"], as_user["group"])
            os.chown(p, as_user["user"], as_user["group"])


def _check_reachable(kind: str, path: Path, uid: int, gid: int) -> None:
    """The system user must be able to walk down to its folder (e.g. not through /root)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_mode & 0o001 or st.st_uid == uid or (st.st_gid == gid and st.st_mode & 0o010):
            continue
        raise DatabaseUnavailable(
            f"the `{SYSTEM_USERS[kind]}` system user cannot enter {parent} (mode "
            f"{oct(st.st_mode & 0o777)}), so it cannot use {path}; put the data somewhere it "
            "can reach"
        )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _setup_env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C",
        "LC_ALL": "C",
        "TZ": "UTC",
    }


def socket_dir(workdir: Path) -> Path:
    """A folder for the server's Unix socket (the caller hands it to the server's user)."""
    # A Unix socket path must stay under ~100 bytes; a deep checkout needs a short detour.
    return workdir if len(str(workdir)) < 80 else Path(tempfile.mkdtemp(prefix="grader-sock-"))


def prepare_workdir(kind: str, workdir: Path | None) -> tuple[Path, bool]:
    """The server's folder (a new temp one when None), owned by the server's system user.

    Returns it and whether it is a throwaway one (removed again if the start fails).
    """
    throwaway = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"grader-{kind}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    chown_for(kind, workdir)
    return workdir, throwaway


def initialize(kind: str, cmd: list[str], workdir: Path, throwaway: bool) -> None:
    """Run the data directory's one-time setup (initdb, mariadb-install-db) as the server's user."""
    init = subprocess.run(
        cmd, cwd=workdir, env=_setup_env(workdir), capture_output=True, text=True, **run_as(kind)
    )
    if init.returncode != 0:
        if throwaway:
            shutil.rmtree(workdir, ignore_errors=True)
        raise DatabaseUnavailable(
            f"{Path(cmd[0]).name} failed (exit {init.returncode}):\n"
            f"{(init.stdout + init.stderr)[-1500:]}"
        )


def _wait_ready(
    kind: str,
    proc: subprocess.Popen,
    log_path: Path,
    probe: Callable[[], None],
    timeout: float,
    what: str,
) -> None:
    """Until `probe()` connects; a server that exits, or stays silent, is an error with its log."""
    last = "no answer yet"

    def ready() -> bool:
        nonlocal last
        if proc.poll() is not None:
            raise DatabaseUnavailable(
                f"the {LABELS[kind]} server ({what}) exited with code {proc.returncode} before "
                f"accepting connections. Its log ends with:\n{tail(log_path)}"
            )
        try:
            probe()
        except Exception as exc:
            last = describe(exc)
            return False
        return True

    if wait_until(ready, timeout, interval=0.1):
        return
    stop_group(proc, signal.SIGKILL, grace=2)
    raise DatabaseUnavailable(
        f"the {LABELS[kind]} server ({what}) did not accept connections within {timeout:.0f} s "
        f"(last: {last}). Its log ends with:\n{tail(log_path)}"
    )


def launch(
    kind: str,
    command: Callable[[int], list[str]],
    probe: Callable[[int], None],
    workdir: Path,
    port: int | None,
    timeout: float,
    throwaway: bool,
) -> tuple[subprocess.Popen, int]:
    """Start the server on `port` (or a free one, retried if another process takes it first)."""
    log_path = workdir / "server.log"
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        with log_path.open("a") as log:
            proc = subprocess.Popen(
                command(chosen),
                cwd=workdir,
                env=_setup_env(workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **run_as(kind),
            )
        try:
            probe_port = functools.partial(probe, chosen)
            _wait_ready(kind, proc, log_path, probe_port, timeout, f"port {chosen}")
            return proc, chosen
        except DatabaseUnavailable:
            if attempt + 1 < attempts and "already in use" in tail(log_path, 8):
                continue
            if throwaway:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def register(server: Server, bootstrap: Callable[[], None] | None) -> Server:
    """Track the server for clean-up and, on a fresh data directory, create its login user."""
    track(server)
    if bootstrap is not None:
        try:
            bootstrap()
        except Exception as exc:
            server.stop()
            raise DatabaseUnavailable(
                f"{LABELS[server.kind]} started but creating the user failed: {describe(exc)}"
            ) from exc
    return server


def throwaway_password() -> str:
    # Characters that break a URL written by hand: proves every URL here is built by URL.create.
    return f"p@ss:w/rd#%?&'{secrets.token_hex(4)}"
