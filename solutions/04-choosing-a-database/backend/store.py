"""Data access: chapter 3's queries on the `messages` table, now through SQLAlchemy.

The queries are SQLAlchemy Core statements built from the table in `tables.py`, so the same
code speaks SQLite, Postgres and MySQL: SQLAlchemy writes each dialect's SQL and passes every
value as a bound parameter. Each function runs inside the caller's `Database` block, so a
whole turn is one transaction.
"""

from typing import Any
from uuid import UUID

from sqlalchemy import delete, insert, select  # STARTER: noqa: F401 (TODO 4.2 uses them)

from backend.db import Database
from backend.tables import messages  # STARTER: noqa: F401 (TODO 4.2 uses it)


def append_messages(db: Database, thread_id: UUID, new: list[dict[str, Any]]) -> None:
    """Insert one row per message, in order, inside the caller's transaction."""
    # TODO 4.2: chapter 3's INSERT, on `db`: one row per message with the thread id as text,
    # the role and the parts (the JSON column takes the list as it is: no json.dumps).
    # Build the statement with insert(messages); never put a value into SQL text yourself.
    # BEGIN SOLUTION
    # --8<-- [start:append-turn]
    if not new:
        return
    rows = [{"thread_id": str(thread_id), "role": m["role"], "parts": m["parts"]} for m in new]
    # One statement, run once per row (executemany); ids keep the list's order.
    db.execute(insert(messages), rows)
    # --8<-- [end:append-turn]
    # END SOLUTION


def load_history(db: Database, thread_id: UUID) -> list[dict[str, Any]]:
    """Every message of one thread, oldest first, as `{"role": ..., "parts": [...]}` dicts."""
    # TODO 4.2: chapter 3's SELECT, on `db`: this thread's rows only, ordered by id, each
    # turned into {"role": ..., "parts": [...]} (the JSON column gives back the list).
    # BEGIN SOLUTION
    # --8<-- [start:load-history]
    query = (
        select(messages.c.role, messages.c.parts)
        .where(messages.c.thread_id == str(thread_id))
        .order_by(messages.c.id)
    )
    return [{"role": row["role"], "parts": row["parts"]} for row in db.fetchall(query)]
    # --8<-- [end:load-history]
    # END SOLUTION


def delete_thread(db: Database, thread_id: UUID) -> None:
    """Remove every message of one thread; other threads are untouched."""
    # TODO 4.2: chapter 3's DELETE, on `db`: this thread's rows, and only this thread's.
    # BEGIN SOLUTION
    # --8<-- [start:delete-thread]
    db.execute(delete(messages).where(messages.c.thread_id == str(thread_id)))
    # --8<-- [end:delete-thread]
    # END SOLUTION
