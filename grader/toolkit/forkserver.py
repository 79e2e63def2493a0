"""A preloaded fork server: learner backends start in a tenth of a second instead of a second.

Starting `python -m uvicorn backend.main:app` costs most of a second before the learner's first
line runs: the interpreter, then FastAPI, uvicorn, pydantic and SQLAlchemy are imported. The
fork server is one process that imports those once (and nothing else: no threads, no learner
code) and then forks one child per backend. Each child is still its own OS process, as under
`subprocess`:

- it calls `os.setsid()` first, so it leads its own process group and is stopped (SIGTERM, then
  SIGKILL) or killed (SIGKILL) as a group by its PID, like every process the grader starts;
- it points stdin at /dev/null and stdout/stderr at the backend's log file (append);
- it `chdir`s into the backend's work folder, replaces `os.environ` by exactly the environment
  it was given, and puts its own folder first on `sys.path`, as `python -m` does;
- it runs uvicorn's own command line (`uvicorn.main.main`), which imports the learner's
  `backend.main` fresh (the server never imports it), installs its own SIGINT/SIGTERM handlers
  (a SIGTERM is a graceful shutdown) and binds 127.0.0.1:port.

The server answers as soon as it runs and preloads one module at a time (`PRELOAD`), looking
for requests in between: a backend asked for early waits only for the modules its sources
import (`needs`: read, never run) and its database driver, then is forked, and imports anything
else itself as a fresh interpreter would. Before every fork the server checks that it still has
one thread only and no learner module; else it refuses, and the backend starts as a subprocess.

The server reaps its children and reports each one's exit status over the socket it was
started with, so the process that asked for a child can `poll()` and `wait()` it as it would a
`subprocess.Popen` (`ForkedProcess`). When that socket closes, because the client closed it or
died, the server stops every child it still has (SIGTERM to the group, SIGKILL after a grace)
and exits: no process outlives the grader session.

Two ways to own one: `ForkServer.start()` in the process that will ask for children (the
plugin, when pytest runs the checks by itself), or `start_detached()` in `grader check`'s own
process before it starts pytest, so the preloading overlaps pytest's start; pytest then adopts
the socket (`ForkServer.adopt_from_env()`, through `GRADER_FORKSERVER_FD`). `GRADER_FORKSERVER=0`
turns the fork server off: every backend is then started with `subprocess`.

This file is also the server's program (`python -P forkserver.py FD`): its top level imports
the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# What the server imports, in this order, one module at a time (see `serve`): what every
# chapter's backend and uvicorn need first, then SQLAlchemy (chapter 4 on), then the database
# drivers and httpx. A module that is missing is skipped: a backend that needs it says so.
# Each comes with the top-level name whose import by a backend means it needs it (None: every
# backend does); a backend asked for before the preloading is done waits for those only.
# Those of ON_DEMAND are preloaded when a backend needs them, or when the server was told
# (`start(also=…)`: the Postgres driver for a session on Postgres), not otherwise: no backend
# of chapters 1-4 imports httpx, and a fork request waits while a module is being imported.
PRELOAD: tuple[tuple[str, str | None], ...] = (
    ("asyncio", None),
    ("json", None),
    ("uuid", None),
    ("logging.config", None),
    ("click", None),
    ("h11", None),
    ("uvicorn", None),
    ("uvicorn.main", None),
    ("uvicorn.config", None),
    ("uvicorn.server", None),
    ("uvicorn.importer", None),
    ("uvicorn.lifespan.on", None),
    ("uvicorn.loops.auto", None),
    ("uvicorn.loops.asyncio", None),
    ("uvicorn.protocols.http.auto", None),
    ("uvicorn.protocols.http.h11_impl", None),
    ("uvicorn.protocols.websockets.auto", None),
    ("uvicorn.protocols.websockets.websockets_sansio_impl", None),
    ("uvicorn.middleware.proxy_headers", None),
    ("pydantic", "pydantic"),
    ("fastapi", "fastapi"),
    ("fastapi.encoders", "fastapi"),
    ("fastapi.exceptions", "fastapi"),
    ("fastapi.responses", "fastapi"),
    ("starlette.middleware.errors", "fastapi"),
    ("starlette.middleware.exceptions", "fastapi"),
    ("pydantic.v1", "fastapi"),  # FastAPI imports it when it builds the first route
    ("assistant", "assistant"),
    ("sqlite3", "sqlite3"),
    ("sqlalchemy", "sqlalchemy"),
    ("sqlalchemy.exc", "sqlalchemy"),
    ("sqlalchemy.pool", "sqlalchemy"),
    ("sqlalchemy.orm", "sqlalchemy"),
    ("sqlalchemy.dialects.sqlite.pysqlite", "sqlalchemy"),
    ("sqlalchemy.dialects.postgresql.psycopg", "psycopg"),
    ("psycopg", "psycopg"),
    ("sqlalchemy.dialects.mysql.pymysql", "pymysql"),
    ("pymysql", "pymysql"),
    ("httpx", "httpx"),
)

ON_DEMAND = frozenset({"psycopg", "pymysql", "httpx"})


def drivers_for(db: str) -> tuple[str, ...]:
    """What to preload all the same (`also`) for a session on database `db` (`--db`)."""
    return {"postgres": ("psycopg",), "mysql": ("pymysql",)}.get(db, ())


# A database URL's scheme, and the driver a backend using it imports (through SQLAlchemy).
_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)


def needs(chapter_dir: Path, env: Mapping[str, str]) -> list[str]:
    """The top-level names a chapter's backend imports (read from its sources, never run) and
    the driver its DATABASE_URL implies: what the server preloads first for it."""
    found: set[str] = set()
    for path in sorted((chapter_dir / "backend").rglob("*.py"))[:50]:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found.update(_IMPORT.findall(path.read_text(encoding="utf-8")))
    scheme = env.get("DATABASE_URL", "").split(":", 1)[0].split("+")
    if scheme[0] in _DRIVERS:
        found.update({"sqlalchemy", _DRIVERS[scheme[0]]})
    if len(scheme) > 1:
        found.add(scheme[1])
    return sorted(found)


ENV_FD = "GRADER_FORKSERVER_FD"  # "FD:PID": the socket of a server `grader check` started
ENV_SWITCH = "GRADER_FORKSERVER"  # "0": no fork server, every backend a subprocess
READY_TIMEOUT = float(os.environ.get("GRADER_STARTUP_TIMEOUT", "30"))
REPLY_TIMEOUT = READY_TIMEOUT  # a fork is instant, but it may wait for a module's import
CHILD_GRACE = 5.0  # seconds the server gives its children to stop when it is closed


class ForkServerError(RuntimeError):
    """The fork server cannot start a backend (it did not start, broke, or refused to)."""


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "no", "off", "false") and hasattr(
        os, "fork"
    )


def _send(sock: socket.socket, message: Mapping[str, object]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


# --- the client: what asks for children and follows them -----------------------------------


class ForkedProcess:
    """A backend forked by the server, followed like a `subprocess.Popen`: `pid`, `returncode`,
    `poll()`, `wait(timeout)`. It is the server's child, not ours: the server reaps it and says
    how it ended. Once the server is closed or dead, a child that is gone has `returncode` 1
    (its real status went with the server)."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self.server = server
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server._exit_status(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = self.server._exit_status(self.pid, remaining)
        return self.returncode

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone); for children the server can no longer
    report on."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


class ForkServer:
    """The client end of a fork server: `spawn` a backend, follow it, `close` it all."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None, pid: int) -> None:
        self._sock = sock
        self._proc = proc  # the server process, when this client owns it
        self.pid = pid
        self._lock = threading.RLock()
        self._buffer = b""
        self._ready: dict | None = None
        self.preloaded: dict | None = None  # once it has imported all of PRELOAD
        self._replies: dict[int, dict] = {}
        self._abandoned: set[int] = set()
        self._exits: dict[int, int] = {}
        self._next_id = 0
        self._eof = False
        self.broken: str | None = None  # why it can no longer fork, once it cannot
        self.closed = False

    # -- starting and adopting --

    @classmethod
    def start(cls, also: Sequence[str] = ()) -> ForkServer:
        """Start a server for this process; it preloads in the background (see `PRELOAD`;
        `also`: names of ON_DEMAND to preload all the same)."""
        proc, ours = _start_server_process(also)
        return cls(ours, proc, proc.pid)

    @classmethod
    def adopt_from_env(cls) -> ForkServer | None:
        """The server `grader check` started for this process, if it passed one; the variable
        is removed, so no process started from here sees it."""
        value = os.environ.pop(ENV_FD, None)
        if not value:
            return None
        try:
            fd_text, pid_text = value.split(":")
            fd, pid = int(fd_text), int(pid_text)
            sock = socket.socket(fileno=fd)
        except (ValueError, OSError):
            return None
        if sock.family != socket.AF_UNIX:
            sock.detach()
            return None
        sock.set_inheritable(False)
        return cls(sock, None, pid)

    # -- reading the server's messages --

    def _pump(self, timeout: float) -> None:
        """Read what the server sent within `timeout` seconds (0: only what is there)."""
        with self._lock:
            if self.closed or self._eof:
                if timeout:
                    time.sleep(min(timeout, 0.02))
                return
            try:
                readable, _, _ = select.select([self._sock], [], [], max(timeout, 0))
                if not readable:
                    return
                data = self._sock.recv(65536)
            except OSError as exc:
                self._eof = True
                self.broken = self.broken or f"the fork server's socket failed: {exc}"
                return
            if not data:
                self._eof = True
                self.broken = self.broken or "the fork server closed its socket"
                return
            self._buffer += data
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:  # not a fork server at the other end
                    self._eof = True
                    self.broken = self.broken or "the fork server's socket sent garbage"
                    return
                if "exit" in message:
                    self._exits[message["exit"]] = message["code"]
                elif "id" in message and message["id"] in self._abandoned:
                    # Forked after its caller gave up and started it as a subprocess instead.
                    if "pid" in message:
                        with contextlib.suppress(OSError):
                            os.killpg(message["pid"], signal.SIGKILL)
                elif "id" in message:
                    self._replies[message["id"]] = message
                elif "ready" in message:
                    self._ready = message
                elif "preloaded" in message:
                    self.preloaded = message
                elif "refused" in message:
                    self.broken = self.broken or f"the fork server refused: {message['refused']}"

    def _exit_status(self, pid: int, timeout: float) -> int | None:
        with self._lock:
            if pid not in self._exits:
                self._pump(timeout)
            if pid in self._exits:
                return self._exits[pid]
            if (self.broken or self.closed) and not _pid_alive(pid):
                return 1  # nobody is left to say how it ended
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        """Wait until the server answers (it forks from then on, preloaded or not yet); raises
        ForkServerError if it cannot fork."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._ready is None and not self.broken:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.broken = f"the fork server did not answer within {timeout:.0f} s"
                    break
                self._pump(min(remaining, 0.5))
            if self._ready is not None and self._ready.get("ready") != self.pid:
                self.broken = self.broken or (
                    f"the socket answers for process {self._ready.get('ready')}, not {self.pid}"
                )
            if self.broken:
                raise ForkServerError(self.broken)
            return self._ready

    def wait_preloaded(self, timeout: float = READY_TIMEOUT) -> dict:
        """Wait until the server has imported all of PRELOAD: what it loaded, what is missing,
        and how long it took."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self.wait_ready(timeout)
            while self.preloaded is None and not self._eof and time.monotonic() < deadline:
                self._pump(min(deadline - time.monotonic(), 0.5))
            if self.preloaded is None:
                raise ForkServerError(self.broken or "the fork server did not finish preloading")
            return self.preloaded

    @property
    def usable(self) -> bool:
        return not self.closed and not self.broken

    # -- forking --

    def spawn(
        self,
        args: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        argv0: str = "uvicorn",
        needs: Sequence[str] = (),
        path: Sequence[Path] = (),
    ) -> ForkedProcess:
        """Fork a child that runs `uvicorn ARGS` in `cwd` with exactly `env`, its output appended
        to `log_path`. Returns once the child leads its own session. `needs`: the top-level
        modules it will import (see `needs()`), preloaded first if they are not yet; `path`:
        the folders it puts before `cwd` on its import path (uvicorn's --app-dir). The server
        refuses (ForkServerError) when one of those holds a module named like one it loaded."""
        with self._lock:
            self.wait_ready()
            self._next_id += 1
            request = self._next_id
            try:
                _send(
                    self._sock,
                    {
                        "op": "spawn",
                        "id": request,
                        "args": list(args),
                        "argv0": argv0,
                        "cwd": str(cwd),
                        "env": dict(env),
                        "log": str(log_path),
                        "needs": list(needs),
                        "path": [str(folder) for folder in path],
                    },
                )
            except OSError as exc:
                self.broken = f"the fork server's socket failed: {exc}"
                raise ForkServerError(self.broken) from exc
            deadline = time.monotonic() + REPLY_TIMEOUT
            while request not in self._replies:
                remaining = deadline - time.monotonic()
                if self.broken or remaining <= 0:
                    self._abandoned.add(request)
                    self.broken = self.broken or "the fork server did not answer a spawn request"
                    raise ForkServerError(self.broken)
                self._pump(min(remaining, 0.5))
            reply = self._replies.pop(request)
        if "pid" not in reply:
            raise ForkServerError(f"the fork server could not fork: {reply.get('error')}")
        return ForkedProcess(self, reply["pid"], [argv0, *args])

    # -- closing --

    def close(self, timeout: float = CHILD_GRACE + 3) -> None:
        """Close the socket: the server stops the children it still has, then exits. When this
        client started the server, wait for it (and SIGKILL it after `timeout`)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._proc is not None:
            _reap_server(self._proc, timeout)


def _start_server_process(also: Sequence[str] = ()) -> tuple[subprocess.Popen, socket.socket]:
    """The server process and our end of its socket (theirs is closed here once passed)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).resolve()), str(theirs.fileno()), *also],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C in the terminal is for the grader, not for it
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def _reap_server(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class DetachedServer:
    """A server started for another process (pytest, started next by `grader check`): pass
    `env()` to it, then `release()` our copy of its socket, and `close()` once it has exited."""

    def __init__(self, also: Sequence[str] = ()) -> None:
        self.proc, self._client = _start_server_process(also)  # passed on with pass_fds

    def env(self) -> dict[str, str]:
        return {ENV_FD: f"{self._client.fileno()}:{self.proc.pid}"}

    @property
    def fd(self) -> int:
        return self._client.fileno()

    def release(self) -> None:
        """Drop our copy of the client socket (once pytest has its own), so that the server
        sees the end of the session when pytest's copy closes."""
        with contextlib.suppress(OSError):
            self._client.close()

    def close(self, timeout: float = CHILD_GRACE + 3) -> None:
        self.release()
        _reap_server(self.proc, timeout)


def start_detached(also: Sequence[str] = ()) -> DetachedServer | None:
    """A fork server for the pytest process about to be started, or None when off/impossible."""
    if not enabled():
        return None
    try:
        return DetachedServer(also)
    except OSError:
        return None


# The server this process starts backends from (set by the plugin), if any.
_active: ForkServer | None = None


def activate(server: ForkServer | None) -> None:
    global _active
    _active = server


def active() -> ForkServer | None:
    """The server to fork backends from, if there is one that still works."""
    return _active if _active is not None and _active.usable else None


# --- the server ------------------------------------------------------------------------------


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _shadowing(folders: Sequence[str]) -> str | None:
    """A module of these folders (first on the backend's path) named like one the server has
    loaded: a fresh interpreter would import the folder's, a forked one has the server's."""
    roots = {name.split(".")[0] for name in sys.modules}
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.endswith(".py") and entry.is_file():
                    name = entry.name[:-3]
                elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    name = entry.name
                else:
                    continue
                if name in roots:
                    return f"{entry.path} would shadow the module {name} the server has loaded"
    return None


def _unsafe_to_fork() -> str | None:
    """Why forking now would be unsafe, if it would: a thread (a fork copies only the calling
    thread, and whatever lock another one held stays locked), or learner code already loaded."""
    if _threads() > 1 or threading.active_count() > 1:
        return f"{_threads()} threads in the fork server: forking would be unsafe"
    if any(m == "backend" or m.startswith("backend.") for m in sys.modules):
        return "a module named backend is loaded in the fork server"
    return None


def serve(fd: int, also: Sequence[str] = ()) -> None:
    """The server's main loop, on the socket `fd` (runs in its own process).

    It answers at once and preloads one module at a time, looking for requests in between: a
    backend asked for before the preloading is done waits for the modules it needs only.
    """
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    base_path = list(sys.path)
    try:
        _send(sock, {"ready": os.getpid()})
    except OSError:
        return

    # Stopped by a signal rather than by its socket closing: still stop the children first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler, so that the fd is woken
    signal.set_wakeup_fd(wake_w)
    children: set[int] = set()
    server_fds = (sock.fileno(), wake_r, wake_w)
    pending = [e for e in PRELOAD if e[1] not in ON_DEMAND or e[1] in also]
    loaded: list[str] = []
    missing: list[str] = []
    began = time.monotonic()
    tried: set[str] = set()

    def preload(entry: tuple[str, str | None]) -> None:
        was_pending = entry in pending
        if was_pending:
            pending.remove(entry)
        if entry[0] not in tried:
            tried.add(entry[0])
            try:
                __import__(entry[0])
                loaded.append(entry[0])
            except Exception as exc:  # a missing driver, say: that backend imports it itself
                missing.append(f"{entry[0]}: {type(exc).__name__}")
        if was_pending and not pending:
            done = {"preloaded": round(time.monotonic() - began, 3)}
            _send(sock, {**done, "loaded": loaded, "missing": missing})
            refused = _unsafe_to_fork()
            if refused:  # it will refuse every request: say so now
                _send(sock, {"refused": refused})

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def fork(request: dict) -> None:
        wanted = set(request.get("needs", ()))
        for entry in PRELOAD:
            if (entry[1] is None or entry[1] in wanted) and entry[0] not in tried:
                preload(entry)
        refused = _unsafe_to_fork() or _shadowing([*request.get("path", ()), request["cwd"]])
        if refused:
            _send(sock, {"id": request["id"], "error": refused})
            return
        try:
            pid = _fork_child(request, base_path, server_fds)
        except OSError as exc:
            _send(sock, {"id": request["id"], "error": str(exc)})
            return
        children.add(pid)
        _send(sock, {"id": request["id"], "pid": pid, "preloaded": len(loaded) + len(missing)})

    buffer = b""
    try:
        while True:
            readable, _, _ = select.select([sock, wake_r], [], [], 0 if pending else None)
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
                reap()
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    fork(json.loads(line))
                reap()
            if pending and not readable:
                preload(pending[0])
    except OSError:
        pass
    finally:
        _stop_children(children)


def _stop_children(children: set[int]) -> None:
    """SIGTERM every child's group, SIGKILL what is left after the grace, reap them all."""
    groups = set(children)
    for pid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.02)
    for pid in groups:  # the leaders are gone; what they started may not be
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while children:
            pid, _ = os.waitpid(-1, 0)
            children.discard(pid)


def _fork_child(request: dict, base_path: list[str], server_fds: tuple[int, ...]) -> int:
    """Fork one backend; return its PID once it leads its own session."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(ready_r)
        _child(request, base_path, server_fds, ready_w)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # b"" if it died first: it is reaped and reported like any other
    finally:
        os.close(ready_r)
    return pid


def _child(request: dict, base_path: list[str], server_fds: tuple[int, ...], ready: int) -> None:
    code = 1
    try:
        os.setsid()
        os.write(ready, b"1")
        os.close(ready)
        signal.set_wakeup_fd(-1)
        for fd in server_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
        # As `python -m uvicorn` would have it: the working folder first (uvicorn puts
        # --app-dir before it), then the interpreter's own path.
        sys.path[:] = [os.getcwd(), *base_path]
        sys.argv = [request["argv0"], *request["args"]]
        import importlib

        importlib.invalidate_caches()
        from uvicorn.main import main as uvicorn_main

        uvicorn_main.main(args=request["args"], prog_name=request["argv0"])
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    try:
        serve(int(sys.argv[1]), sys.argv[2:])
    finally:
        # Its children are stopped and reaped: skip tearing down a hundred preloaded modules.
        os._exit(0)
