"""Whether processes are gone, for the tests that start and stop them (by PID, never by name)."""

from __future__ import annotations

import os
import time

from grader.toolkit.procs import children, children_by_parent, descendants

__all__ = ["children", "children_by_parent", "descendants", "gone", "gone_soon"]


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
