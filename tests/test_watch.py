"""`grader watch`: a save re-checks the chapter from a run prepared in advance, and nothing the
watch started outlives it.

The prepared run (`grader.checking.PreparedRun`) is a pytest process that has imported what a run
needs and waits, with a fork server of its own; a save lets it go. The learner's code is loaded
only by the backends, after the save: a change must show in the very next report.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from procwatch import children, ctrl_c_possible, gone_soon
from procwatch import descendants as below

from grader import REPO_ROOT
from grader.checking import PreparedRun
from grader.manifest import load

SOLUTION_1 = REPO_ROOT / "solutions" / "01-baseline"


def process_state(pid: int) -> str:
    """`pid`'s command, state and kernel wait channel, from /proc."""
    try:
        proc = Path(f"/proc/{pid}")
        cmd = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        state = proc.joinpath("stat").read_text().split(") ", 1)[1].split()[0]
        return f"{cmd} [{state}, {proc.joinpath('wchan').read_text()}]"
    except OSError:
        return "gone"


def test_a_discarded_prepared_run_leaves_no_process(tmp_path: Path) -> None:
    before = children(os.getpid())  # an xdist worker may have other children (servers)
    prepared = PreparedRun(load().chapter(1), SOLUTION_1)
    pids = children(os.getpid()) - before
    assert pids, "the prepared run started no process"
    prepared.discard()
    assert all(gone_soon(pid) for pid in pids), f"still running after discard: {pids}"


def exited(pid: int) -> bool:
    """Gone, or a zombie: it has exited, and its parent (PreparedRun) has not reaped it yet."""
    state = process_state(pid)
    return state == "gone" or state.endswith("[Z, 0]")


def test_ctrl_c_ends_a_waiting_prepared_run_at_once(tmp_path: Path) -> None:
    """The prepared run has nothing to clean up while it waits: it exits without the
    interpreter's teardown (which would wait on the check module's background import)."""
    before = children(os.getpid())
    with ctrl_c_possible():
        prepared = PreparedRun(load().chapter(1), SOLUTION_1)
    try:
        (pytest_pid,) = [
            pid for pid in children(os.getpid()) - before if "pytest" in process_state(pid)
        ]
        time.sleep(0.5)  # inside its imports, Streamlit's among them in a thread of its own
        os.kill(pytest_pid, signal.SIGINT)
        deadline = time.monotonic() + 3
        while not exited(pytest_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exited(pytest_pid), process_state(pytest_pid)
    finally:
        prepared.discard()


def test_a_save_rechecks_the_changed_code_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    copy = shutil.copytree(SOLUTION_1, tmp_path / "01-baseline")
    with ctrl_c_possible():
        proc = subprocess.Popen(
            [sys.executable, "-m", "grader", "watch", "1", "--target", str(copy)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(x.decode()) for x in proc.stdout], daemon=True
    ).start()
    seen: list[str] = []

    def until(text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            seen.append(line)
            if text in line:
                return

    try:
        until("milestones pass")  # the first run, cold
        time.sleep(2)  # the learner edits; the next run gets ready
        main_py = copy / "backend" / "main.py"
        main_py.write_text(
            main_py.read_text().replace('return {"ping": "pong"}', 'return {"ping": "pang"}')
        )
        until("changed: main.py")
        until("milestones pass")  # the re-check, from the prepared run
        report = "".join(seen[-30:])
        assert "✗ 1.4" in report, report  # the change is what the re-check saw
    finally:
        descendants = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Say what each process was doing before clearing them away (seen once in CI).
            states = {pid: process_state(pid) for pid in below(proc.pid)}
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            tail = "".join(seen[-15:])
            raise AssertionError(f"still running 30 s after Ctrl-C: {states}\n{tail}") from None
    assert proc.returncode is not None
    assert all(gone_soon(pid) for pid in descendants), f"left running after Ctrl-C: {descendants}"
