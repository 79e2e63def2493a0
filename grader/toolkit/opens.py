"""How often a file is opened, from outside the process that opens it (Linux inotify).

A SQLite database has no server to ask how many connections a backend made. What the grader can
see is the file being opened: a pool opens it once and reuses the connection; an engine made
(and disposed) per request opens it once per request, although it leaves no handle behind to
count. The standard library has no inotify binding, so this is the few calls it needs, through
ctypes.

In WAL mode the file itself is not enough: while any connection of a process is open, SQLite
keeps the file's descriptor of a closed connection and hands it to the next one (its POSIX
locks are per process), so new connections do not open the database file again. Each one does
open the write-ahead log (`messages.db-wal`), though. So the folder is watched, and the opens of
the file and of its log are counted apart: the larger count is the number of connections made.
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
    """`with OpenCounter(path) as opens: ...; opens.count()`: connections made to `path` meanwhile.

    Opens that overlap (several connections opened at once, none closed between) may count as
    one: the count is exact for opens made one at a time, a lower bound otherwise.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._fd = -1
        self._names = {path.name.encode(): 0, f"{path.name}-wal".encode(): 0}

    @staticmethod
    def available() -> bool:
        return hasattr(os, "O_NONBLOCK") and Path("/proc/sys/fs/inotify").is_dir()

    def __enter__(self) -> OpenCounter:
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        folder = str(self.path.parent).encode()
        if self._libc.inotify_add_watch(self._fd, folder, IN_OPEN | IN_CLOSE) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"cannot watch {self.path.parent}")
        return self

    def count(self) -> int:
        """Connections seen so far: opens of the file or of its log, whichever is more."""
        while select.select([self._fd], [], [], 0.05)[0]:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0")
                offset += _EVENT.size + size
                if mask & IN_OPEN and name in self._names:
                    self._names[name] += 1
        return max(self._names.values())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self._fd)
