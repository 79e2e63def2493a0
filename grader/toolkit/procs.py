"""Real processes for the checks: a learner's backend under uvicorn, started, restarted, killed.

Every process is started in its own session so it can be stopped as a group by its PID, and
every process a check starts is registered so the plugin can stop it even when the check fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from sqlalchemy import make_url

from grader.toolkit import steps
from grader.toolkit.causes import cause

HEALTH_TIMEOUT = float(os.environ.get("GRADER_STARTUP_TIMEOUT", "30"))
# How long /health may keep answering a status other than 200 before the start counts as failed.
WRONG_HEALTH_GRACE = 2.0


class BackendError(RuntimeError):
    """The backend did not come up; `log` holds what it printed (its traceback, usually)."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_zero(send, target: int) -> bool:
    """Whether `send(target, 0)` finds a process: `os.kill` for a PID, `os.killpg` for a group."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    return True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs; a zombie (only waiting to be reaped) counts as gone."""
    if not _signal_zero(os.kill, pid):
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _group_alive(pgid: int) -> bool:
    return _signal_zero(os.killpg, pgid)


def stop_pid(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it after `grace` seconds.

    The whole group, not just `proc`: uvicorn's workers live in it and can outlive their
    supervisor (one being respawned when the SIGTERM came), as can Streamlit's children.
    """
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    if _wait_gone(proc, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)
    _wait_gone(proc, grace)  # the killed members leave the group once they are reaped


def _wait_gone(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` for `proc` and every process of its group to be gone."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None or _group_alive(proc.pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class Backend:
    """One learner backend: `uvicorn backend.main:app` run from a chapter folder."""

    def __init__(
        self,
        chapter_dir: Path,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        workers: int | None = None,
        name: str = "backend",
    ) -> None:
        self.chapter_dir = chapter_dir
        self.workdir = workdir
        self.env = dict(env or {})
        self.workers = workers
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"{name}.log"
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", "backend.main:app"]
        cmd += ["--app-dir", str(self.chapter_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        return cmd

    def launch(self) -> Backend:
        """Start the process without waiting; call `wait_ready` next (lets several boot at once)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("a", encoding="utf-8")
        self._log_offset = log.tell()
        log.write(f"--- grader: {' '.join(self._command())}\n")
        log.flush()
        self.proc = subprocess.Popen(
            self._command(),
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        db = self.env.get("DATABASE_URL")
        shown = f" ({make_url(db).render_as_string(hide_password=True)})" if db else ""
        steps.record(f"start {self.name} on port {self.port}{shown}")
        return self

    def wait_ready(self, timeout: float = HEALTH_TIMEOUT) -> Backend:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        wrong_since: float | None = None
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BackendError(
                        f"the backend exited with code {self.proc.returncode} before answering "
                        "GET /health",
                        self.log(),
                    )
                if self.workers and self.workers > 1 and "Traceback" in self.log(last=400):
                    # uvicorn's supervisor outlives its workers and respawns them forever: a
                    # worker's traceback before /health answers is a crash, not a slow start.
                    self.stop()
                    raise BackendError(
                        "a backend worker crashed before GET /health answered", self.log()
                    )
                try:
                    r = client.get(f"{self.url}/health")
                    if r.status_code == 200:
                        return self
                    last_error = f"GET /health answered {r.status_code}: {r.text[:200]}"
                    # uvicorn only answers once the app has started: a wrong status that
                    # persists is the learner's /health, not a slow start; don't wait it out.
                    wrong_since = wrong_since or time.monotonic()
                    if time.monotonic() - wrong_since > WRONG_HEALTH_GRACE:
                        self.stop()
                        raise BackendError(
                            f"the backend started but {last_error} (expected 200)", self.log()
                        )
                except httpx.HTTPError as exc:
                    last_error = type(exc).__name__
                time.sleep(0.05)
        self.stop()
        raise BackendError(
            f"the backend did not answer GET /health with 200 within {timeout:.0f} s "
            f"(last: {last_error})",
            self.log(),
        )

    def start(self, timeout: float = HEALTH_TIMEOUT) -> Backend:
        return self.launch().wait_ready(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                steps.record(f"stop {self.name} (SIGTERM)")
            stop_pid(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would: no shutdown handlers run."""
        if self.proc is not None and self.proc.poll() is None:
            steps.record(f"kill {self.name} (SIGKILL)")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def restart(self) -> Backend:
        self.stop()
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_offset_now(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int, last: int = 40) -> str:
        """The last `last` lines this backend printed after byte `offset` of its log."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                lines = f.read().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-last:])

    def cause_since(self, offset: int) -> str | None:
        """What the backend's log says went wrong after byte `offset` (a traceback's last line)."""
        return cause(self.log_since(offset, last=400))

    def log(self, last: int = 40) -> str:
        """The last lines this backend printed since it was (re)started."""
        return self.log_since(self._log_offset, last)


def start_all(backends: list[Backend], timeout: float = HEALTH_TIMEOUT) -> list[Backend]:
    """Boot several backends in parallel: launch all, then wait for each."""
    for b in backends:
        b.launch()
    try:
        for b in backends:
            b.wait_ready(timeout)
    except BackendError:
        for b in backends:
            b.stop()
        raise
    return backends
