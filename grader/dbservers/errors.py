"""What the grader says when it cannot have the database server a check or a command needs."""

from __future__ import annotations


class DatabaseUnavailable(RuntimeError):
    """The database a check needs cannot be had here; the message says how to get one."""


def how_to_get(kind: str) -> str:
    """The advice every 'no server here' message ends with."""
    # Imported here: urls needs SQLAlchemy, and the checks import this module for
    # DatabaseUnavailable alone, on SQLite too.
    from grader.dbservers.urls import ENV_URLS, PACKAGES, learner_url

    return (
        f"Install the server binaries (Debian/Ubuntu: `sudo apt-get install {PACKAGES[kind]}`; "
        f"the grader starts its own throwaway server from them), or start one with "
        f"`grader db up {kind}` or `docker compose --profile {kind} up -d`, and point the grader "
        f"at it (as a user who may create databases): "
        f"`export {ENV_URLS[kind]}='{learner_url(kind)}'`."
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's error can run to many lines)."""
    return (str(exc).strip().splitlines() or [""])[0][:300]


def describe(exc: BaseException) -> str:
    """`OperationalError: connection refused …`: an exception in one line."""
    return f"{type(exc).__name__}: {first_line(exc)}"
