"""Data access: chapter 4's queries on the `messages` table, and the lock a turn takes.

The queries are SQLAlchemy Core statements built from the tables in `tables.py`, so the same
code speaks SQLite, Postgres and MySQL. Each function runs inside the caller's `Database`
block; `locked_thread` opens the one block a whole turn runs in.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from sqlalchemy import delete, insert, select, update  # noqa: F401 (TODO 5.2 uses update)
from sqlalchemy.exc import IntegrityError

from backend.db import Database
from backend.tables import messages, threads


def append_messages(db: Database, thread_id: UUID, new: list[dict[str, Any]]) -> None:
    """Insert one row per message, in order, inside the caller's transaction."""
    if not new:
        return
    rows = [{"thread_id": str(thread_id), "role": m["role"], "parts": m["parts"]} for m in new]
    # One statement, run once per row (executemany); ids keep the list's order.
    db.execute(insert(messages), rows)


def load_history(db: Database, thread_id: UUID) -> list[dict[str, Any]]:
    """Every message of one thread, oldest first, as `{"role": ..., "parts": [...]}` dicts."""
    query = (
        select(messages.c.role, messages.c.parts)
        .where(messages.c.thread_id == str(thread_id))
        .order_by(messages.c.id)
    )
    return [{"role": row["role"], "parts": row["parts"]} for row in db.fetchall(query)]


def delete_thread(db: Database, thread_id: UUID) -> None:
    """Remove every message of one thread; other threads are untouched."""
    db.execute(delete(messages).where(messages.c.thread_id == str(thread_id)))


def lock_thread(db: Database, thread_id: UUID) -> bool:
    """Lock the thread's row until `db`'s transaction ends; False when it has no row yet."""
    # TODO 5.2: one UPDATE of this thread's row in `threads` that adds 1 to its `turns`, and
    # whether it changed a row. The database keeps a row it updated locked until the
    # transaction ends, so a second turn's UPDATE of the same row waits, on any instance, for
    # the first turn to commit. On SQLite an UPDATE takes the file's one write lock instead,
    # which serializes every turn: slower, just as correct.
    raise NotImplementedError("TODO 5.2")


@contextmanager
def locked_thread(thread_id: UUID) -> Iterator[Database]:
    """A transaction that holds `thread_id`'s lock: one turn at a time per thread, everywhere.

    Everything the turn does inside it (read the history, ask the assistant, store the new
    messages) happens after every earlier turn of the thread committed and before any later
    one starts, on every instance: so no turn's rows interleave with another's, and every
    reply was made from the whole history.
    """
    for _ in range(2):
        with Database() as db:
            if lock_thread(db, thread_id):
                yield db
                return
        # No row yet: a new thread, or one chapter 4 wrote. Add it in its own transaction,
        # then lock it. Two first turns at once may both try: the loser's INSERT fails on the
        # primary key, which only means the row is there now.
        try:
            with Database() as db:
                db.execute(insert(threads).values(id=str(thread_id)))
        except IntegrityError:
            pass
    raise RuntimeError(f"thread {thread_id} has no row even after inserting it")


def ping(db: Database) -> None:
    """One round trip that reads the messages table (a readiness probe's question)."""
    db.fetchone(select(messages.c.id).limit(1))
