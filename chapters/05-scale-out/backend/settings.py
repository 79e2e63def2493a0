"""Configuration, read from the environment in one place.

The backend keeps no state of its own, so the one thing it must be told is where the state
lives: `DATABASE_URL`, a SQLAlchemy URL. The same code runs on all three databases:

    sqlite:///./messages.db                                   a file beside the code (default)
    postgresql+psycopg://user:password@host:5432/database     Postgres, psycopg 3 driver
    mysql+pymysql://user:password@host:3306/database?charset=utf8mb4   MySQL/MariaDB, PyMySQL
"""

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///./messages.db"

# The driver each database gets when the URL names none (`postgresql://` would otherwise mean
# psycopg2 and `mysql://` mysqlclient, which this workbook does not install).
DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}


class SettingsError(ValueError):
    """The environment holds a setting this chapter cannot use; the message says what to set."""


def database_url(raw: str) -> URL:
    """Parse and check DATABASE_URL, so a typo stops the backend at startup with the reason."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError(
            f"DATABASE_URL={raw!r} is not a database URL. Examples: sqlite:///./messages.db, "
            "postgresql+psycopg://user:password@localhost:5432/chat, "
            "mysql+pymysql://user:password@localhost:3306/chat?charset=utf8mb4"
        ) from None
    backend = "postgresql" if url.drivername == "postgres" else url.get_backend_name()
    if backend not in DRIVERS:
        raise SettingsError(
            f"DATABASE_URL names {url.drivername!r}; this chapter runs on sqlite, "
            "postgresql+psycopg or mysql+pymysql"
        )
    if "+" not in url.drivername:
        url = url.set(drivername=DRIVERS[backend])
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise SettingsError(
            f"DATABASE_URL={raw!r} does not name a database file. An in-memory SQLite database "
            "lives inside one connection of one process; name a file, e.g. sqlite:///./messages.db."
        )
    if backend == "mysql" and "charset" not in url.query:
        # utf8mb4 is MySQL's real UTF-8 (its "utf8" stops at 3 bytes: no emoji).
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


DATABASE_URL = database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
