"""The database server of one grader session: the one GRADER_*_URL names, or a throwaway one."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from grader.dbservers.errors import DatabaseUnavailable, describe
from grader.dbservers.server import Server
from grader.dbservers.start import start
from grader.dbservers.urls import DRIVERS, ENV_URLS, LABELS, hide_password, kind_of_url


def from_env(kind: str) -> Server | None:
    """The server named by GRADER_POSTGRES_URL / GRADER_MYSQL_URL, checked, or None.

    E.g. `postgresql+psycopg://user:pw@127.0.0.1:5432/postgres`: the user must be allowed to
    create databases (each check gets a fresh one there, dropped again at the end).
    """
    raw = os.environ.get(ENV_URLS[kind], "").strip()
    if not raw:
        return None
    try:
        url = make_url(raw)
    except Exception as exc:
        raise DatabaseUnavailable(f"{ENV_URLS[kind]} is not a valid URL: {exc}") from None
    if kind_of_url(raw) != kind:
        raise DatabaseUnavailable(
            f"{ENV_URLS[kind]} must name a {LABELS[kind]} server, got {hide_password(raw)}"
        )
    if "+" not in url.drivername:  # postgresql:// -> the driver the workbook installs
        url = url.set(drivername=DRIVERS[kind])
    if kind == "mysql" and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    server = Server(kind, url.render_as_string(hide_password=False))
    engine = create_engine(server.admin_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise DatabaseUnavailable(
            f"{ENV_URLS[kind]} ({hide_password(raw)}) cannot be reached: {describe(exc)}"
        ) from None
    finally:
        engine.dispose()
    return server


def session_server(kind: str) -> Server:
    """The server for one grader session: GRADER_*_URL when set, else a throwaway one."""
    return from_env(kind) or start(kind)
