"""`grader.toolkit.procs`: real uvicorn backends started, restarted, killed and always stopped.

Every test runs twice: with backends forked from a fork server (as `grader check` starts them)
and as `python -m uvicorn` subprocesses (the fallback, and always the way with `--workers`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mutants import PASSING
from procwatch import gone, gone_soon

from grader.toolkit import forkserver
from grader.toolkit.forkserver import ForkedProcess
from grader.toolkit.procs import Backend, BackendError, free_port, start_all


@pytest.fixture(params=["forkserver", "subprocess"], autouse=True)
def launcher(request: pytest.FixtureRequest) -> Iterator[str]:
    """How this test's backends start; `--workers` tests are subprocess-only by nature."""
    if request.param == "forkserver":
        forkserver.activate(request.getfixturevalue("fork_server"))
    try:
        yield request.param
    finally:
        forkserver.activate(None)


def expect_launched_by(b: Backend, launcher: str) -> None:
    forked = isinstance(b.proc, ForkedProcess)
    assert forked == (launcher == "forkserver"), f"{b.name} was not started by {launcher}"


@pytest.fixture()
def backend(
    tmp_path: Path, fixture_chapter: Callable[[str], Path]
) -> Iterator[Callable[..., Backend]]:
    """`backend(fixture="passing", **kw)`: a new, unstarted `Backend` of that fixture chapter.

    Each one a test makes is stopped at the end, by PID, even when the test failed.
    """
    made: list[Backend] = []

    def make(fixture: str = "passing", **kw: Any) -> Backend:
        b = Backend(
            fixture_chapter(fixture),
            tmp_path / f"b{len(made)}",
            env={"ASSISTANT_PROVIDER": "offline"},
            name=f"{fixture}-{len(made)}",
            **kw,
        )
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
        assert b.proc is None or gone(b.proc.pid, group=True), f"{b.name} left processes behind"


def health(b: Backend) -> httpx.Response:
    return httpx.get(f"{b.url}/health", timeout=5)


def test_free_port_is_bindable() -> None:
    assert 1024 < free_port() < 65536


def test_start_restart_stop(backend: Callable[..., Backend], launcher: str) -> None:
    b = backend().start()
    expect_launched_by(b, launcher)
    assert b.alive
    assert b.url == f"http://127.0.0.1:{b.port}"
    r = health(b)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert httpx.get(f"{b.url}/ping", timeout=5).json() == {"ping": "pong"}
    assert "Application startup complete" in b.log()
    assert b.log().startswith("--- grader: ")
    assert b.workdir.is_dir() and b.log_path.parent == b.workdir

    first = b.proc.pid
    mark = b.log_offset_now()
    b.restart()
    assert b.proc.pid != first
    assert gone(first)
    assert health(b).status_code == 200
    # log() is the current run's; log_since(mark) is everything after the mark.
    assert b.log().count("--- grader: ") == 1
    assert "Shutting down" in b.log_since(0)
    assert "Application startup complete" in b.log_since(mark)

    second = b.proc.pid
    b.stop()
    assert not b.alive
    assert b.proc.returncode == -signal.SIGTERM  # uvicorn shut down, then re-raised SIGTERM
    assert "Application shutdown complete" in b.log()
    assert gone(second)
    b.stop()  # stopping twice is harmless
    with pytest.raises(httpx.ConnectError):
        health(b)


def test_kill_is_sigkill(backend: Callable[..., Backend], launcher: str) -> None:
    b = backend().start()
    expect_launched_by(b, launcher)
    pid = b.proc.pid
    b.kill()
    assert b.proc.returncode == -signal.SIGKILL
    assert gone(pid) and gone(pid, group=True)
    # SIGKILL runs no shutdown handlers: uvicorn never logs its shutdown.
    assert "Shutting down" not in b.log()
    b.kill()  # a dead backend: nothing to do
    b.start()
    assert health(b).status_code == 200


def test_start_all_boots_in_parallel(backend: Callable[..., Backend]) -> None:
    one, two = backend(), backend()
    assert start_all([one, two]) == [one, two]
    assert one.port != two.port
    assert one.proc.pid != two.proc.pid
    assert health(one).status_code == health(two).status_code == 200
    assert one.log_path != two.log_path


@pytest.mark.parametrize("launcher", ["subprocess"], indirect=True)
def test_workers_are_stopped_with_their_parent(backend: Callable[..., Backend]) -> None:
    b = backend(workers=2).start()
    assert isinstance(b.proc, subprocess.Popen), "uvicorn --workers K is never forked"
    pgid = b.proc.pid
    assert health(b).status_code == 200
    b.stop()
    assert gone_soon(pgid, group=True, seconds=5), "a worker outlived `stop()`"


def test_a_crash_at_import_reports_the_traceback(
    backend: Callable[..., Backend], launcher: str
) -> None:
    b = backend("crashing")
    with pytest.raises(BackendError) as exc:
        b.start(timeout=20)
    expect_launched_by(b, launcher)
    assert "exited with code 1 before answering GET /health" in str(exc.value)
    assert "Traceback (most recent call last)" in exc.value.log
    assert "NameError: name 'TITLE' is not defined" in exc.value.log
    assert not b.alive


@pytest.mark.parametrize("launcher", ["subprocess"], indirect=True)
def test_a_worker_crash_is_reported_without_waiting_out_the_timeout(
    backend: Callable[..., Backend],
) -> None:
    """uvicorn's supervisor respawns crashing workers forever: the grader must not wait on it."""
    b = backend("crashing", workers=2)
    with pytest.raises(BackendError) as exc:
        b.start(timeout=60)
    assert "a backend worker crashed before GET /health answered" in str(exc.value)
    assert "NameError: name 'TITLE' is not defined" in exc.value.log
    assert gone_soon(b.proc.pid, group=True, seconds=5), (
        "the supervisor or a worker outlived the failure"
    )


def test_start_all_stops_every_backend_when_one_fails(backend: Callable[..., Backend]) -> None:
    good = backend()
    bad = backend("crashing")
    with pytest.raises(BackendError):
        start_all([good, bad], timeout=20)
    assert not good.alive and not bad.alive
    assert gone(good.proc.pid) and gone(bad.proc.pid)


def test_everything_is_stopped_after_an_exception(tmp_path: Path) -> None:
    started: list[Backend] = []
    with pytest.raises(RuntimeError, match="a check blew up"):
        try:
            started = start_all([Backend(PASSING, tmp_path / f"b{i}") for i in (1, 2)])
            raise RuntimeError("a check blew up")
        finally:
            for b in started:
                b.stop()
    assert len(started) == 2
    assert all(gone(b.proc.pid) and gone(b.proc.pid, group=True) for b in started)


def test_a_wrong_health_status_fails_fast(backend: Callable[..., Backend]) -> None:
    b = backend("broken-health")
    began = time.monotonic()
    with pytest.raises(BackendError) as exc:
        b.start(timeout=30)
    assert time.monotonic() - began < 15, "a 500 from /health is an answer, not a slow start"
    assert "GET /health answered 500" in str(exc.value)
    assert "NameError: name 'STATUS' is not defined" in exc.value.log
    assert not b.alive and gone(b.proc.pid)


def test_a_backend_that_never_answers_times_out(backend: Callable[..., Backend]) -> None:
    b = backend("hangs")
    began = time.monotonic()
    with pytest.raises(BackendError) as exc:
        b.start(timeout=2)
    assert time.monotonic() - began < 12  # the timeout, then at most the SIGTERM grace
    assert "did not answer GET /health with 200 within 2 s" in str(exc.value)
    assert not b.alive
    assert gone(b.proc.pid) and gone(b.proc.pid, group=True)
