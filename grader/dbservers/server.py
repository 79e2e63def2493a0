"""A running database server: fresh, empty databases on it, and stopping it by its PID.

Every server this process starts is tracked until it is stopped, so a grader that dies on an
exception still stops the throwaway servers it started (at exit).
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from grader.dbservers.errors import DatabaseUnavailable, describe
from grader.dbservers.urls import LABELS, hide_password, with_database
from grader.toolkit.procs import stop_group

STOP_GRACE = 10.0  # seconds a server may take to shut down before it is killed


def first_signal(kind: str) -> signal.Signals:
    """Postgres: SIGINT is a "fast" shutdown (SIGTERM would wait for its clients to leave)."""
    return signal.SIGINT if kind == "postgres" else signal.SIGTERM


@dataclass
class Server:
    """A running database server, ours (with `pid` and `workdir`) or someone else's."""

    kind: str
    admin_url: str  # a user who may CREATE DATABASE, connected to a maintenance database
    pid: int | None = None  # set when we started it
    workdir: Path | None = None  # removed by stop() unless `keep`
    log_path: Path | None = None
    keep: bool = False
    created: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = None

    @property
    def owned(self) -> bool:
        return self.pid is not None

    @property
    def port(self) -> int | None:
        return make_url(self.admin_url).port

    def _admin(self) -> Engine:
        return create_engine(self.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (empty, UTF-8) and return its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        engine = self._admin()
        try:
            with engine.connect() as conn:
                if self.kind == "postgres":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                    conn.execute(text(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8'"))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                    conn.execute(
                        text(
                            f"CREATE DATABASE `{name}` "
                            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                        )
                    )
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not create a database on the {LABELS[self.kind]} server at "
                f"{hide_password(self.admin_url)}: {describe(exc)}"
            ) from exc
        finally:
            engine.dispose()
        self.created.append(name)
        return with_database(self.admin_url, name)

    def drop_databases(self) -> None:
        """Drop what create_database made (on a server that is not ours to throw away)."""
        if not self.created:
            return
        engine = self._admin()
        try:
            with engine.connect() as conn:
                for name in self.created:
                    with contextlib.suppress(Exception):
                        if self.kind == "postgres":
                            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                        else:
                            conn.execute(text("SET SESSION lock_wait_timeout = 5"))
                            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        except Exception:
            pass  # a server that went away took its databases with it
        finally:
            engine.dispose()
        self.created.clear()

    def stop(self) -> None:
        """Stop a server we started (by PID) and remove its data; drop databases otherwise."""
        if self.pid is None:
            self.drop_databases()
            return
        stop_group(self._proc or self.pid, first_signal(self.kind), STOP_GRACE)
        forget(self)
        if self.workdir is not None and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


_STARTED: list[Server] = []


def track(server: Server) -> None:
    """Stop `server` at exit unless it is stopped (or forgotten) before."""
    _STARTED.append(server)


def forget(server: Server) -> None:
    """Let `server` outlive this process (`grader db up`), or note that it was stopped."""
    with contextlib.suppress(ValueError):
        _STARTED.remove(server)


@atexit.register
def _stop_leftovers() -> None:
    """A grader that dies on an exception still stops the throwaway servers it started."""
    for server in list(_STARTED):
        with contextlib.suppress(Exception):
            server.stop()
