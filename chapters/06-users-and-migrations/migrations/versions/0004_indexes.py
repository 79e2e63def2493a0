"""The indexes the chapter's two paged queries need.

`GET /threads` reads one user's threads newest first: a range of the index on
(user_id, updated_at, id), read backwards, stopping after one page. `GET /history` and each
turn read one thread's newest messages: a range of (thread_id, id), which chapters 3 to 5
created already (it is made here only for a database that lacks it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa  # noqa: F401 (TODO 6.7 uses it)
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # TODO 6.7: create the index threads_user_id_updated_at_id on threads (user_id,
    # updated_at, id), and messages_thread_id_id on messages (thread_id, id) when the
    # database has no index of messages on those columns yet (sa.inspect(op.get_bind())).
    pass


def downgrade() -> None:
    # MySQL lets the foreign key on threads.user_id use this index (it starts with user_id),
    # and refuses to drop an index a foreign key uses: the key is dropped first and made
    # again, which gives it an index of its own.
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("threads_user_id_fkey", type_="foreignkey")
        batch.drop_index("threads_user_id_updated_at_id")
        batch.create_foreign_key("threads_user_id_fkey", "users", ["user_id"], ["id"])
