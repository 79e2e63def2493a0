"""The one door to the database: one engine per process, one transaction per `with` block.

    with Database() as db:
        rows = db.fetchall(select(messages).where(messages.c.thread_id == thread_id))
        db.execute("DELETE FROM messages WHERE thread_id = :thread_id", {"thread_id": tid})

`engine` below is made once, when this module is imported. It owns this process's pool of
connections and opens them lazily, the first one on the first request. Every block borrows one
connection from the pool and gives it back, so the database sees a handful of connections per
process, whatever the traffic. An engine made per request would be a new pool per request: a
new connection (with a login) each time, and nothing bounding how many are open at once.
"""

import os
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.sql import Executable

from backend.settings import DATABASE_URL

# No request waits on the database for longer than about this (SPEC: ~6 s), then it gets a
# 503 and its transaction is rolled back. The settings below add up to it.
DEADLINE_SECONDS = 5
# Opening a connection, and waiting for a free one in the pool, give up after this.
CONNECT_TIMEOUT_SECONDS = 2
# How long SQLite waits for another connection's write to finish before "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = DEADLINE_SECONDS
# Connections each process keeps (POOL_SIZE) and may open on top under load (MAX_OVERFLOW).
# Several processes share one server: processes × (POOL_SIZE + MAX_OVERFLOW) must stay below
# the server's max_connections (100 by default on Postgres, 151 on MySQL).
POOL_SIZE = 5
MAX_OVERFLOW = 5

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


def make_engine(url: URL) -> Engine:
    """An engine for `url`, configured for its dialect. Call it once per process."""
    kind = url.get_backend_name()
    if kind == "sqlite":
        return sqlite_engine(url)
    if kind == "postgresql":
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            # The server's own bound on one statement (a lock wait included).
            "options": f"-c statement_timeout={DEADLINE_SECONDS}s",
        }
    else:  # mysql
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            # pymysql gives up on a server that stops answering (the bound on the client side).
            "read_timeout": DEADLINE_SECONDS,
            "write_timeout": DEADLINE_SECONDS,
            "init_command": f"SET SESSION innodb_lock_wait_timeout = {DEADLINE_SECONDS}",
        }
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,  # all connections busy: a 503 soon, not a queue
        pool_recycle=1800,  # no connection is older than 30 minutes (MySQL drops idle ones at 8 h)
    )
    if kind == "postgresql":
        cut_after_deadline(engine)
    return engine


def sqlite_engine(url: URL) -> Engine:
    # `timeout` is sqlite3's busy timeout: how long a write waits for the file's one write lock.
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        pool_timeout=CONNECT_TIMEOUT_SECONDS,  # all connections busy: a 503 soon, not a queue
    )

    @event.listens_for(engine, "connect")
    def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL (write-ahead log): readers never wait for the writer, nor the writer for them,
        # and a commit appends to the log instead of rewriting pages. It needs every process
        # on one machine (not a network drive). synchronous=NORMAL syncs the log at
        # checkpoints, not at every commit: a crash of the backend loses nothing, a power
        # cut may lose the last commits (never corrupting the file).
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # SQLite leaves foreign keys off unless each connection turns them on.
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return engine


def cut_after_deadline(engine: Engine) -> None:
    """Close a Postgres connection's socket when it is borrowed for longer than the deadline.

    Postgres enforces statement_timeout itself, but a server that is frozen (SIGSTOP, a stuck
    disk, a network that drops packets) enforces nothing, and psycopg has no read timeout:
    without this, a request waits for as long as the server is frozen. Shutting the socket
    down makes the waiting call fail at once; the pool then drops that connection, and the
    request's error handler answers 503.
    """

    @event.listens_for(engine, "checkout")
    def start_clock(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        timer = threading.Timer(DEADLINE_SECONDS, shut_socket, [dbapi_connection.pgconn.socket])
        timer.daemon = True
        timer.start()
        record.info["deadline"] = timer

    @event.listens_for(engine, "checkin")
    def stop_clock(_dbapi_connection: Any, record: Any) -> None:
        timer = record.info.pop("deadline", None)
        if timer is not None:
            timer.cancel()


def shut_socket(fd: int) -> None:
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the request finished just in time


# One engine, so one pool, per process.
engine = make_engine(DATABASE_URL)


class Database:
    """One unit of work: a connection from the pool and a transaction around the block.

    Leaving the block commits; an exception inside it rolls everything back (and propagates).
    Either way the connection goes back to the pool, not closed.
    """

    def __enter__(self) -> "Database":
        self._begin = engine.begin()
        self._connection: Connection = self._begin.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._begin.__exit__(*exc_info)

    def _run(self, statement: str | Executable, params: Params) -> Any:
        # A string is SQL text with named placeholders (`:thread_id`); the values travel
        # separately, as bound parameters, so no value can ever change the statement.
        if isinstance(statement, str):
            statement = text(statement)
        return self._connection.execute(statement, params)

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
