"""Every thread gets an owner, a title and its dates; existing ones go to the legacy owner.

Chapter 5's `threads` rows gain `user_id`, `title`, `created_at` and `updated_at`. A chapter 4
database had no thread rows at all: every thread id in `messages` gets one first. Threads
that were written before there were users belong to nobody, so they are given to one user,
`LEGACY_OWNER` (default `legacy`), created here when missing. Its password is
`LEGACY_OWNER_PASSWORD` when set; otherwise it is the hash of a random string that nobody
is told, so nobody can log in as it until an administrator sets a password. (A known default
password would hand every old conversation to whoever reads this file.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import os
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from pwdlib import PasswordHash
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
TITLE_CHARS = 80
USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,64}")
NEW_COLUMNS = ("user_id", "title", "created_at", "updated_at")

threads = sa.table(
    "threads",
    sa.column("id", sa.String),
    sa.column("user_id", sa.String),
    sa.column("title", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
)
messages = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("thread_id", sa.String),
    sa.column("role", sa.String),
    sa.column("parts", sa.JSON),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
users = sa.table(
    "users",
    sa.column("id", sa.String),
    sa.column("username", sa.String),
    sa.column("password_hash", sa.String),
    sa.column("created_at", sa.DateTime),
)


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("user_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("title", sa.String(TITLE_CHARS), nullable=True))
        batch.add_column(sa.Column("created_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("updated_at", Timestamp, nullable=True))
    bind = op.get_bind()
    # A row for every thread that has messages and none yet (all of them, from chapter 4).
    has_row = sa.select(threads.c.id).where(threads.c.id == messages.c.thread_id).exists()
    bind.execute(
        sa.insert(threads).from_select(
            ["id"], sa.select(messages.c.thread_id).where(~has_row).distinct()
        )
    )
    unowned = [
        r.id for r in bind.execute(sa.select(threads.c.id).where(threads.c.user_id.is_(None)))
    ]
    # TODO 6.6: give every thread without an owner to the legacy owner (legacy_owner_id), with
    # its title (first_prompts) and its dates (thread_dates) from its messages, in one
    # UPDATE run once per thread; a thread with no message left gets an empty title and
    # dates of now. Nothing may stay unowned: the next step makes user_id NOT NULL.
    if unowned:
        raise NotImplementedError("TODO 6.6")
    with op.batch_alter_table("threads") as batch:
        batch.alter_column("user_id", existing_type=sa.String(36), nullable=False)
        batch.alter_column("title", existing_type=sa.String(TITLE_CHARS), nullable=False)
        batch.alter_column("created_at", existing_type=Timestamp, nullable=False)
        batch.alter_column("updated_at", existing_type=Timestamp, nullable=False)
        batch.create_foreign_key("threads_user_id_fkey", "users", ["user_id"], ["id"])


def downgrade() -> None:
    # Back to chapter 5's `threads` (id, turns). Messages are not touched: every thread stays
    # whole, it only stops having an owner.
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("threads_user_id_fkey", type_="foreignkey")
        for column in NEW_COLUMNS:
            batch.drop_column(column)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def as_utc(value: datetime) -> datetime:
    """A stored time as naive UTC (Postgres answers an aware one, SQLite and MySQL naive)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def legacy_owner_id(bind: sa.Connection) -> str:
    """The id of the user old threads go to, created if missing."""
    name = os.environ.get("LEGACY_OWNER") or "legacy"
    if not USERNAME.fullmatch(name):
        raise RuntimeError(f"LEGACY_OWNER={name!r} is not a username (3-64 of A-Z a-z 0-9 _ . -)")
    found = bind.execute(sa.select(users.c.id).where(users.c.username == name)).first()
    if found is not None:
        return found.id
    password = os.environ.get("LEGACY_OWNER_PASSWORD") or secrets.token_urlsafe(32)
    owner = str(uuid.uuid4())
    bind.execute(
        sa.insert(users).values(
            id=owner,
            username=name,
            password_hash=PasswordHash.recommended().hash(password),
            created_at=utcnow(),
        )
    )
    return owner


def first_prompts(bind: sa.Connection) -> dict[str, str]:
    """Each thread's title: the text of its first user message, cut to TITLE_CHARS."""
    first = (
        sa.select(sa.func.min(messages.c.id))
        .where(messages.c.role == "user")
        .group_by(messages.c.thread_id)
    )
    rows = bind.execute(
        sa.select(messages.c.thread_id, messages.c.parts).where(messages.c.id.in_(first))
    )
    return {r.thread_id: text_of(r.parts)[:TITLE_CHARS] for r in rows}


def text_of(parts: Any) -> str:
    texts = [p["text"] for p in parts or [] if isinstance(p, dict) and "text" in p]
    return texts[0] if texts else ""


def thread_dates(bind: sa.Connection) -> dict[str, tuple[datetime, datetime]]:
    """Each thread's first and last message's time."""
    rows = bind.execute(
        sa.select(
            messages.c.thread_id,
            sa.func.min(messages.c.created_at).label("first"),
            sa.func.max(messages.c.created_at).label("last"),
        ).group_by(messages.c.thread_id)
    )
    return {r.thread_id: (as_utc(r.first), as_utc(r.last)) for r in rows}
