"""The step log: what the grader did during one check, in order, for the report.

Every request, restart, kill and page action is one line. The plugin starts a fresh log before
each check and prints it under a failure, so a learner can replay what happened without reading
the grader's code. Checks that run clients in threads log from several threads at once.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_lines: list[str] = []
_started = time.monotonic()
# A load test sends thousands of requests: the log keeps its start and says how much it left out.
LIMIT = 200
_dropped = 0


def begin() -> None:
    """Forget the previous check's steps and restart the clock."""
    global _started, _dropped
    with _lock:
        _lines.clear()
        _dropped = 0
        _started = time.monotonic()


def record(text: str) -> None:
    global _dropped
    with _lock:
        if len(_lines) < LIMIT:
            _lines.append(f"{time.monotonic() - _started:6.2f}s  {text}")
        else:
            _dropped += 1


def taken() -> list[str]:
    with _lock:
        return [*_lines, *([f"… and {_dropped} more steps"] if _dropped else [])]
