"""The schema the code expects, declared once with SQLAlchemy Core.

From chapter 6 the database's schema is made by migrations (`migrations/versions/`, run with
`alembic upgrade head`), not by the backend: these declarations are what the queries are
built from, and they must describe the schema the last migration leaves. The backend checks at
startup that the database is at that migration (backend/schema.py).

Chapter 6 adds `users` and gives every thread an owner: `threads` gains `user_id`, a `title`
and two timestamps. Timestamps are UTC without a time zone in the column: the same value on
all three databases, and comparable for paging. MySQL's DATETIME keeps whole seconds unless
told otherwise: `DATETIME(6)` keeps microseconds, without which two threads made in one second
could not be told apart and "newest first" would be a coin toss.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects import mysql

# Names for constraints and indexes, so a migration can name what it drops on every database
# (SQLite's batch mode in particular needs names to find them again).
metadata = MetaData(
    naming_convention={
        "pk": "%(table_name)s_pkey",
        "uq": "%(table_name)s_%(column_0_name)s_key",
        "fk": "%(table_name)s_%(column_0_name)s_fkey",
        "ix": "%(table_name)s_%(column_0_N_name)s",
    }
)

Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

messages = Table(
    "messages",
    metadata,
    # AUTOINCREMENT (on SQLite) never reuses an id, even after a delete, so ordering a thread
    # by id is ordering it by arrival, on every database; history pages are ranges of ids.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thread_id", String(36), nullable=False),
    Column("role", String(16), nullable=False),
    Column("parts", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A page of one thread, newest first, is a backwards range scan of this index.
    Index("messages_thread_id_id", "thread_id", "id"),
    sqlite_autoincrement=True,
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    # Usernames are exact: "Alice" and "alice" are two users. MySQL compares strings ignoring
    # case unless the column's collation is binary.
    Column(
        "username",
        String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql"),
        nullable=False,
        unique=True,
    ),
    # Argon2's encoded hash: algorithm, parameters, salt and hash in one string. Never the
    # password itself.
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

threads = Table(
    "threads",
    metadata,
    Column("id", String(36), primary_key=True),
    # Chapter 5's lock: each turn adds one, and holds the row's lock until it commits.
    Column("turns", Integer, nullable=False, server_default="0"),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    # The thread's first prompt, cut to 80 characters; it never changes.
    Column("title", String(80), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # When the thread last had a turn: the thread list is ordered by it, newest first.
    Column("updated_at", Timestamp, nullable=False),
    # "One user's threads, newest first" is a backwards range scan of this index.
    Index("threads_user_id_updated_at_id", "user_id", "updated_at", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The SHA-256 of the user's id and the client's Idempotency-Key: keys are per user.
    Column("key_hash", String(64), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("claim", String(36), nullable=True),
    Column("lease_until", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
