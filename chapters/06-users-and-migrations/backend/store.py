"""Data access: users, their threads and the threads' messages.

Authorization lives in the queries: every read and write of a thread says `AND user_id =
:caller`, so a thread of someone else's is, to the caller, a thread that does not exist. No
query fetches a thread first and compares its owner afterwards, where one forgotten `if`
would leak it. Each function runs inside the caller's `Database` block.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from fastapi import HTTPException
from sqlalchemy import and_, delete, insert, or_, select, update  # noqa: F401 (TODO 6.4)
from sqlalchemy.exc import IntegrityError

from backend.db import Database
from backend.paging import decode_cursor, encode_cursor  # noqa: F401 (TODO 6.4)
from backend.tables import messages, threads, users

# How many of a thread's newest messages a turn gives the assistant. A turn's cost must not
# grow with its thread: with the whole thread, turn 5,000 reads (and sends a model) 10,000
# messages. The window starts at a user message, so no tool response loses its call.
CONTEXT_MESSAGES = 200
TITLE_CHARS = 80


def utcnow() -> datetime:
    # Naive UTC: what every database stores the same way (backend/tables.py).
    return datetime.now(UTC).replace(tzinfo=None)


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (the columns hold naive UTC; a timestamp with a
    time zone, as Postgres may answer for a column a learner declared so, is converted)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def not_found(thread_id: UUID) -> HTTPException:
    # 404 for someone else's thread too, never 403: a 403 would confirm that it exists.
    return HTTPException(status_code=404, detail=f"no thread {thread_id} of yours")


# --- users ---------------------------------------------------------------------------------


def add_user(db: Database, username: str, password_hash: str) -> str:
    """Insert a user and return its id; IntegrityError when the username is taken."""
    user_id = str(uuid4())
    db.execute(
        insert(users).values(
            id=user_id, username=username, password_hash=password_hash, created_at=utcnow()
        )
    )
    return user_id


def find_user(db: Database, username: str) -> dict[str, Any] | None:
    return db.fetchone(
        select(users.c.id, users.c.password_hash).where(users.c.username == username)
    )


# --- threads -------------------------------------------------------------------------------


def owns_thread(db: Database, user_id: str, thread_id: UUID) -> bool:
    """Whether `thread_id` exists and is `user_id`'s."""
    # TODO 6.3: one SELECT of the thread's row that matches both its id and its owner.
    raise NotImplementedError("TODO 6.3")


def lock_thread(db: Database, user_id: str, thread_id: UUID) -> bool:
    """Lock the caller's thread until `db`'s transaction ends; False when it has none by that id."""
    # TODO 6.3: chapter 5's UPDATE (turns + 1, which takes the row's lock), now only of a row
    # that is the caller's: a thread of someone else's must change nothing and answer False.
    raise NotImplementedError("TODO 6.3")


@contextmanager
def turn_on(user_id: str, thread_id: UUID | None, prompt: str) -> Iterator[tuple[Database, UUID]]:
    """The transaction one turn runs in, on the caller's thread (a new one when None), holding
    the thread's lock: one turn at a time per thread, on every instance (chapter 5)."""
    with Database() as db:
        now = utcnow()
        if thread_id is None:
            thread_id = uuid4()
            # Nobody else knows the new id yet: no lock to wait for. A foreign key refuses a
            # thread for a user that is gone (a database recreated under valid tokens).
            try:
                db.execute(
                    insert(threads).values(
                        id=str(thread_id),
                        user_id=user_id,
                        title=prompt[:TITLE_CHARS],
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError:
                raise HTTPException(
                    401,
                    "the user this token names does not exist: log in again",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                ) from None
        elif lock_thread(db, user_id, thread_id):
            # Read the clock once the lock is held, so a thread's updated_at never goes back.
            now = utcnow()
            db.execute(update(threads).where(threads.c.id == str(thread_id)).values(updated_at=now))
        else:
            raise not_found(thread_id)
        yield db, thread_id


def thread_page(
    db: Database, user_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the caller's threads, newest `updated_at` first (ties: the greater id
    first), and the cursor of the next page (None when this is the last)."""
    # TODO 6.4: select the caller's threads ordered by updated_at, then id, both descending;
    # after a cursor (decode_cursor: its updated_at and id), only those that sort after it:
    # an earlier updated_at, or the same one and a smaller id. Fetch limit + 1 rows: the
    # extra one says whether there is a next page, whose cursor (encode_cursor) is the sort
    # key of this page's last thread. Never an OFFSET: it skips or repeats threads when new
    # ones arrive between two pages.
    raise NotImplementedError("TODO 6.4")


# --- messages ------------------------------------------------------------------------------


def append_messages(db: Database, thread_id: UUID, new: list[dict[str, Any]]) -> None:
    """Insert one row per message, in order, inside the caller's transaction."""
    if not new:
        return
    rows = [{"thread_id": str(thread_id), "role": m["role"], "parts": m["parts"]} for m in new]
    db.execute(insert(messages), rows)


def recent_context(db: Database, thread_id: UUID) -> list[dict[str, Any]]:
    """What a turn gives the assistant: the thread's newest CONTEXT_MESSAGES messages, from
    the first user message among them, oldest first (`{"role", "parts"}` dicts)."""
    query = (
        select(messages.c.role, messages.c.parts)
        .where(messages.c.thread_id == str(thread_id))
        .order_by(messages.c.id.desc())
        .limit(CONTEXT_MESSAGES)
    )
    newest_first = db.fetchall(query)
    window = newest_first[::-1]
    start = next((i for i, m in enumerate(window) if m["role"] == "user"), len(window))
    return window[start:]


def history_page(
    db: Database, thread_id: UUID, before: int | None, limit: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """The latest `limit` messages older than id `before` (either may be None: no bound),
    oldest first, with their ids; and the `before` of the next older page, None if none."""
    # TODO 6.5: select id, role and parts of the thread's messages with id < before (strictly:
    # the message `before` names was on the previous page), newest first, limit + 1 of them;
    # the page is the first `limit`, reversed to oldest first. There are older ones when the
    # extra row came back: then the next `before` is the page's oldest id.
    raise NotImplementedError("TODO 6.5")


def clear_thread(db: Database, thread_id: UUID) -> None:
    """Remove every message of one thread. The thread stays, with its title, in the list."""
    db.execute(delete(messages).where(messages.c.thread_id == str(thread_id)))


def ping(db: Database) -> None:
    """One round trip that reads the messages table (a readiness probe's question)."""
    db.fetchone(select(messages.c.id).limit(1))
