"""How often a file is opened, from outside the process that opens it (Linux inotify).

A SQLite database has no server to ask how many connections a backend made. What the grader can
see is the file being opened: a pool opens it once and reuses the connection; an engine made
(and disposed) per request opens it once per request, although it leaves no handle behind to
count. The standard library has no inotify binding, so this is the few calls it needs, through
ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path
from types import TracebackType

IN_OPEN = 0x00000020
# Watched too, though not counted: inotify merges an event into an identical unread one before
# it, so opens are only counted apart when something else (a close) comes between them.
IN_CLOSE = 0x00000008 | 0x00000010
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


class OpenCounter:
    """`with OpenCounter(path) as opens: ...; opens.count()`: opens of `path` meanwhile.

    Opens that overlap (several connections opened at once, none closed between) may count as
    one: the count is exact for opens made one at a time, a lower bound otherwise.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._fd = -1
        self._seen = 0

    @staticmethod
    def available() -> bool:
        return hasattr(os, "O_NONBLOCK") and Path("/proc/sys/fs/inotify").is_dir()

    def __enter__(self) -> OpenCounter:
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._fd, str(self.path).encode(), IN_OPEN | IN_CLOSE) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"cannot watch {self.path}")
        return self

    def count(self) -> int:
        """Opens seen so far (reads every event queued until now)."""
        while select.select([self._fd], [], [], 0.05)[0]:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + size
                self._seen += bool(mask & IN_OPEN)
        return self._seen

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self._fd)
