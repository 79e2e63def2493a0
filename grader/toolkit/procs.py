"""Real processes for the checks: a learner's backend under uvicorn, started, restarted, killed.

Every process is started in its own session so it can be stopped as a group by its PID, and
every process a check starts is registered so the plugin can stop it even when the check fails.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from grader.toolkit import forkserver, steps
from grader.toolkit.forkserver import ForkedProcess, ForkServer, ForkServerError

HEALTH_TIMEOUT = float(os.environ.get("GRADER_STARTUP_TIMEOUT", "30"))
# How long /health may keep answering a status other than 200 before the start counts as failed.
WRONG_HEALTH_GRACE = 2.0


class BackendError(RuntimeError):
    """The backend did not come up; `log` holds what it printed (its traceback, usually)."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


# Ports this process handed out. The kernel may offer a port again as soon as the probe socket
# below is closed, before the backend given it has bound it: CI saw two of three backends
# started together get one port.
_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no loopback port left that this process has not handed out already")


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
    stop_group(proc, signal.SIGTERM, grace)


# Interpreter options in a backend's environment that a forked backend honours as well.
_FORK_SAFE_PYTHON_ENV = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})


def _hide_password(url: str) -> str:
    """`url` as the step log shows it: `scheme://user:***@host/db`."""
    return re.sub(r"^([\w+.-]+://[^:/@]+:)[^@]*@", r"\1***@", url)


class Backend:
    """One learner backend: `uvicorn backend.main:app` run from a chapter folder.

    Started from the fork server when this process has one (`grader check` always does): a
    child forked from a process with FastAPI, uvicorn and SQLAlchemy already imported, booted in
    a tenth of the time. Else, and always with `workers` > 1, `python -m uvicorn` as a
    subprocess. Either way it is its own process and process group, led by `proc.pid`.
    """

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
        self.proc: subprocess.Popen | ForkedProcess | None = None
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

    def _fork_server(self) -> ForkServer | None:
        """The fork server to start this backend from, if it can be (grader.toolkit.forkserver).

        Not with `--workers K`: uvicorn's supervisor spawns its workers itself. Not when the
        backend's environment sets an interpreter option (PYTHONPATH…) other than the two the
        grader sets, which only a fresh interpreter would apply.
        """
        if self.workers is not None and self.workers > 1:
            return None
        if any(k.startswith("PYTHON") and k not in _FORK_SAFE_PYTHON_ENV for k in self.env):
            return None
        return forkserver.active()

    def launch(self) -> Backend:
        """Start the process without waiting; call `wait_ready` next (lets several boot at once)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        server = self._fork_server()
        command = " ".join(self._command())
        with self.log_path.open("a", encoding="utf-8") as log:
            self._log_offset = log.tell()
            log.write(f"--- grader: {command}{'  [fork server]' if server else ''}\n")
        self.proc = None
        if server is not None:
            try:
                self.proc = server.spawn(
                    self._command()[3:],
                    cwd=self.workdir,
                    env=env,
                    log_path=self.log_path,
                    needs=forkserver.needs(self.chapter_dir, env),
                    path=[self.chapter_dir],
                )
            except ForkServerError as exc:
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write(f"    (not forked: {exc}; started as a subprocess)\n")
        if self.proc is None:
            with self.log_path.open("a", encoding="utf-8") as log:
                self.proc = subprocess.Popen(
                    self._command(),
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        db = self.env.get("DATABASE_URL")
        shown = f" ({_hide_password(db)})" if db else ""
        steps.record(f"start {self.name} on port {self.port}{shown}")
        return self

    def wait_ready(self, timeout: float = HEALTH_TIMEOUT) -> Backend:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        wrong_since: float | None = None
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
                status, text = _get_health(self.port)
                if status == 200:
                    return self
                last_error = f"GET /health answered {status}: {text[:200]}"
                # uvicorn only answers once the app has started: a wrong status that
                # persists is the learner's /health, not a slow start; don't wait it out.
                wrong_since = wrong_since or time.monotonic()
                if time.monotonic() - wrong_since > WRONG_HEALTH_GRACE:
                    self.stop()
                    raise BackendError(
                        f"the backend started but {last_error} (expected 200)", self.log()
                    )
            except (OSError, http.client.HTTPException) as exc:
                last_error = type(exc).__name__
            time.sleep(0.01)  # a forked backend answers within a tenth of a second
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
                _signal_group(self.proc.pid, signal.SIGTERM)
            _finish_stop(self.proc)

    def terminate(self) -> None:
        """SIGTERM without waiting, as an orchestrator stops a container: the process may take
        its time to finish what it has (`alive` says when it is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            steps.record(f"SIGTERM {self.name} (not waiting for it)")
            _signal_group(self.proc.pid, signal.SIGTERM)

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

    def log(self, last: int = 40) -> str:
        """The last lines this backend printed since it was (re)started."""
        return self.log_since(self._log_offset, last)


def _get_health(port: int) -> tuple[int, str]:
    """GET /health on 127.0.0.1:`port`: its status and body. With the standard library: an
    httpx client costs more to create (its TLS context) than a forked backend takes to boot."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status, response.read(4096).decode("utf-8", errors="replace")
    finally:
        connection.close()


def start_all(backends: list[Backend], timeout: float = HEALTH_TIMEOUT) -> list[Backend]:
    """Boot several backends in parallel: launch all, then wait for each."""
    for b in backends:
        b.launch()
    try:
        for b in backends:
            b.wait_ready(timeout)
    except BackendError:
        stop_all(backends)
        raise
    return backends


def stop_all(backends: list[Backend]) -> None:
    """Stop several backends at once: SIGTERM every running one's group, then wait for each
    (uvicorn's graceful shutdown takes a sixth of a second; one after the other, that adds up)."""
    stopping = [b for b in backends if b.alive]
    for b in stopping:
        steps.record(f"stop {b.name} (SIGTERM)")
        _signal_group(b.proc.pid, signal.SIGTERM)
    for b in backends:
        if b.proc is not None:
            _finish_stop(b.proc)


def _finish_stop(proc: subprocess.Popen | ForkedProcess, grace: float = 5.0) -> None:
    """After a SIGTERM: wait up to `grace` for `proc` (a forked backend's exit is reported the
    moment it happens, a subprocess's within milliseconds), SIGKILL its group if it is still
    there; then see that no member of its group is left (SIGTERM, SIGKILL after the grace)."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        stop_group(proc, signal.SIGKILL, grace)
    else:
        stop_pid(proc, grace)


# --- process primitives shared by every caller (backends, `grader run`, database servers) -----


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port` (asked for half a second)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Call `predicate` until it returns something true (True) or `timeout` seconds pass (False).

    It is called at least once, and once more at the deadline. An exception it raises ends the
    wait and propagates: that is how a probe says "stop waiting, this will never come up".
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))


def stop_group(
    process: subprocess.Popen | int, first: signal.Signals = signal.SIGTERM, grace: float = 5.0
) -> bool:
    """Stop the process group that `process` leads (it was started with `start_new_session`).

    Sends `first` to the group, waits up to `grace` seconds for the leader and every member to
    be gone, then SIGKILLs what is left and waits as long again. `process` is a Popen of ours
    (reaped through it, so its returncode stays right), or the PID of a process that may not be
    our child (the server an earlier `grader db up` started). Returns whether the group is gone.
    """
    pid = process if isinstance(process, int) else process.pid

    def gone() -> bool:
        if isinstance(process, int):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child; else not ours to reap
            leader_gone = not pid_alive(pid)
        else:
            leader_gone = process.poll() is not None
        # The killed members leave the group only once they are reaped.
        return leader_gone and not _group_alive(pid)

    if gone():
        return True
    _signal_group(pid, first)
    if wait_until(gone, grace):
        return True
    _signal_group(pid, signal.SIGKILL)
    return wait_until(gone, grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # some member is not ours to signal: at least the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, sig)


def children_by_parent() -> dict[int, list[int]]:
    """Every running process's children, from /proc (parent PID → child PIDs)."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            found.setdefault(ppid, []).append(int(entry.name))
    return found


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid`."""
    return set(children_by_parent().get(pid, []))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Postgres' backends leave its process group)."""
    tree = children_by_parent()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """`pid` and every process below it stopped dead (SIGSTOP) for the block, then resumed.

    A frozen database server still accepts connections (its kernel does) and answers nothing:
    what a stuck disk or a network that drops packets looks like to a client.
    """
    stopped = descendants(pid)
    for p in stopped:
        os.kill(p, signal.SIGSTOP)
    steps.record(f"froze process {pid} and its {len(stopped) - 1} children (SIGSTOP)")
    try:
        yield
    finally:
        for p in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
        steps.record(f"resumed process {pid} (SIGCONT)")
