"""Real Postgres and MariaDB/MySQL servers: throwaway ones for the checks, a persistent one for you.

The checks need real database servers, not mocks: a pool that leaks connections, a string that
breaks a dialect's quoting or a JSON column that mangles an emoji only shows against the real
thing. This module

- starts a throwaway server from the system's own binaries (Debian/Ubuntu: the `postgresql` and
  `mariadb-server` packages) in a temporary data directory, on a free loopback port, waits until
  it accepts connections, and stops it by its PID and removes the data directory afterwards;
- or uses the server named by `GRADER_POSTGRES_URL` / `GRADER_MYSQL_URL` when they are set
  (e.g. `postgresql+psycopg://user:pw@127.0.0.1:5432/postgres`; the user must be allowed to create
  databases);
- hands out a fresh, empty database per check (`CREATE DATABASE grader_<n>`) as a SQLAlchemy URL;
- counts a database's connections as the server sees them (for the connection-pool milestone);
- runs the persistent server behind `grader db up|down|status postgres|mysql`.

Servers refuse to run as root, so when the grader runs as root they run as the `postgres` /
`mysql` system user the packages create. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from grader import REPO_ROOT
from grader.toolkit.procs import free_port, pid_alive

KINDS = ("postgres", "mysql")
LABELS = {"postgres": "Postgres", "mysql": "MariaDB/MySQL"}
ENV_URLS = {"postgres": "GRADER_POSTGRES_URL", "mysql": "GRADER_MYSQL_URL"}
DRIVERS = {"postgres": "postgresql+psycopg", "mysql": "mysql+pymysql"}
PACKAGES = {"postgres": "postgresql", "mysql": "mariadb-server"}
STARTUP_TIMEOUT = float(os.environ.get("GRADER_DB_STARTUP_TIMEOUT", "30"))

# The persistent server of `grader db up` (and the compose profiles) use these, so one
# DATABASE_URL works for both. The password holds the characters that break a hand-written URL
# (@ : / %): the URL below shows them percent-encoded, as `URL.create` renders them.
DB_HOME = REPO_ROOT / ".grader" / "db"
LEARNER_PORTS = {"postgres": 5433, "mysql": 3307}
LEARNER_USER = "workbook"
LEARNER_PASSWORD = "p@ss:w/rd%42"
LEARNER_DATABASE = "workbook"


class DatabaseUnavailable(RuntimeError):
    """The database a check needs cannot be had here; the message says how to get one."""


# --- URLs --------------------------------------------------------------------------------------


def make_sqlalchemy_url(
    kind: str, user: str, password: str, host: str, port: int, database: str | None
) -> str:
    """A SQLAlchemy URL string with the password percent-encoded (never by hand)."""
    url = URL.create(
        DRIVERS[kind],
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query={"charset": "utf8mb4"} if kind == "mysql" else {},
    )
    return url.render_as_string(hide_password=False)


def learner_url(kind: str, port: int | None = None) -> str:
    """The DATABASE_URL of `grader db up <kind>` (and of the compose profile)."""
    return make_sqlalchemy_url(
        kind,
        LEARNER_USER,
        LEARNER_PASSWORD,
        "127.0.0.1",
        port or LEARNER_PORTS[kind],
        LEARNER_DATABASE,
    )


def kind_of_url(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return "postgres"
    if backend in ("mysql", "mariadb"):
        return "mysql"
    return backend


def with_database(url: str, database: str | None) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def how_to_get(kind: str) -> str:
    """The advice every 'no server here' message ends with."""
    return (
        f"Install the server binaries (Debian/Ubuntu: `sudo apt-get install {PACKAGES[kind]}`; "
        f"the grader starts its own throwaway server from them), or start one with "
        f"`grader db up {kind}` or `docker compose --profile {kind} up -d`, and point the grader "
        f"at it (as a user who may create databases): "
        f"`export {ENV_URLS[kind]}='{learner_url(kind)}'`."
    )


# --- finding the binaries ----------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)


def postgres_bin_dir() -> Path | None:
    """The folder holding `initdb` and `postgres`, or None."""
    candidates: list[Path] = []
    if os.environ.get("GRADER_PG_BIN"):
        candidates.append(Path(os.environ["GRADER_PG_BIN"]))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    for pattern in (
        "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
        "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
        "/opt/homebrew/opt/postgresql*/bin",  # macOS, Homebrew (Apple silicon)
        "/usr/local/opt/postgresql*/bin",  # macOS, Homebrew (Intel)
        "/Applications/Postgres.app/Contents/Versions/*/bin",
    ):
        root = Path("/")
        candidates += sorted(root.glob(pattern.lstrip("/")), key=_version_key, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


@dataclass(frozen=True)
class MysqlBinaries:
    server: Path
    installer: Path | None  # mariadb-install-db; None for Oracle MySQL (`--initialize-insecure`)


def mysql_binaries() -> MysqlBinaries | None:
    path = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/libexec"]
    )
    for name in ("mariadbd", "mysqld"):
        server = shutil.which(name, path=path)
        if not server:
            continue
        for installer in ("mariadb-install-db", "mysql_install_db"):
            found = shutil.which(installer, path=path)
            if found:
                return MysqlBinaries(Path(server), Path(found))
        if name == "mysqld":
            return MysqlBinaries(Path(server), None)
    return None


def binaries_available(kind: str) -> bool:
    return (postgres_bin_dir() if kind == "postgres" else mysql_binaries()) is not None


# --- processes ---------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _run_as(kind: str) -> dict[str, Any]:
    """Popen arguments that drop root to the database's system user (servers refuse root)."""
    if os.geteuid() != 0:
        return {}
    name = "postgres" if kind == "postgres" else "mysql"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise DatabaseUnavailable(
            f"the grader runs as root and {LABELS[kind]} refuses to; it needs the `{name}` "
            f"system user, which `sudo apt-get install {PACKAGES[kind]}` creates. "
            + how_to_get(kind)
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _chown_for(kind: str, *paths: Path) -> None:
    as_user = _run_as(kind)
    if as_user:
        for p in paths:
            _check_reachable(kind, p, as_user["user"], as_user["group"])
            os.chown(p, as_user["user"], as_user["group"])


def _check_reachable(kind: str, path: Path, uid: int, gid: int) -> None:
    """The system user must be able to walk down to its folder (e.g. not through /root)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_mode & 0o001 or st.st_uid == uid or (st.st_gid == gid and st.st_mode & 0o010):
            continue
        user = "postgres" if kind == "postgres" else "mysql"
        raise DatabaseUnavailable(
            f"the `{user}` system user cannot enter {parent} (mode {oct(st.st_mode & 0o777)}), "
            f"so it cannot use {path}; put the data somewhere it can reach"
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _setup_env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C",
        "LC_ALL": "C",
        "TZ": "UTC",
    }


def _stop_process(pid: int, first: signal.Signals, grace: float = 10.0) -> None:
    """Signal a server's process group (it was started in its own session), then SIGKILL."""

    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)

    send(first)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    send(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- one server --------------------------------------------------------------------------------


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

    def _admin(self):
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
                f"{hide_password(self.admin_url)}: {type(exc).__name__}: {_first_line(exc)}"
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
        if not self.owned:
            self.drop_databases()
            return
        assert self.pid is not None
        # Postgres: SIGINT is a "fast" shutdown (SIGTERM would wait for clients to leave).
        first = signal.SIGINT if self.kind == "postgres" else signal.SIGTERM
        _stop_process(self.pid, first)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)
        _forget(self)
        if self.workdir is not None and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


_STARTED: list[Server] = []


def _forget(server: Server) -> None:
    with contextlib.suppress(ValueError):
        _STARTED.remove(server)


@atexit.register
def _stop_leftovers() -> None:
    """A grader that dies on an exception still stops the throwaway servers it started."""
    for server in list(_STARTED):
        with contextlib.suppress(Exception):
            server.stop()


def _wait_until(
    kind: str, proc: subprocess.Popen, log_path: Path, probe, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatabaseUnavailable(
                f"the {LABELS[kind]} server ({what}) exited with code {proc.returncode} before "
                f"accepting connections. Its log ends with:\n{_tail(log_path)}"
            )
        try:
            probe()
            return
        except Exception as exc:
            last = f"{type(exc).__name__}: {_first_line(exc)}"
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        _stop_process(proc.pid, signal.SIGKILL, grace=2)
    raise DatabaseUnavailable(
        f"the {LABELS[kind]} server ({what}) did not accept connections within {timeout:.0f} s "
        f"(last: {last}). Its log ends with:\n{_tail(log_path)}"
    )


def _socket_dir(workdir: Path) -> Path:
    # A Unix socket path must stay under ~100 bytes; a deep checkout needs a short detour.
    if len(str(workdir)) < 80:
        return workdir
    return Path(tempfile.mkdtemp(prefix="grader-sock-"))


# --- Postgres ----------------------------------------------------------------------------------


def _prepare_workdir(kind: str, workdir: Path | None) -> tuple[Path, bool]:
    """The server's folder (a new temp one when None), owned by the server's system user."""
    throwaway = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"grader-{kind}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    _chown_for(kind, workdir)
    return workdir, throwaway


def _initialize(kind: str, cmd: list[str], workdir: Path, throwaway: bool) -> None:
    """Run the data directory's one-time setup (initdb, mariadb-install-db) as the server's user."""
    env = _setup_env(workdir)
    init = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, **_run_as(kind)
    )
    if init.returncode != 0:
        if throwaway:
            shutil.rmtree(workdir, ignore_errors=True)
        raise DatabaseUnavailable(
            f"{Path(cmd[0]).name} failed (exit {init.returncode}):\n"
            f"{(init.stdout + init.stderr)[-1500:]}"
        )


def _launch(
    kind: str,
    command: Callable[[int], list[str]],
    probe: Callable[[int], None],
    workdir: Path,
    port: int | None,
    timeout: float,
    throwaway: bool,
) -> tuple[subprocess.Popen, int]:
    """Start the server on `port` (or a free one, retried if another process takes it first)."""
    log_path = workdir / "server.log"
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port()
        with log_path.open("a") as log:
            proc = subprocess.Popen(
                command(chosen),
                cwd=workdir,
                env=_setup_env(workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_run_as(kind),
            )
        try:
            _wait_until(
                kind, proc, log_path, functools.partial(probe, chosen), timeout, f"port {chosen}"
            )
            return proc, chosen
        except DatabaseUnavailable:
            if attempt + 1 < attempts and "already in use" in _tail(log_path, 8):
                continue
            if throwaway:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _register(server: Server, bootstrap: Callable[[], None] | None) -> Server:
    """Track the server for clean-up and, on a fresh data directory, create its login user."""
    _STARTED.append(server)
    if bootstrap is not None:
        try:
            bootstrap()
        except Exception as exc:
            server.stop()
            raise DatabaseUnavailable(
                f"{LABELS[server.kind]} started but creating the user failed: {_first_line(exc)}"
            ) from exc
    return server


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
    bindir = postgres_bin_dir()
    if bindir is None:
        raise DatabaseUnavailable(
            "no Postgres server binaries here (no `initdb`/`postgres` found). "
            + how_to_get("postgres")
        )
    workdir, throwaway = _prepare_workdir("postgres", workdir)
    data = workdir / "data"
    sockdir = _socket_dir(workdir)
    _chown_for("postgres", sockdir)
    password = password or _throwaway_password()
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
        initdb += [
            "--no-locale",
            "--auth-local=trust",  # the superuser only over the socket in our folder
            "--auth-host=scram-sha-256",  # everyone else by password over TCP
            *(["--no-sync"] if fast else []),
        ]
        _initialize("postgres", initdb, workdir, throwaway)
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

    proc, chosen = _launch("postgres", command, probe, workdir, port, timeout, throwaway)
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
    return _register(server, bootstrap if fresh else None)


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
    binaries = mysql_binaries()
    if binaries is None:
        raise DatabaseUnavailable(
            "no MariaDB/MySQL server binaries here (no `mariadbd` or `mysqld` found). "
            + how_to_get("mysql")
        )
    workdir, throwaway = _prepare_workdir("mysql", workdir)
    data = workdir / "data"
    sockdir = _socket_dir(workdir)
    _chown_for("mysql", sockdir)
    sock = sockdir / "mysqld.sock"
    password = password or _throwaway_password()
    fresh = not (data / "mysql").is_dir()
    if fresh:
        if binaries.installer is not None:
            init = [str(binaries.installer), "--no-defaults", f"--datadir={data}"]
            init += [
                "--auth-root-authentication-method=normal",  # root, no password, socket only below
                "--skip-test-db",
                "--skip-name-resolve",
            ]
        else:  # Oracle MySQL
            init = [str(binaries.server), "--no-defaults", "--initialize-insecure"]
            init += [f"--datadir={data}"]
        _initialize("mysql", init, workdir, throwaway)
    settings = [
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
        server = [str(binaries.server), "--no-defaults", f"--datadir={data}"]
        return [*server, f"--port={port}", *settings]

    def probe(port: int) -> None:
        import pymysql

        pymysql.connect(unix_socket=str(sock), user="root", connect_timeout=2).close()

    proc, chosen = _launch("mysql", command, probe, workdir, port, timeout, throwaway)
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
    return _register(server, bootstrap if fresh else None)


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


def _throwaway_password() -> str:
    # Characters that break a URL written by hand: proves every URL here is built by URL.create.
    return f"p@ss:w/rd#%?&'{secrets.token_hex(4)}"


def start(kind: str, **kwargs: Any) -> Server:
    if kind == "postgres":
        return start_postgres(**kwargs)
    if kind == "mysql":
        return start_mysql(**kwargs)
    raise ValueError(f"unknown database kind {kind!r}")


# --- the grader's session server ---------------------------------------------------------------


def from_env(kind: str) -> Server | None:
    """The server named by GRADER_POSTGRES_URL / GRADER_MYSQL_URL, checked, or None."""
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
            f"{ENV_URLS[kind]} ({hide_password(raw)}) cannot be reached: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
    finally:
        engine.dispose()
    return server


def session_server(kind: str) -> Server:
    """The server for one grader session: GRADER_*_URL when set, else a throwaway one."""
    return from_env(kind) or start(kind)


def connection_count(url: str) -> int:
    """How many connections the server holds open to the database of `url` (not counting ours)."""
    kind = kind_of_url(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if kind == "postgres":
                query = (
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            elif kind == "mysql":
                query = (
                    "SELECT COUNT(*) FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            else:
                raise ValueError(f"connection_count needs a server database, not {kind}")
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def connection_ids(url: str) -> set[str]:
    """The server's identities of the connections to `url`'s database (to see churn)."""
    kind = kind_of_url(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if kind == "postgres":
                rows = conn.execute(
                    text(
                        "SELECT pid, backend_start FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            else:
                rows = conn.execute(
                    text(
                        "SELECT id, 0 FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    )
                )
            return {f"{a}@{b}" for a, b in rows}
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


# --- the persistent learner server (`grader db up|down|status`) -------------------------------


def _state_path(kind: str, home: Path | None = None) -> Path:
    return (home or DB_HOME) / kind / "server.json"


def read_state(kind: str, home: Path | None = None) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_path(kind, home).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid) or not _looks_like_server(pid, kind):
        return None
    return state


def _looks_like_server(pid: int, kind: str) -> bool:
    """Guards against a PID reused by another program since the server stopped."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the PID file
    return (
        ("postgres" in cmdline)
        if kind == "postgres"
        else ("mysqld" in cmdline or "mariadbd" in cmdline)
    )


def db_up(kind: str, port: int | None = None, home: Path | None = None) -> tuple[dict, bool]:
    """Start (or find) the persistent server; returns (state, started_now)."""
    state = read_state(kind, home)
    if state:
        return state, False
    port = port or LEARNER_PORTS[kind]
    if port_open(port):
        raise DatabaseUnavailable(
            f"port {port} is already taken (another server, or `docker compose --profile {kind}`"
            f" already runs?). If it is the compose database, just use "
            f"DATABASE_URL='{learner_url(kind, port)}'; otherwise pass --port N."
        )
    workdir = (home or DB_HOME) / kind
    server = start(
        kind,
        workdir=workdir,
        port=port,
        user=LEARNER_USER,
        password=LEARNER_PASSWORD,
        database=LEARNER_DATABASE,
        keep=True,
        fast=False,
    )
    _forget(server)  # it outlives this process: `grader db down` stops it by its PID
    state = {
        "kind": kind,
        "pid": server.pid,
        "port": port,
        "url": learner_url(kind, port),
        "data": str(workdir / "data"),
        "log": str(server.log_path),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _state_path(kind, home).write_text(json.dumps(state, indent=2))
    return state, True


def db_down(kind: str, home: Path | None = None, purge: bool = False) -> dict | None:
    """Stop the persistent server by its saved PID; `purge` also deletes its data."""
    state = read_state(kind, home)
    if state:
        first = signal.SIGINT if kind == "postgres" else signal.SIGTERM
        _stop_process(state["pid"], first, grace=30)
    with contextlib.suppress(FileNotFoundError):
        _state_path(kind, home).unlink()
    if purge:
        shutil.rmtree((home or DB_HOME) / kind, ignore_errors=True)
    return state


def url_for_run(kind: str) -> str:
    """DATABASE_URL for `grader run N --db <kind>`: the `grader db up` (or compose) server."""
    env = os.environ.get("DATABASE_URL", "")
    if env and kind_of_url(env) == kind:
        return env
    state = read_state(kind)
    if state:
        return state["url"]
    if port_open(LEARNER_PORTS[kind]):
        # Something listens where `docker compose --profile <kind>` publishes its database.
        return learner_url(kind)
    raise SystemExit(
        f"grader: no {LABELS[kind]} server is running for `--db {kind}`. Start one with "
        f"`grader db up {kind}` (or `docker compose --profile {kind} up -d`), or export "
        f"DATABASE_URL for the server you have."
    )


def wait_for(url: str, timeout: float) -> str | None:
    """Connect to `url` until it answers or `timeout` passes; None when it answered, else why not.

    For containers that start together: the backend waits for its database instead of failing
    its first `create_all` (a Postgres container answers its healthcheck before it serves TCP).
    """
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + timeout
    last = "no attempt"
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return None
            except Exception as exc:
                last = f"{type(exc).__name__}: {_first_line(exc)}"
            if time.monotonic() >= deadline:
                return last
            time.sleep(0.5)
    finally:
        engine.dispose()


def _wait_command(args: Any) -> int:
    url = args.url or os.environ.get("DATABASE_URL")
    if not url:
        print("grader: `grader db wait` needs a URL: set DATABASE_URL or pass --url")
        return 2
    try:
        make_url(url)
    except Exception as exc:
        print(f"grader: DATABASE_URL is not a database URL ({_first_line(exc)})")
        return 2
    print(f"Waiting up to {args.timeout:.0f} s for {hide_password(url)} …", flush=True)
    problem = wait_for(url, args.timeout)
    if problem:
        print(f"grader: the database did not answer within {args.timeout:.0f} s (last: {problem})")
        return 1
    print("The database answers.")
    return 0


def _print_use(kind: str, url: str) -> None:
    print(
        f"\nUse it:\n"
        f"  export DATABASE_URL='{url}'\n"
        f"  grader run 4 --db {kind}          # or any chapter from 4 on\n"
        f"  {ENV_URLS[kind]}='{url}' grader check 4 --db {kind}\n"
        f"The password is {LEARNER_PASSWORD!r}; in the URL it is percent-encoded "
        f"(see the guide 'Choosing a database')."
    )


def db_command(args: Any) -> int:
    """`grader db up|down|status [postgres|mysql] [--port N] [--purge]`, `grader db wait`."""
    if args.action == "wait":
        return _wait_command(args)
    kinds = [args.kind] if args.kind else list(KINDS)
    if args.action in ("up", "down") and not args.kind:
        print(f"grader: say which server: `grader db {args.action} postgres` or `... mysql`")
        return 2
    if args.action == "status":
        for kind in kinds:
            state = read_state(kind)
            if state:
                print(f"✓ {LABELS[kind]} runs (PID {state['pid']}, port {state['port']})")
                print(f"    DATABASE_URL='{state['url']}'")
            elif port_open(LEARNER_PORTS[kind]):
                print(
                    f"? {LABELS[kind]}: not started by `grader db up`, but something listens on "
                    f"port {LEARNER_PORTS[kind]} (docker compose?); try "
                    f"DATABASE_URL='{learner_url(kind)}'"
                )
            else:
                where = "binaries found" if binaries_available(kind) else "no binaries here"
                print(f"· {LABELS[kind]} is not running ({where}): `grader db up {kind}`")
        return 0
    kind = args.kind
    if args.action == "down":
        state = db_down(kind, purge=args.purge)
        if state:
            print(f"Stopped {LABELS[kind]} (PID {state['pid']}).")
        else:
            print(f"{LABELS[kind]} was not running (no live PID in {_state_path(kind)}).")
        if args.purge:
            print(f"Deleted its data in {DB_HOME / kind}.")
        elif (DB_HOME / kind / "data").exists():
            print(f"Its data stays in {DB_HOME / kind}; `--purge` deletes it.")
        return 0
    port = args.port or LEARNER_PORTS[kind]
    if not binaries_available(kind):
        print(
            f"No {LABELS[kind]} server binaries on this machine. Either install them\n"
            f"  sudo apt-get install {PACKAGES[kind]}      (Debian/Ubuntu; then run this again)\n"
            f"or, with Docker, start the workbook's compose database:\n"
            f"  docker compose --profile {kind} up -d {kind}"
        )
        _print_use(kind, learner_url(kind))
        return 1
    try:
        state, started = db_up(kind, port=port)
    except DatabaseUnavailable as exc:
        print(f"grader: {exc}")
        return 1
    verb = "Started" if started else "Already running:"
    print(
        f"{verb} {LABELS[kind]} on 127.0.0.1:{state['port']} (PID {state['pid']}).\n"
        f"  data: {state['data']}\n  log:  {state['log']}\n"
        f"Stop it with `grader db down {kind}`."
    )
    _print_use(kind, state["url"])
    return 0
