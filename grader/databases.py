"""Databases for the checks: a fresh, empty database per check, on SQLite, Postgres or MySQL."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from grader.dbservers.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from grader.dbservers.server import Server

# The servers' code imports SQLAlchemy (half a second): it is imported when a check first asks
# for a server, so the checks of chapters 1-3 (SQLite files only) do not wait for it.


class Databases:
    """Hands out fresh database URLs of one kind (`sqlite`, `postgres` or `mysql`).

    A Postgres or MariaDB server is started on first use (or taken from GRADER_POSTGRES_URL /
    GRADER_MYSQL_URL) and stopped by `close()`. When none can be had, the check is skipped with a
    message that says how to get one, or fails when `require` is set (CI, `--require-all`).
    """

    def __init__(self, kind: str, workdir: Path, require: bool) -> None:
        self.kind = kind
        self.workdir = workdir
        self.require = require
        self._counter = itertools.count(1)
        self._server: Server | None = None
        self._error: str | None = None

    @property
    def server(self) -> Server:
        """The session's server, started once (a failure is remembered, not retried)."""
        if self._error is not None:
            self._unavailable(self._error)
        if self._server is None:
            from grader.dbservers.session import session_server

            try:
                self._server = session_server(self.kind)
            except DatabaseUnavailable as exc:
                self._error = str(exc)
                self._unavailable(self._error)
        return self._server

    def fresh_url(self) -> str:
        n = next(self._counter)
        if self.kind == "sqlite":
            folder = self.workdir / f"db-{n}"
            folder.mkdir()
            return f"sqlite:///{folder / 'messages.db'}"
        server = self.server
        # A shared server (GRADER_*_URL) may serve several grader runs at once: names must differ.
        name = f"grader_{n}" if server.owned else f"grader_{os.getpid()}_{n}"
        try:
            return server.create_database(name)
        except DatabaseUnavailable as exc:
            self._unavailable(str(exc))

    def connection_count(self, url: str, backend_pid: int | None = None) -> int | None:
        """The database's own count of open connections to `url` (not counting this one).

        On SQLite there is no server to ask: it is the number of file descriptors the backend
        process `backend_pid` holds on the database file (None where that cannot be read).
        """
        from grader.dbservers import connections

        if self.kind == "sqlite":
            if backend_pid is None:
                raise ValueError("on SQLite, connection_count needs the backend's PID")
            path = Path(url.removeprefix("sqlite:///"))  # fresh_url's own form
            return connections.sqlite_file_handles(backend_pid, path)
        return connections.connection_count(url)

    def connection_ids(self, url: str) -> set[str]:
        """Identities of the server's connections to `url` (new ones mean new connections)."""
        from grader.dbservers import connections

        return connections.connection_ids(url)

    def _unavailable(self, message: str):
        if self.require:
            raise DatabaseUnavailable(message)
        pytest.skip(message)

    def close(self) -> None:
        """Stop every server this object started (or drop the databases it made on another)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
