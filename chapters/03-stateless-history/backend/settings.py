"""Configuration, read from the environment in one place.

The backend keeps no state of its own, so the one thing it must be told is where the state
lives: `DATABASE_URL`. In this chapter that is a SQLite file, opened with the standard
library's `sqlite3`.
"""

import os

DEFAULT_DATABASE_URL = "sqlite:///./messages.db"
SQLITE_PREFIX = "sqlite:///"


class SettingsError(ValueError):
    """The environment holds a setting this chapter cannot use; the message says what to set."""


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///` URL names.

    `sqlite:///./messages.db` and `sqlite:///messages.db` are relative to the folder the backend
    runs in; `sqlite:////tmp/messages.db` (four slashes) is the absolute path `/tmp/messages.db`.
    """
    if not url.startswith(SQLITE_PREFIX):
        raise SettingsError(
            f"DATABASE_URL starts with {url.partition(':')[0]!r}, not sqlite. Chapter 3 stores "
            "messages with the standard library's sqlite3: use sqlite:///./messages.db (a file "
            "beside the code) or sqlite:////absolute/path/messages.db. Postgres and MySQL come "
            "in chapter 4."
        )
    path = url.removeprefix(SQLITE_PREFIX)
    if not path or path == ":memory:":
        raise SettingsError(
            f"DATABASE_URL={url!r} does not name a database file. Every request opens its own "
            "connection, so an in-memory database would be empty each time; name a file, "
            "e.g. sqlite:///./messages.db."
        )
    if "?" in path:
        raise SettingsError(
            f"DATABASE_URL={url!r} has query options, which this chapter does not read; "
            "name just the file, e.g. sqlite:///./messages.db."
        )
    return path


DATABASE_URL = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
# Parsed at import, so a bad URL stops the backend at startup with the reason, not at the
# first request.
DATABASE_PATH = sqlite_path(DATABASE_URL)
