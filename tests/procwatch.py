"""Whether processes are gone, for the tests that start and stop them (by PID, never by name)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from grader.toolkit.procs import children, children_by_parent, descendants

__all__ = [
    "children",
    "children_by_parent",
    "ctrl_c_possible",
    "descendants",
    "gone",
    "gone_soon",
]


def gone(pid: int, group: bool = False) -> bool:
    """No process `pid` is left (with `group`: none in the process group `pid`)."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return True
    return False


def gone_soon(pid: int, group: bool = False, seconds: float = 10) -> bool:
    """Whether `pid` (or its group) is gone within `seconds` (killed members must be reaped)."""
    deadline = time.monotonic() + seconds
    while not gone(pid, group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid, group)


@contextmanager
def ctrl_c_possible() -> Iterator[None]:
    """Processes started in the block get SIGINT at its default action, so Ctrl-C reaches them:
    a shell's background job starts with SIGINT ignored, and an ignored signal is inherited
    (a CI run started that way failed the Ctrl-C tests: nothing in the tree could be interrupted)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
