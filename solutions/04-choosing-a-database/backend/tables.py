"""The schema, declared once with SQLAlchemy Core and created the same way on every database.

SQLAlchemy turns these declarations into each dialect's own DDL: `INTEGER PRIMARY KEY
AUTOINCREMENT` on SQLite, `SERIAL` on Postgres, `AUTO_INCREMENT` on MySQL; a `JSON` column
is `JSON` on Postgres and MySQL and text holding JSON on SQLite. The layout is chapter 3's, so
a chapter 3 `messages.db` opens here unchanged.
"""

import time

from sqlalchemy import (
    JSON,
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

# --8<-- [start:messages]
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
# --8<-- [end:messages]


# --8<-- [start:create]
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


# --8<-- [end:create]
