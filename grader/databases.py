"""Databases for the checks: a fresh, empty database per check, on SQLite, Postgres or MySQL."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest


class DatabaseUnavailable(RuntimeError):
    """The database a check needs cannot be had here; the message says how to get one."""


class Databases:
    """Hands out fresh database URLs of one kind (`sqlite`, `postgres` or `mysql`)."""

    def __init__(self, kind: str, workdir: Path, require: bool) -> None:
        self.kind = kind
        self.workdir = workdir
        self.require = require
        self._counter = itertools.count(1)

    def fresh_url(self) -> str:
        n = next(self._counter)
        if self.kind == "sqlite":
            folder = self.workdir / f"db-{n}"
            folder.mkdir()
            return f"sqlite:///{folder / 'messages.db'}"
        return self._unavailable(f"the {self.kind} database is not supported yet")

    def _unavailable(self, message: str) -> str:
        if self.require:
            raise DatabaseUnavailable(message)
        pytest.skip(message)

    def close(self) -> None:
        """Stop every server this object started."""
