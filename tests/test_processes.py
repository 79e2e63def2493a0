"""`grader.processes`: real uvicorn backends started, restarted, killed and always stopped."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader import REPO_ROOT
from grader.processes import Backend, BackendError, free_port, start_all

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "chapters"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture()
def backends(tmp_path: Path) -> Iterator[list[Backend]]:
    """Backends a test makes; each is stopped at the end, by PID, even when the test failed."""
    made: list[Backend] = []
    yield made
    for b in made:
        b.stop()
        assert b.proc is None or group_gone(b.proc.pid), f"{b.name} left processes behind"


def make(backends: list[Backend], tmp_path: Path, fixture: str = "passing", **kw) -> Backend:
    b = Backend(
        FIXTURES / fixture,
        tmp_path / f"b{len(backends)}",
        env={"ASSISTANT_PROVIDER": "offline"},
        name=f"{fixture}-{len(backends)}",
        **kw,
    )
    backends.append(b)
    return b


def health(b: Backend) -> httpx.Response:
    return httpx.get(f"{b.url}/health", timeout=5)


def test_free_port_is_bindable() -> None:
    assert 1024 < free_port() < 65536


def test_start_restart_stop(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path).start()
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
    assert gone(second)
    b.stop()  # stopping twice is harmless
    with pytest.raises(httpx.ConnectError):
        health(b)


def test_kill_is_sigkill(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path).start()
    pid = b.proc.pid
    b.kill()
    assert b.proc.returncode == -signal.SIGKILL
    assert gone(pid) and group_gone(pid)
    # SIGKILL runs no shutdown handlers: uvicorn never logs its shutdown.
    assert "Shutting down" not in b.log()
    b.kill()  # a dead backend: nothing to do
    b.start()
    assert health(b).status_code == 200


def test_start_all_boots_in_parallel(backends: list[Backend], tmp_path: Path) -> None:
    one, two = make(backends, tmp_path), make(backends, tmp_path)
    assert start_all([one, two]) == [one, two]
    assert one.port != two.port
    assert one.proc.pid != two.proc.pid
    assert health(one).status_code == health(two).status_code == 200
    assert one.log_path != two.log_path


def test_workers_are_stopped_with_their_parent(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path, workers=2).start()
    pgid = b.proc.pid
    assert health(b).status_code == 200
    b.stop()
    deadline = time.monotonic() + 5
    while not group_gone(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_gone(pgid), "a worker outlived `stop()`"


def test_a_crash_at_import_reports_the_traceback(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path, "crashing")
    with pytest.raises(BackendError) as exc:
        b.start(timeout=20)
    assert "exited with code 1 before answering GET /health" in str(exc.value)
    assert "NameError: name 'TITLE' is not defined" in exc.value.log
    assert not b.alive


def test_start_all_stops_every_backend_when_one_fails(
    backends: list[Backend], tmp_path: Path
) -> None:
    good = make(backends, tmp_path)
    bad = make(backends, tmp_path, "crashing")
    with pytest.raises(BackendError):
        start_all([good, bad], timeout=20)
    assert not good.alive and not bad.alive
    assert gone(good.proc.pid) and gone(bad.proc.pid)


def test_everything_is_stopped_after_an_exception(tmp_path: Path) -> None:
    started: list[Backend] = []
    with pytest.raises(RuntimeError, match="a check blew up"):
        try:
            started = start_all([Backend(FIXTURES / "passing", tmp_path / f"b{i}") for i in (1, 2)])
            raise RuntimeError("a check blew up")
        finally:
            for b in started:
                b.stop()
    assert len(started) == 2
    assert all(gone(b.proc.pid) and group_gone(b.proc.pid) for b in started)


def test_a_wrong_health_status_fails_fast(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path, "broken-health")
    began = time.monotonic()
    with pytest.raises(BackendError) as exc:
        b.start(timeout=30)
    assert time.monotonic() - began < 15, "a 500 from /health is an answer, not a slow start"
    assert "GET /health answered 500" in str(exc.value)
    assert "NameError: name 'STATUS' is not defined" in exc.value.log
    assert not b.alive and gone(b.proc.pid)


def test_a_backend_that_never_answers_times_out(backends: list[Backend], tmp_path: Path) -> None:
    b = make(backends, tmp_path, "hangs")
    began = time.monotonic()
    with pytest.raises(BackendError) as exc:
        b.start(timeout=2)
    assert time.monotonic() - began < 12  # the timeout, then at most the SIGTERM grace
    assert "did not answer GET /health with 200 within 2 s" in str(exc.value)
    assert not b.alive
    assert gone(b.proc.pid) and group_gone(b.proc.pid)
