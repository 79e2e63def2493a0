"""`grader.toolkit.forkserver`: backends forked from a preloaded server are still real processes.

Each backend forked from it leads its own process group, dies of SIGKILL, shuts down gracefully
on SIGTERM, runs with exactly the environment, folder and import path a `python -m uvicorn`
subprocess would have, imports the learner's code afresh, and reports a crash at import as the
subprocess path does. Closing the server leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from procwatch import gone, gone_soon

from grader.checking import _run_pytest
from grader.toolkit import forkserver
from grader.toolkit.forkserver import DetachedServer, ForkedProcess, ForkServer
from grader.toolkit.procs import Backend, BackendError, pid_alive, start_all


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


# A backend that tells what it runs with.
INTROSPECT = """
import os
import sys

from fastapi import FastAPI

VERSION = {version}
app = FastAPI()


@app.get("/health")
def health():
    return {{"status": "ok"}}


@app.get("/inside")
def inside():
    return {{
        "version": VERSION,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path[:2],
        "file": __file__,
    }}
"""


def write_chapter(folder: Path, version: int = 1) -> Path:
    (folder / "backend").mkdir(parents=True, exist_ok=True)
    (folder / "backend" / "__init__.py").write_text("")
    (folder / "backend" / "main.py").write_text(textwrap.dedent(INTROSPECT.format(version=version)))
    return folder


@pytest.fixture()
def forked(fork_server: ForkServer) -> Iterator[ForkServer]:
    """Backends made while this fixture is active are forked from `fork_server`."""
    forkserver.activate(fork_server)
    try:
        yield fork_server
    finally:
        forkserver.activate(None)


@pytest.fixture()
def make(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(chapter: Path, **kw: Any) -> Backend:
        b = Backend(chapter, tmp_path / f"work-{len(made)}", name=f"b{len(made)}", **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
        assert b.proc is None or gone(b.proc.pid, group=True), f"{b.name} left processes behind"


def inside(b: Backend) -> dict[str, Any]:
    return httpx.get(f"{b.url}/inside", timeout=5).json()


def test_the_server_preloads_the_backends_imports(fork_server: ForkServer) -> None:
    assert fork_server.wait_ready()["ready"] == fork_server.pid
    preloaded = fork_server.wait_preloaded()
    for name in ("fastapi", "uvicorn.main", "sqlalchemy.orm", "pydantic", "assistant"):
        assert name in preloaded["loaded"], preloaded["missing"]
    assert "httpx" not in preloaded["loaded"], "on demand only"
    assert fork_server.usable, fork_server.broken


def test_drivers_are_preloaded_for_their_database() -> None:
    s = ForkServer.start(also=forkserver.drivers_for("postgres"))
    try:
        loaded = s.wait_preloaded()["loaded"]
    finally:
        s.close()
    assert "psycopg" in loaded and "sqlalchemy.dialects.postgresql.psycopg" in loaded
    assert "pymysql" not in loaded


def test_what_a_backend_imports_is_read_from_its_sources(tmp_path: Path) -> None:
    chapter = write_chapter(tmp_path / "chapter")
    (chapter / "backend" / "db.py").write_text("import sqlalchemy as sa\nfrom httpx import get\n")
    assert forkserver.needs(chapter, {}) == ["fastapi", "httpx", "os", "sqlalchemy", "sys"]
    url = {"DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1/db"}
    assert {"pymysql", "sqlalchemy"} <= set(forkserver.needs(chapter, url))


def test_a_backend_asked_for_early_does_not_wait_for_the_preloading(
    make: Callable[..., Backend], tmp_path: Path
) -> None:
    """Forked with what the server has loaded so far; it imports the rest itself."""
    early = ForkServer.start()
    forkserver.activate(early)
    try:
        b = make(write_chapter(tmp_path / "chapter")).start()
        assert isinstance(b.proc, ForkedProcess)
        assert inside(b)["version"] == 1
        assert early.wait_preloaded()["loaded"]
        b.stop()
        assert b.proc.returncode == -signal.SIGTERM
    finally:
        forkserver.activate(None)
        early.close()
    assert gone_soon(early.pid)


def test_a_forked_backend_is_its_own_process_group(
    forked: ForkServer, make: Callable[..., Backend], tmp_path: Path
) -> None:
    b = make(write_chapter(tmp_path / "chapter")).start()
    assert isinstance(b.proc, ForkedProcess)
    pid = b.proc.pid
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    assert os.getpgid(pid) != os.getpgid(0), "it must not share the grader's group"
    assert parent_of(pid) == forked.pid
    assert inside(b)["pid"] == pid
    assert b.log().startswith("--- grader: ") and "[fork server]" in b.log().splitlines()[0]


def test_sigkill_kills_it(forked: ForkServer, make: Callable[..., Backend], tmp_path: Path) -> None:
    b = make(write_chapter(tmp_path / "chapter")).start()
    pid = b.proc.pid
    b.kill()
    assert b.proc.returncode == -signal.SIGKILL
    assert gone(pid) and gone(pid, group=True)
    assert "Shutting down" not in b.log()
    b.start()  # and it starts again, forked afresh
    assert isinstance(b.proc, ForkedProcess) and b.proc.pid != pid
    assert httpx.get(f"{b.url}/health", timeout=5).status_code == 200


def test_sigterm_is_a_graceful_shutdown(
    forked: ForkServer, make: Callable[..., Backend], tmp_path: Path
) -> None:
    b = make(write_chapter(tmp_path / "chapter")).start()
    pid = b.proc.pid
    began = time.monotonic()
    b.stop()
    assert time.monotonic() - began < 3, "SIGTERM must stop it within the grace, not SIGKILL"
    assert b.proc.returncode == -signal.SIGTERM
    log = b.log()
    assert "Shutting down" in log and "Application shutdown complete" in log
    assert f"Finished server process [{pid}]" in log
    assert gone(pid, group=True)


def test_environment_cwd_and_path_are_those_of_a_subprocess(
    fork_server: ForkServer, make: Callable[..., Backend], tmp_path: Path, monkeypatch: Any
) -> None:
    """The same backend, forked and as a subprocess: the same environment, folder and path."""
    chapter = write_chapter(tmp_path / "chapter")
    monkeypatch.setenv("GRADER_TEST_PARENT_VARIABLE", "from the grader")  # set after the
    # server started: a forked backend gets the environment of its launch, not the server's
    env = {"DATABASE_URL": "sqlite:///x.db", "ASSISTANT_PROVIDER": "offline"}
    seen = {}
    for how in ("forkserver", "subprocess"):
        forkserver.activate(fork_server if how == "forkserver" else None)
        try:
            b = make(chapter, env=env).start()
        finally:
            forkserver.activate(None)
        assert isinstance(b.proc, ForkedProcess) == (how == "forkserver")
        seen[how] = inside(b)
        assert seen[how]["cwd"] == str(b.workdir)
        assert seen[how]["path"] == [str(chapter), str(b.workdir)]
        assert seen[how]["file"] == str(chapter / "backend" / "main.py")
        assert seen[how]["env"] == {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        b.stop()
    forked_env, subprocess_env = seen["forkserver"]["env"], seen["subprocess"]["env"]
    assert forked_env == subprocess_env
    assert forkserver.ENV_FD not in forked_env


def test_the_learners_code_is_imported_afresh(
    forked: ForkServer, make: Callable[..., Backend], tmp_path: Path
) -> None:
    chapter = write_chapter(tmp_path / "chapter", version=1)
    other = write_chapter(tmp_path / "other", version=2)
    a, b = start_all([make(chapter), make(other)])
    assert (inside(a)["version"], inside(b)["version"]) == (1, 2)
    write_chapter(chapter, version=3)
    a.restart()
    assert inside(a)["version"] == 3


def test_an_import_error_is_in_the_log_and_reported(
    forked: ForkServer,
    make: Callable[..., Backend],
    fixture_chapter: Callable[[str], Path],
) -> None:
    b = make(fixture_chapter("crashing"))
    with pytest.raises(BackendError) as exc:
        b.start(timeout=20)
    assert isinstance(b.proc, ForkedProcess)
    assert "exited with code 1 before answering GET /health" in str(exc.value)
    assert "Traceback (most recent call last)" in exc.value.log
    assert "NameError: name 'TITLE' is not defined" in exc.value.log
    assert b.log_path.read_text().startswith("--- grader: ")
    assert gone(b.proc.pid, group=True)


def test_a_chapter_shadowing_a_preloaded_module_is_not_forked(
    forked: ForkServer, make: Callable[..., Backend], tmp_path: Path
) -> None:
    """A chapter with its own `assistant` gets it, as `python -m uvicorn` would give it."""
    chapter = write_chapter(tmp_path / "chapter")
    (chapter / "assistant").mkdir()
    (chapter / "assistant" / "__init__.py").write_text("MINE = True\n")
    main = chapter / "backend" / "main.py"
    main.write_text(main.read_text() + "\nimport assistant\nVERSION = assistant.MINE\n")
    b = make(chapter).start()
    assert isinstance(b.proc, subprocess.Popen)
    assert "would shadow the module assistant" in b.log()
    assert inside(b)["version"] is True


def test_workers_are_never_forked(
    forked: ForkServer, make: Callable[..., Backend], tmp_path: Path
) -> None:
    b = make(write_chapter(tmp_path / "chapter"), workers=2).start()
    assert isinstance(b.proc, subprocess.Popen)
    assert "[fork server]" not in b.log()


def test_closing_the_server_stops_its_backends(
    make: Callable[..., Backend], tmp_path: Path
) -> None:
    server = ForkServer.start()
    forkserver.activate(server)
    try:
        backends = start_all([make(write_chapter(tmp_path / "chapter")) for _ in range(2)])
    finally:
        forkserver.activate(None)
    pids = [b.proc.pid for b in backends]
    server.close()  # with both backends still running
    assert gone_soon(server.pid)
    for pid in pids:
        assert gone_soon(pid) and gone_soon(pid, group=True), "a backend outlived its server"
    for b in backends:
        assert not b.alive


def test_a_dead_server_falls_back_to_subprocesses(
    make: Callable[..., Backend], tmp_path: Path
) -> None:
    server = ForkServer.start()
    server.wait_ready()
    os.killpg(server.pid, signal.SIGKILL)  # a zombie until close() reaps it
    deadline = time.monotonic() + 10
    while pid_alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    forkserver.activate(server)
    try:
        b = make(write_chapter(tmp_path / "chapter")).start()
    finally:
        forkserver.activate(None)
        server.close()
    assert gone(server.pid)
    assert isinstance(b.proc, subprocess.Popen)
    assert "not forked" in b.log()
    assert httpx.get(f"{b.url}/health", timeout=5).status_code == 200


def test_a_detached_server_ends_with_the_process_it_was_passed_to(tmp_path: Path) -> None:
    """What `grader check` does: start the server, hand its socket to pytest, wait for both."""
    detached = DetachedServer()
    script = (
        "import os, sys\n"
        "from grader.toolkit.forkserver import ForkServer, ENV_FD\n"
        "s = ForkServer.adopt_from_env()\n"
        "assert ENV_FD not in os.environ\n"
        "print(s.wait_ready()['ready'])\n"
    )
    env = {**os.environ, **detached.env()}
    with subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(detached.fd,),
    ) as proc:
        detached.release()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert int(out) == detached.proc.pid
    assert detached.proc.wait(timeout=10) == 0, "the server did not end with its client"
    detached.close()


def test_run_pytest_leaves_no_process(tmp_path: Path) -> None:
    """`grader check`'s runner: the pytest it starts adopts the server; both are gone after."""
    check = tmp_path / "test_adopts.py"
    check.write_text(
        "from grader.toolkit.forkserver import ForkServer\n"
        "def test_adopts():\n"
        "    s = ForkServer.adopt_from_env()\n"
        "    assert s is not None\n"
        "    print('SERVER', s.wait_ready()['ready'])\n"
    )
    cmd = [sys.executable, "-m", "pytest", str(check), "-q", "-s", "-p", "no:cacheprovider"]
    done = _run_pytest(cmd, dict(os.environ), capture=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("SERVER")]
    assert gone(int(line.split()[1])), "the fork server outlived the run"
