"""How many connections a learner's backend holds to its database, as the database sees them.

For the connection-pool milestone: a server counts its connections per database; on SQLite
there is no server, so it is the number of file descriptors the backend holds on the file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from grader.dbservers.urls import kind_of_url

_COUNT = {
    "postgres": (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ),
    "mysql": (
        "SELECT COUNT(*) FROM information_schema.processlist "
        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
    ),
}
_IDS = {
    "postgres": (
        "SELECT pid, backend_start FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ),
    "mysql": (
        "SELECT id, 0 FROM information_schema.processlist "
        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
    ),
}


def _query(url: str, queries: dict[str, str]) -> str:
    kind = kind_of_url(url)
    if kind not in queries:
        raise ValueError(f"counting connections needs a server database, not {kind}")
    return queries[kind]


def connection_count(url: str) -> int:
    """How many connections the server holds open to the database of `url` (not counting ours)."""
    query = _query(url, _COUNT)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def connection_ids(url: str) -> set[str]:
    """The server's identities of the connections to `url`'s database (to see churn)."""
    query = _query(url, _IDS)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {f"{a}@{b}" for a, b in conn.execute(text(query))}
    finally:
        engine.dispose()


def sqlite_file_handles(pid: int, db_path: Path) -> int | None:
    """Open file descriptors of process `pid` on the SQLite file (None: cannot tell here)."""
    wanted = os.path.realpath(db_path)
    fd_dir = Path(f"/proc/{pid}/fd")
    if fd_dir.is_dir():
        count = 0
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                if os.path.realpath(fd) == wanted:
                    count += 1
        return count
    try:  # macOS and others: psutil reads the same from the kernel
        import psutil

        return sum(os.path.realpath(f.path) == wanted for f in psutil.Process(pid).open_files())
    except Exception:
        return None
