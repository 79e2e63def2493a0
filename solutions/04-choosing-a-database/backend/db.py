"""The one door to the database: one engine per process, one transaction per `with` block.

    with Database() as db:
        rows = db.fetchall(select(messages).where(messages.c.thread_id == thread_id))
        db.execute("DELETE FROM messages WHERE thread_id = :thread_id", {"thread_id": tid})

The engine owns a pool of connections to the database. Creating it is expensive (it opens real
network connections, each with a login), so a process makes it once and every request borrows a
connection from its pool for the length of one block, then gives it back.
"""

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, event, text  # STARTER: noqa: F401 (TODO 4.1 uses it)
from sqlalchemy.engine import URL, Connection  # STARTER: noqa: F401 (TODO 4.1 uses it)
from sqlalchemy.sql import Executable

from backend.settings import DATABASE_URL

# How long SQLite waits for another process's write to finish before "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 10
# Connections each process keeps (POOL_SIZE) and may open on top under load (MAX_OVERFLOW).
# Several processes share one server: processes × (POOL_SIZE + MAX_OVERFLOW) must stay below
# the server's max_connections (100 by default on Postgres, 151 on MySQL).
POOL_SIZE = 5
MAX_OVERFLOW = 5

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


# --8<-- [start:engine]
def make_engine(url: URL) -> Engine:
    """An engine for `url`, configured for its dialect. Call it once per process."""
    if url.get_backend_name() == "sqlite":
        # `timeout` is sqlite3's busy timeout; the pool keeps one connection per thread.
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

        @event.listens_for(engine, "connect")
        def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # SQLite leaves foreign keys off unless each connection turns them on.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_pre_ping=True,  # a connection the server dropped (restart, idle timeout) is replaced
        pool_recycle=1800,  # ...and none is older than 30 minutes (MySQL drops idle ones at 8 h)
    )


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """This process's engine, made on first use. Requests run in threads, hence the lock."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = make_engine(DATABASE_URL)
        return _engine


# --8<-- [end:engine]


class Database:
    """One unit of work: a connection from the pool and a transaction around the block.

    Leaving the block commits; an exception inside it rolls everything back (and propagates).
    Either way the connection goes back to the pool, not closed.
    """

    def __enter__(self) -> "Database":
        # TODO 4.1: borrow a connection from THIS PROCESS's engine (get_engine(); never
        # create_engine here: that would be a new pool per request) and begin a transaction.
        # BEGIN SOLUTION
        # --8<-- [start:database-enter]
        self._connection: Connection = get_engine().connect()
        self._transaction = self._connection.begin()
        return self
        # --8<-- [end:database-enter]
        # END SOLUTION

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        # TODO 4.1: commit if the block succeeded, roll back if it raised; then give the
        # connection back to the pool (close() on a pooled connection returns it).
        # BEGIN SOLUTION
        # --8<-- [start:database-exit]
        try:
            if exc_type is None:
                self._transaction.commit()
            else:
                self._transaction.rollback()
        finally:
            self._connection.close()
        # --8<-- [end:database-exit]
        # END SOLUTION

    def _run(self, statement: str | Executable, params: Params) -> Any:
        # A string is SQL text with named placeholders (`:thread_id`); the values travel
        # separately, as bound parameters, so no value can ever change the statement.
        # TODO 4.1: run `statement` (text(statement) if it is a str) with `params`.
        # BEGIN SOLUTION
        # --8<-- [start:database-run]
        if isinstance(statement, str):
            statement = text(statement)
        return self._connection.execute(statement, params)
        # --8<-- [end:database-run]
        # END SOLUTION

    # --8<-- [start:database-fetch]
    def fetchall(self, statement: str | Executable, params: Params = None) -> list[dict]:
        """Every row, as dicts keyed by column name."""
        return [dict(row) for row in self._run(statement, params).mappings()]

    def fetchone(self, statement: str | Executable, params: Params = None) -> dict | None:
        """The first row as a dict, or None when there is none."""
        row = self._run(statement, params).mappings().first()
        return dict(row) if row is not None else None

    def execute(self, statement: str | Executable, params: Params = None) -> int:
        """Run a statement that returns no rows (a list of dicts runs it once per dict)."""
        return self._run(statement, params).rowcount

    # --8<-- [end:database-fetch]
