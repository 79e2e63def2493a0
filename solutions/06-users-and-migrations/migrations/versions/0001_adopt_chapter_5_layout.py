"""Adopt the database as chapters 4 and 5 left it, creating what is missing.

A chapter 4 database has `messages`; a chapter 5 one also `threads` and `idempotency_keys`.
Both are taken as they are: nothing is copied or rebuilt, so upgrading a database with a
million messages takes no longer than an empty one. What is missing is created, in chapter 5's
layout, so that every database leaves this revision alike. A table that exists in a layout
these migrations do not know stops the upgrade before anything changes: guessing would risk
the data.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The columns each table had in chapter 5 (chapter 4's `messages` is the same).
LAYOUT = {
    "messages": {"id", "thread_id", "role", "parts", "created_at"},
    "threads": {"id", "turns"},
    "idempotency_keys": {
        "key_hash",
        "request_hash",
        "claim",
        "lease_until",
        "status_code",
        "response",
        "created_at",
    },
}

LATER_TABLES = {"users"}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for table, columns in LAYOUT.items():
        if table in existing:
            found = {c["name"] for c in inspector.get_columns(table)}
            if found != columns:
                raise RuntimeError(
                    f"table {table!r} exists with columns {sorted(found)}, not chapter 4/5's "
                    f"{sorted(columns)}: this migration does not know that layout and changed "
                    "nothing. Point DATABASE_URL at the chapter 4 or 5 database, or at an "
                    "empty one."
                )
    # The later revisions create these: one already there is someone else's, and would stop
    # the upgrade half-way (MySQL and SQLite cannot roll back a CREATE TABLE).
    for table in LATER_TABLES & existing:
        raise RuntimeError(
            f"table {table!r} exists already, and these migrations create it: it is not one "
            "they know, and nothing was changed. Rename or drop it, or point DATABASE_URL "
            "at the chapter 4 or 5 database."
        )
    if "messages" not in existing:
        op.create_table(
            "messages",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("thread_id", sa.String(36), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("parts", sa.JSON, nullable=False),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
            sqlite_autoincrement=True,
        )
        op.create_index("messages_thread_id_id", "messages", ["thread_id", "id"])
    if "threads" not in existing:
        op.create_table(
            "threads",
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
        )
    if "idempotency_keys" not in existing:
        op.create_table(
            "idempotency_keys",
            sa.Column("key_hash", sa.String(64), primary_key=True),
            sa.Column("request_hash", sa.String(64), nullable=False),
            sa.Column("claim", sa.String(36), nullable=True),
            sa.Column("lease_until", sa.BigInteger, nullable=False),
            sa.Column("status_code", sa.Integer, nullable=True),
            sa.Column("response", sa.JSON, nullable=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
        )


def downgrade() -> None:
    # Back to "not managed by Alembic": the tables stay, with every message, as chapter 5
    # would use them. A downgrade that dropped them would delete the data it adopted.
    pass
