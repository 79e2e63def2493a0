"""Data access: the `messages` table, through the standard library's sqlite3.

Nothing here outlives a request. Every request opens its own connection and closes it when
done, so any number of backend processes can share one database file, and a process can be
restarted (or killed) at any moment without losing a conversation.
"""

import json  # STARTER: noqa: F401 (TODO 3.1 and 3.2 use it)
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from backend.settings import DATABASE_PATH

# How long a connection waits for another process's write to finish before giving up with
# "database is locked" (sqlite3.OperationalError, which the API answers with 503).
BUSY_TIMEOUT_SECONDS = 5

# --8<-- [start:schema]
# One row per message. AUTOINCREMENT never reuses an id, even after a delete, so ordering a
# thread by id is ordering it by arrival. The index makes "one thread, in order" a range scan.
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    role TEXT NOT NULL,
    parts TEXT NOT NULL,  -- the message's parts, as a JSON array
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_thread_id_id ON messages (thread_id, id);
"""
# --8<-- [end:schema]


# --8<-- [start:transaction]
@contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work: committed if the block succeeds, rolled back if not.

    `with conn:` on a sqlite3 connection commits or rolls back but does not close it, hence the
    `finally`: the connection lives exactly as long as the block.
    """
    conn = sqlite3.connect(DATABASE_PATH, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# --8<-- [end:transaction]


# --8<-- [start:create-schema]
def create_schema() -> None:
    """Create the table and its index if they are missing (safe to run on every startup)."""
    with transaction() as db:
        db.executescript(SCHEMA)


# --8<-- [end:create-schema]


def append_messages(
    db: sqlite3.Connection, thread_id: UUID, messages: list[dict[str, Any]]
) -> None:
    """Insert one row per message, in order, inside the caller's transaction."""
    # TODO 3.1: insert one row per message, in order, with ? placeholders (never formatting).
    # Columns: thread_id as text, role, parts as a JSON array (json.dumps), created_at (now).
    # BEGIN SOLUTION
    # --8<-- [start:append-turn]
    rows = [(str(thread_id), m["role"], json.dumps(m["parts"])) for m in messages]
    db.executemany(
        "INSERT INTO messages (thread_id, role, parts, created_at) "
        "VALUES (?, ?, ?, CURRENT_TIMESTAMP)",
        rows,
    )
    # --8<-- [end:append-turn]
    # END SOLUTION


def load_history(db: sqlite3.Connection, thread_id: UUID) -> list[dict[str, Any]]:
    """Every message of one thread, oldest first, as `{"role": ..., "parts": [...]}` dicts."""
    # TODO 3.2: load this thread's rows (and only this thread's) from the database, by id.
    # Turn each row back into a {"role": ..., "parts": [...]} dict (json.loads the parts).
    # BEGIN SOLUTION
    # --8<-- [start:load-history]
    rows = db.execute(
        "SELECT role, parts FROM messages WHERE thread_id = ? ORDER BY id",
        (str(thread_id),),
    ).fetchall()
    return [{"role": role, "parts": json.loads(parts)} for role, parts in rows]
    # --8<-- [end:load-history]
    # END SOLUTION


def delete_thread(db: sqlite3.Connection, thread_id: UUID) -> None:
    """Remove every message of one thread; other threads are untouched."""
    # TODO 3.5: delete this thread's rows, and only this thread's.
    # BEGIN SOLUTION
    # --8<-- [start:delete-thread]
    db.execute("DELETE FROM messages WHERE thread_id = ?", (str(thread_id),))
    # --8<-- [end:delete-thread]
    # END SOLUTION
