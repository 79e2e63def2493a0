"""Start a Postgres or MariaDB/MySQL server from this machine's binaries.

`start(kind)` with no `workdir` is a throwaway server: a temporary data folder, a free port, a
random password, durability traded for speed, removed again by `Server.stop()`. With a `workdir`
that already holds data, the server starts on it as it is (the persistent `grader db up`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grader.dbservers import binaries
from grader.dbservers.errors import DatabaseUnavailable, how_to_get
from grader.dbservers.launch import (
    STARTUP_TIMEOUT,
    chown_for,
    initialize,
    launch,
    prepare_workdir,
    register,
    socket_dir,
    throwaway_password,
)
from grader.dbservers.server import STOP_GRACE, Server, first_signal, forget
from grader.dbservers.urls import make_sqlalchemy_url
from grader.toolkit import steps
from grader.toolkit.procs import stop_group


def start(kind: str, **kwargs: Any) -> Server:
    """A running server of `kind` (`postgres` or `mysql`); see `start_postgres` for the options."""
    if kind == "postgres":
        return start_postgres(**kwargs)
    if kind == "mysql":
        return start_mysql(**kwargs)
    raise ValueError(f"unknown database kind {kind!r}")


@contextmanager
def stopped(server: Server) -> Iterator[None]:
    """`server` shut down for the block (its port refuses connections), then started again on
    its data and port: to its clients, a database restart that kills their connections."""
    if server._proc is None or server.workdir is None:
        raise ValueError("only a server this process started can be stopped and started again")
    stop_group(server._proc, first_signal(server.kind), STOP_GRACE)
    steps.record(f"stopped the {server.kind} server (process {server.pid})")
    try:
        yield
    finally:
        again = start(server.kind, workdir=server.workdir, port=server.port, keep=server.keep)
        # The same server to everyone who holds it: same data, port and login, a new process.
        server.pid, server._proc = again.pid, again._proc
        forget(again)
        steps.record(f"started the {server.kind} server again (process {server.pid})")


# --- Postgres ----------------------------------------------------------------------------------


def start_postgres(
    workdir: Path | None = None,
    port: int | None = None,
    user: str = "grader",
    password: str | None = None,
    database: str | None = None,
    keep: bool = False,
    fast: bool = True,
    timeout: float = STARTUP_TIMEOUT,
) -> Server:
    """Start a Postgres server; `workdir` None means a throwaway one in a temp folder.

    An existing, initialized `workdir` is started as it is (the persistent `grader db up`).
    """
    bindir = binaries.postgres_bin_dir()
    if bindir is None:
        raise DatabaseUnavailable(
            "no Postgres server binaries here (no `initdb`/`postgres` found). "
            + how_to_get("postgres")
        )
    workdir, throwaway = prepare_workdir("postgres", workdir)
    data = workdir / "data"
    sockdir = socket_dir(workdir)
    chown_for("postgres", sockdir)
    password = password or throwaway_password()
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
        initdb += [
            "--no-locale",
            "--auth-local=trust",  # the superuser only over the socket in our folder
            "--auth-host=scram-sha-256",  # everyone else by password over TCP
            *(["--no-sync"] if fast else []),
        ]
        initialize("postgres", initdb, workdir, throwaway)
    settings = ["listen_addresses=127.0.0.1", "max_connections=200"]
    if fast:  # a throwaway server's data may be lost on a crash: skip what makes it durable
        settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]

    def command(port: int) -> list[str]:
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockdir)]
        return server + [arg for s in settings for arg in ("-c", s)]

    def probe(port: int) -> None:
        import psycopg

        psycopg.connect(
            host=str(sockdir), port=port, user="postgres", dbname="postgres", connect_timeout=2
        ).close()

    proc, chosen = launch("postgres", command, probe, workdir, port, timeout, throwaway)
    server = Server(
        "postgres",
        make_sqlalchemy_url("postgres", user, password, "127.0.0.1", chosen, "postgres"),
        pid=proc.pid,
        workdir=workdir,
        log_path=workdir / "server.log",
        keep=keep,
        _proc=proc,
    )
    bootstrap = lambda: _postgres_bootstrap(sockdir, chosen, user, password, database)  # noqa: E731
    return register(server, bootstrap if fresh else None)


def _postgres_bootstrap(
    sockdir: Path, port: int, user: str, password: str, database: str | None
) -> None:
    """As the superuser, over the socket: a login role that may create databases."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(sockdir), port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
        if database:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                    sql.Identifier(database), sql.Identifier(user)
                )
            )


# --- MariaDB / MySQL ---------------------------------------------------------------------------


def start_mysql(
    workdir: Path | None = None,
    port: int | None = None,
    user: str = "grader",
    password: str | None = None,
    database: str | None = None,
    keep: bool = False,
    fast: bool = True,
    timeout: float = STARTUP_TIMEOUT,
) -> Server:
    """Start a MariaDB (or MySQL) server; `workdir` None means a throwaway one."""
    found = binaries.mysql_binaries()
    if found is None:
        raise DatabaseUnavailable(
            "no MariaDB/MySQL server binaries here (no `mariadbd` or `mysqld` found). "
            + how_to_get("mysql")
        )
    workdir, throwaway = prepare_workdir("mysql", workdir)
    data = workdir / "data"
    sockdir = socket_dir(workdir)
    chown_for("mysql", sockdir)
    sock = sockdir / "mysqld.sock"
    # Its own folder for temporary tables: in a shared /tmp, another process (a cleaner, another
    # server) may remove them under it, and the one-time setup fails ("Unknown table").
    tmpdir = workdir / "tmp"
    tmpdir.mkdir(exist_ok=True)
    chown_for("mysql", tmpdir)
    password = password or throwaway_password()
    fresh = not (data / "mysql").is_dir()
    if fresh:
        if found.installer is not None:
            init = [str(found.installer), "--no-defaults", f"--datadir={data}"]
            init += [
                "--auth-root-authentication-method=normal",  # root, no password, socket only below
                "--skip-test-db",
                "--skip-name-resolve",
                f"--tmpdir={tmpdir}",  # passed on to the server it bootstraps
            ]
        else:  # Oracle MySQL
            init = [str(found.server), "--no-defaults", "--initialize-insecure"]
            init += [f"--datadir={data}", f"--tmpdir={tmpdir}"]
        initialize("mysql", init, workdir, throwaway)
    settings = [
        f"--tmpdir={tmpdir}",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
        f"--socket={sock}",
        f"--pid-file={workdir / 'mysqld.pid'}",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        "--max-connections=300",
    ]
    if fast:
        settings += ["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--sync-binlog=0"]

    def command(port: int) -> list[str]:
        server = [str(found.server), "--no-defaults", f"--datadir={data}"]
        return [*server, f"--port={port}", *settings]

    def probe(port: int) -> None:
        import pymysql

        pymysql.connect(unix_socket=str(sock), user="root", connect_timeout=2).close()

    proc, chosen = launch("mysql", command, probe, workdir, port, timeout, throwaway)
    server = Server(
        "mysql",
        make_sqlalchemy_url("mysql", user, password, "127.0.0.1", chosen, None),
        pid=proc.pid,
        workdir=workdir,
        log_path=workdir / "server.log",
        keep=keep,
        _proc=proc,
    )
    bootstrap = lambda: _mysql_bootstrap(sock, user, password, database)  # noqa: E731
    return register(server, bootstrap if fresh else None)


def _mysql_bootstrap(sock: Path, user: str, password: str, database: str | None) -> None:
    import pymysql

    conn = pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            # pymysql quotes the parameters itself (client side), so DDL takes them too.
            # mariadb-install-db leaves root without a password on 127.0.0.1 and ::1; keep
            # root to the Unix socket in our folder, and let everyone else in by password.
            cur.execute("SELECT user, host FROM mysql.user WHERE user = 'root'")
            for name, host in cur.fetchall():
                if host != "localhost":
                    cur.execute("DROP USER %s@%s", (name, host))
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO `{user}`@'%'")
            if database:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
    finally:
        conn.close()
