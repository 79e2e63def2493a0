"""Data access: chapter 3's queries on the `messages` table, now through SQLAlchemy.

The queries are SQLAlchemy Core statements built from the table in `tables.py`, so the same
code speaks SQLite, Postgres and MySQL: SQLAlchemy writes each dialect's SQL and passes every
value as a bound parameter. Each function runs inside the caller's `Database` block, so a
whole turn is one transaction.
"""

from typing import Any
from uuid import UUID

from sqlalchemy import delete, insert, select  # noqa: F401 (TODO 4.2 uses them)

from backend.db import Database
from backend.tables import messages  # noqa: F401 (TODO 4.2 uses it)


def append_messages(db: Database, thread_id: UUID, new: list[dict[str, Any]]) -> None:
    """Insert one row per message, in order, inside the caller's transaction."""
    # TODO 4.2: chapter 3's INSERT, on `db`: one row per message with the thread id as text,
    # the role and the parts (the JSON column takes the list as it is: no json.dumps).
    # Build the statement with insert(messages); never put a value into SQL text yourself.
    raise NotImplementedError("TODO 4.2")


def load_history(db: Database, thread_id: UUID) -> list[dict[str, Any]]:
    """Every message of one thread, oldest first, as `{"role": ..., "parts": [...]}` dicts."""
    # TODO 4.2: chapter 3's SELECT, on `db`: this thread's rows only, ordered by id, each
    # turned into {"role": ..., "parts": [...]} (the JSON column gives back the list).
    raise NotImplementedError("TODO 4.2")


def delete_thread(db: Database, thread_id: UUID) -> None:
    """Remove every message of one thread; other threads are untouched."""
    # TODO 4.2: chapter 3's DELETE, on `db`: this thread's rows, and only this thread's.
    raise NotImplementedError("TODO 4.2")
