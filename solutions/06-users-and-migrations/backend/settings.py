"""Configuration, read from the environment in one place.

The backend keeps no state of its own, so it must be told where the state lives, and, from
chapter 6, the key it signs tokens with:

- `DATABASE_URL`, a SQLAlchemy URL. The same code runs on all three databases:

    sqlite:///./messages.db                                   a file beside the code (default)
    postgresql+psycopg://user:password@host:5432/database     Postgres, psycopg 3 driver
    mysql+pymysql://user:password@host:3306/database?charset=utf8mb4   MySQL/MariaDB, PyMySQL

- `SECRET_KEY`: the key access tokens are signed with. Every instance must have the same one
  (a token one instance issued is checked by another), and nobody else may: whoever knows it
  can sign a token for any user. Make one with `python -c "import secrets;
  print(secrets.token_urlsafe(32))"`. Without it the backend refuses to start, unless
  `DEV_MODE=1` says that this is a machine of your own and a published key will do.
- `ACCESS_TOKEN_MINUTES`: how long a token is valid (default 30).
"""

import functools
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


# HS256 with a key shorter than its 256-bit hash is weaker than it looks (RFC 7518 §3.2).
MIN_SECRET_KEY_BYTES = 32
# DEV_MODE's key is written here, so it protects nothing: fine on your own machine only.
DEV_SECRET_KEY = "dev-mode-only-this-key-is-public-do-not-deploy-it"


def secret_key(raw: str | None, dev_mode: bool) -> str:
    """The signing key, or the reason there is none that this backend may use."""
    if not raw:
        if dev_mode:
            return DEV_SECRET_KEY
        raise SettingsError(
            "SECRET_KEY is not set: the backend signs access tokens with it, and every "
            "instance needs the same one. Set it to a long random string, e.g. "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
            "or set DEV_MODE=1 on your own machine to use a published development key."
        )
    if len(raw.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        raise SettingsError(
            f"SECRET_KEY is {len(raw.encode('utf-8'))} bytes long; HS256 needs at least "
            f"{MIN_SECRET_KEY_BYTES}: use secrets.token_urlsafe(32)"
        )
    return raw


def minutes(name: str, raw: str | None, default: int) -> int:
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name}={raw!r} must be a whole number of minutes, 1 or more")
    return int(raw)


@functools.cache
def signing_key() -> str:
    """SECRET_KEY, checked. Read on first use, not on import, so that `alembic upgrade head`
    (which imports this module for DATABASE_URL) needs no signing key; the backend's startup
    calls it, so a backend without one stops at once with the reason."""
    return secret_key(os.environ.get("SECRET_KEY"), os.environ.get("DEV_MODE") == "1")


ACCESS_TOKEN_MINUTES = minutes("ACCESS_TOKEN_MINUTES", os.environ.get("ACCESS_TOKEN_MINUTES"), 30)
