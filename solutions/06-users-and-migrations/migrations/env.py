"""How Alembic connects: to the database DATABASE_URL names, as the backend does."""

from logging.config import fileConfig

from alembic import context
from backend.settings import DATABASE_URL
from backend.tables import metadata
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

# The log lines of alembic.ini: which revision runs ("Running upgrade 0002 -> 0003").
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    # `alembic upgrade head --sql` writes SQL without a database to read, and these
    # migrations read the one they upgrade (which tables it has, which threads have no owner).
    raise SystemExit("these migrations read the database they change: run them without --sql")

engine = create_engine(DATABASE_URL, poolclass=NullPool)
with engine.connect() as connection:
    # render_as_batch: SQLite cannot ALTER most of a table; Alembic's batch mode copies
    # the table into a new one with the change instead (other databases ALTER in place).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
