"""The backend runs only on a database at the newest migration.

Since chapter 6 the schema changes through migrations (`alembic upgrade head`), never by the
backend on startup: several instances starting at once would race to change it, and a change
made silently on startup is one nobody reviewed. So startup only checks: Alembic records the
revision a database is at in its `alembic_version` table, and the backend compares it with the
newest revision in `migrations/versions/`. Anything else stops the startup with the command to
run.
"""

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

CHAPTER = Path(__file__).resolve().parent.parent


class SchemaError(RuntimeError):
    """The database is not at the revision this code was written for."""


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(str(CHAPTER / "alembic.ini")))


def expect_head(engine: Engine) -> None:
    """Return if the database is at the newest migration, else raise SchemaError saying what to do."""
    known = scripts()
    head = known.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current not in {r.revision for r in known.walk_revisions()}:
        raise SchemaError(
            f"the database is at migration {current}, which this code does not have: it was "
            "upgraded by newer code. Run that code, or downgrade the database with it first."
        )
    if current != head:
        at = f"migration {current}" if current else "no migration (never upgraded)"
        raise SchemaError(
            f"the database is at {at}, and this code needs migration {head}. Run "
            f"`alembic upgrade head` in {CHAPTER} with the same DATABASE_URL, then start the "
            "backend again."
        )
