"""A chapter 4 database with real conversations in it, for chapter 6's migration check (6.6).

The `messages` table is declared here exactly as chapter 4's solution declares it (SPEC §2,
"Table"), so the grader needs no learner's chapter 4 to make one: on SQLite, Postgres and
MySQL alike it is what `metadata.create_all` of chapter 4 makes. The conversations hold what
migrating must keep: tool telemetry, text in several scripts, a prompt longer than a title,
messages at distinct times, and threads interleaved in id order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
)
from sqlalchemy.pool import NullPool

from grader.toolkit import steps

Message = dict[str, Any]

_metadata = MetaData()
CHAPTER_4_MESSAGES = Table(
    "messages",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thread_id", String(36), nullable=False),
    Column("role", String(16), nullable=False),
    Column("parts", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("messages_thread_id_id", "thread_id", "id"),
    sqlite_autoincrement=True,
)

LONG_FIRST = (
    "Ysolde of Saltmere here, asking about the Lantern Guild, the tides and the dragon " * 2
)


def _text(role: str, text: str) -> Message:
    return {"role": role, "parts": [{"text": text}]}


def _dice() -> list[Message]:
    call = {"function_call": {"name": "roll_dice", "args": {"dice": "2d6"}}}
    result = {"function_response": {"name": "roll_dice", "response": {"total": 7}}}
    return [
        _text("user", "roll 2d6"),
        {"role": "model", "parts": [call]},
        {"role": "tool", "parts": [result]},
        _text("model", "You rolled 7."),
    ]


CONVERSATIONS: list[list[Message]] = [
    [_text("user", LONG_FIRST), _text("model", "Welcome, Ysolde."), *_dice()],
    [
        _text("user", "Привет, мастер 🐉"),
        _text("model", "Здравствуй!"),
        _text("user", "что дальше?"),
    ],
    [*_dice(), _text("user", "and again: «the same»"), _text("model", "Again, then.")],
]


@dataclass(frozen=True)
class LegacyThread:
    """A thread of the chapter 4 database: its id, messages (oldest first) and title."""

    thread_id: str
    messages: list[Message]

    @property
    def title(self) -> str:
        first = next(m for m in self.messages if m["role"] == "user")
        return first["parts"][0]["text"][:80]


def write_chapter_4_database(url: str) -> list[LegacyThread]:
    """Create chapter 4's `messages` table at `url` and fill it: three threads whose rows are
    interleaved by id, each message a second after the one before. Returns the threads, the
    one whose last message is newest last."""
    threads = [LegacyThread(str(uuid.uuid4()), c) for c in CONVERSATIONS]
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=3)
    rows: list[dict[str, Any]] = []
    last: dict[str, int] = {}
    for n in range(max(len(t.messages) for t in threads)):
        for thread in threads:
            if n < len(thread.messages):
                m = thread.messages[n]
                at = start + timedelta(seconds=len(rows) + 1)
                rows.append({"thread_id": thread.thread_id, **m, "created_at": at})
                last[thread.thread_id] = len(rows)
    engine = create_engine(url, poolclass=NullPool)
    try:
        _metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(CHAPTER_4_MESSAGES.insert(), rows)
    finally:
        engine.dispose()
    steps.record(f"wrote a chapter 4 database: {len(rows)} messages in {len(threads)} threads")
    return sorted(threads, key=lambda t: last[t.thread_id])
