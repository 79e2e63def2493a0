"""Whether processes are gone, for the tests that start and stop them (by PID, never by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path


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


def children_by_parent() -> dict[int, list[int]]:
    """Every running process's children, from /proc (parent PID → child PIDs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid`."""
    return set(children_by_parent().get(pid, []))


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    tree = children_by_parent()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found
