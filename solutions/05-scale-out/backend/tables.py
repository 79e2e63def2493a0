"""The schema, declared once with SQLAlchemy Core and created the same way on every database.

SQLAlchemy turns these declarations into each dialect's own DDL: `INTEGER PRIMARY KEY
AUTOINCREMENT` on SQLite, `SERIAL` on Postgres, `AUTO_INCREMENT` on MySQL; a `JSON` column
is `JSON` on Postgres and MySQL and text holding JSON on SQLite. The layout is chapter 3's, so
a chapter 3 `messages.db` opens here unchanged.

Chapter 5 adds two tables beside it, created on startup like the first: `threads`, one row per
thread, whose row a turn locks so that turns on one thread take turns on every instance; and
`idempotency_keys`, which remembers each keyed request's answer so a retry gets it again
instead of storing its turn twice. A chapter 4 database gains them on the first start.
"""

import time

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.exc import DBAPIError

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    # AUTOINCREMENT (on SQLite) never reuses an id, even after a delete, so ordering a thread
    # by id is ordering it by arrival, on every database.
    Column("id", Integer, primary_key=True, autoincrement=True),
    # A UUID as text. A length, because MySQL cannot index a column of unbounded TEXT.
    Column("thread_id", String(36), nullable=False),
    Column("role", String(16), nullable=False),
    # The message's parts, a JSON array: the driver stores and loads it, no json.dumps by hand.
    Column("parts", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # "One thread, in order" is a range scan of this index.
    Index("messages_thread_id_id", "thread_id", "id"),
    sqlite_autoincrement=True,
)

# --8<-- [start:threads]
threads = Table(
    "threads",
    metadata,
    Column("id", String(36), primary_key=True),
    # How many turns the thread has had. Each turn adds one with an UPDATE, and that UPDATE
    # is the turn's lock: the database holds the row's lock until the turn's transaction ends.
    Column("turns", Integer, nullable=False, server_default="0"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The SHA-256 of the client's Idempotency-Key, in hex: the same 64 characters on every
    # database, so keys compare exactly (MySQL's default collation ignores case and
    # trailing spaces) and any key up to 255 characters fits a primary key.
    Column("key_hash", String(64), primary_key=True),
    # The SHA-256 of the request body, to tell a retry from another request under one key.
    Column("request_hash", String(64), nullable=False),
    # Which attempt is running the request (a uuid4), until its answer is stored.
    Column("claim", String(36), nullable=True),
    # Until when (Unix seconds) the claim holds; past it, the instance that claimed the key is
    # taken to be dead and another attempt may run the request.
    Column("lease_until", BigInteger, nullable=False),
    # The answer, kept to be replayed: its status code and its JSON body.
    Column("status_code", Integer, nullable=True),
    Column("response", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
# --8<-- [end:threads]


def create_tables(engine: Engine, attempts: int = 3) -> None:
    """Create the tables and indexes that are missing; safe to run on every startup."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except DBAPIError:
            # Two processes starting at once on an empty database can race: both see no table
            # and one CREATE fails. Its retry finds the table and has nothing left to do. (A
            # server that is down fails every attempt, and the error stops the startup.)
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
