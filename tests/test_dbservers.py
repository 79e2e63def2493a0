"""The grader's real database servers: start, fresh databases, isolation, stop, clean up.

These start real Postgres and MariaDB servers from the system's binaries (Debian's `postgresql`
and `mariadb-server`). Without them a test is skipped, except in CI (`CI` set), where a missing
server is a failure: CI must prove the database milestones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    inspect,
    make_url,
    text,
)
from sqlalchemy.pool import NullPool

from grader import REPO_ROOT
from grader.cli import main
from grader.databases import Databases
from grader.dbservers import binaries, connections, persistent
from grader.dbservers.cli import db_command
from grader.dbservers.errors import DatabaseUnavailable, how_to_get
from grader.dbservers.session import session_server
from grader.dbservers.show import show_command
from grader.dbservers.start import start, stopped
from grader.dbservers.urls import DRIVERS, ENV_URLS, PACKAGES, learner_url
from grader.toolkit.procs import Backend, free_port, pid_alive

pytestmark = [pytest.mark.databases, pytest.mark.xdist_group("databases")]
IN_CI = bool(os.environ.get("CI"))
KINDS = ["postgres", "mysql"]


def _need(kind: str) -> None:
    if binaries.binaries_available(kind):
        return
    message = f"no {kind} server binaries: {how_to_get(kind)}"
    if IN_CI:
        pytest.fail(f"CI must run the database tests; {message}")
    pytest.skip(message)


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest):
    kind = request.param
    _need(kind)
    srv = start(kind)
    yield srv
    srv.stop()


def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_two_fresh_databases_are_isolated_and_the_server_is_gone_after_stop(server):
    pid, workdir = server.pid, server.workdir
    assert pid is not None and pid_alive(pid)
    assert workdir is not None and workdir.is_dir()
    # The password holds @ : / # % ? & ' : the URL must carry them percent-encoded.
    password = make_url(server.admin_url).password
    assert set("@:/#%?&'") <= set(password)
    assert "@" not in server.admin_url.split("://", 1)[1].rsplit("@", 1)[0]

    first = server.create_database("grader_1")
    second = server.create_database("grader_2")
    assert make_url(first).database == "grader_1"
    assert make_url(second).database == "grader_2"
    if server.kind == "mysql":
        assert make_url(first).query["charset"] == "utf8mb4"

    engine = create_engine(first)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body VARCHAR(100))"))
        conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": "é 🎲 'quoted'"})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT body FROM notes")).scalar_one() == "é 🎲 'quoted'"
        # Our open connection is one the server counts; the helper's own is not.
        assert connections.connection_count(first) == 1
        assert len(connections.connection_ids(first)) == 1
    engine.dispose()
    assert connections.connection_count(first) == 0
    assert _table_names(first) == {"notes"}
    assert _table_names(second) == set(), "a fresh database must be empty"

    server.stop()
    assert not pid_alive(pid), "the server's PID is still alive after stop()"
    assert not workdir.exists(), "the data directory is still there after stop()"
    with pytest.raises(Exception):  # noqa: B017  (whatever the driver raises)
        create_engine(first).connect()


def test_a_stopped_server_refuses_then_starts_again_on_its_data_and_port(server):
    url = server.create_database("grader_restarted")
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body VARCHAR(100))"))
        conn.execute(text("INSERT INTO notes (body) VALUES ('kept')"))
    pid, port = server.pid, server.port
    with stopped(server):
        assert not pid_alive(pid), "the server's process is still alive while stopped"
        with pytest.raises(Exception):  # noqa: B017  (whatever the driver raises)
            engine.connect()
    assert server.pid != pid and pid_alive(server.pid)
    assert server.port == port
    with engine.connect() as conn:  # same URL, password included
        assert conn.execute(text("SELECT body FROM notes")).scalar_one() == "kept"
    engine.dispose()
    restarted = server.pid
    server.stop()
    assert not pid_alive(restarted), "stop() must stop the restarted process"


@pytest.mark.parametrize("kind", KINDS)
def test_databases_fixture_starts_lazily_and_stops_on_close(kind, tmp_path):
    _need(kind)
    dbs = Databases(kind, tmp_path, require=True)
    assert dbs._server is None  # nothing started until a check asks for a database
    a, b = dbs.fresh_url(), dbs.fresh_url()
    assert a != b
    assert [make_url(u).database for u in (a, b)] == ["grader_1", "grader_2"]
    server = dbs._server
    assert server is not None and server.owned
    assert dbs.connection_count(a) == 0
    dbs.close()
    assert not pid_alive(server.pid)
    assert not server.workdir.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_an_external_server_from_the_environment(kind, tmp_path, monkeypatch):
    """GRADER_*_URL: databases are created there with unique names, and dropped at close."""
    _need(kind)
    host = start(kind)
    try:
        url = make_url(host.admin_url)
        # A URL without the driver part, as a learner may write it.
        bare = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
        monkeypatch.setenv(ENV_URLS[kind], bare)
        dbs = Databases(kind, tmp_path, require=True)
        fresh = dbs.fresh_url()
        assert make_url(fresh).database == f"grader_{os.getpid()}_1"
        assert make_url(fresh).drivername == DRIVERS[kind]
        assert not dbs._server.owned
        assert _table_names(fresh) == set()
        dbs.close()
        engine = create_engine(host.admin_url)
        with engine.connect() as conn:
            query = (
                "SELECT datname FROM pg_database"
                if kind == "postgres"
                else "SELECT schema_name FROM information_schema.schemata"
            )
            names = {row[0] for row in conn.execute(text(query))}
        engine.dispose()
        assert f"grader_{os.getpid()}_1" not in names, "close() must drop what it created"
        assert pid_alive(host.pid), "close() must not stop a server it did not start"
    finally:
        host.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_missing_binaries_say_how_to_get_a_server(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(binaries, "postgres_bin_dir", lambda: None)
    monkeypatch.setattr(binaries, "mysql_binaries", lambda: None)
    monkeypatch.delenv(ENV_URLS[kind], raising=False)
    with pytest.raises(DatabaseUnavailable) as caught:
        session_server(kind)
    message = str(caught.value)
    assert f"sudo apt-get install {PACKAGES[kind]}" in message
    assert f"grader db up {kind}" in message
    assert f"docker compose --profile {kind} up -d" in message
    assert ENV_URLS[kind] in message
    # Outside CI the check is skipped with that message; with require (CI) it fails.
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        Databases(kind, tmp_path, require=False).fresh_url()
    with pytest.raises(DatabaseUnavailable):
        Databases(kind, tmp_path, require=True).fresh_url()


def test_an_unreachable_external_url_is_a_clear_error(monkeypatch):
    port = free_port()
    monkeypatch.setenv("GRADER_POSTGRES_URL", f"postgresql://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(DatabaseUnavailable) as caught:
        session_server("postgres")
    assert "cannot be reached" in str(caught.value)
    assert "secret" not in str(caught.value), "the password must not be printed"


def test_a_server_that_cannot_start_shows_its_log(tmp_path):
    _need("postgres")
    # Two servers cannot share one port: the second one's log says so.
    first = start("postgres")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            start("postgres", port=first.port, timeout=10)
        assert "log ends with" in str(caught.value)
        assert "already in use" in str(caught.value) or "could not" in str(caught.value)
    finally:
        first.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_grader_db_up_status_down(kind, monkeypatch, capsys):
    """The learner's persistent server: up prints the URL, down stops it by its saved PID."""
    _need(kind)
    # Not pytest's tmp_path: as root the server runs as `postgres`/`mysql`, who can't enter it.
    home = Path(tempfile.mkdtemp(prefix="grader-test-db-"))
    os.chmod(home, 0o755)
    monkeypatch.setattr(persistent, "DB_HOME", home / "db")
    port = free_port()
    args = argparse.Namespace(action="up", kind=kind, port=port, purge=False)
    assert db_command(args) == 0
    out = capsys.readouterr().out
    url = learner_url(kind, port)
    assert f"export DATABASE_URL='{url}'" in out
    state = persistent.read_state(kind)
    assert state is not None and state["port"] == port
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        monkeypatch.setenv("DATABASE_URL", "")
        assert persistent.url_for_run(kind) == url
        assert db_command(argparse.Namespace(action="up", kind=kind, port=port)) == 0
        assert "Already running" in capsys.readouterr().out
        db_command(argparse.Namespace(action="status", kind=kind, port=None))
        assert f"PID {state['pid']}" in capsys.readouterr().out
        wait = argparse.Namespace(action="wait", kind=None, url=url, timeout=10)
        assert db_command(wait) == 0
        assert "The database answers." in capsys.readouterr().out
        # `grader db show --db <kind>` reads the server `grader db up` started.
        thread_id = str(uuid.uuid4())
        write_messages(url, [(thread_id, "user", [{"text": "on the grader db up server"}])])
        assert main(["db", "show", thread_id, "--db", kind]) == 0
        out = capsys.readouterr().out
        assert f"Thread {thread_id}: 1 row in " in out and f":{port}" in out
        assert [r["parts"] for r in shown_rows(out)] == [[{"text": "on the grader db up server"}]]
    finally:
        down = argparse.Namespace(action="down", kind=kind, port=None, purge=True)
        assert db_command(down) == 0
    assert not pid_alive(state["pid"])
    assert not (home / "db" / kind).exists()
    shutil.rmtree(home)
    with pytest.raises(SystemExit, match=f"grader db up {kind}"):
        monkeypatch.setattr(persistent, "LEARNER_PORTS", {kind: free_port()})
        persistent.url_for_run(kind)


def test_grader_db_up_without_binaries_prints_the_compose_command():
    env = {**os.environ, "PATH": "/nonexistent", "GRADER_PG_BIN": "/nonexistent"}
    code = (
        "import sys; from grader.dbservers import binaries; "
        "binaries.postgres_bin_dir = lambda: None; "
        "from grader.cli import main; sys.exit(main(['db', 'up', 'postgres']))"
    )
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert time.monotonic() - began < 30
    assert proc.returncode == 1
    assert "docker compose --profile postgres up -d" in proc.stdout
    assert "sudo apt-get install postgresql" in proc.stdout
    assert learner_url("postgres") in proc.stdout


def test_grader_db_wait_gives_up_on_a_silent_server_and_says_why(capsys):
    """What the compose backend runs first: bounded, and the last error is printed."""
    url = f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/x"
    began = time.monotonic()
    args = argparse.Namespace(action="wait", kind=None, url=url, timeout=1)
    assert db_command(args) == 1
    assert time.monotonic() - began < 15
    out = capsys.readouterr().out
    assert "did not answer within 1 s" in out and "refused" in out
    assert "secret" not in out, "the password must not be printed"


def test_grader_db_wait_needs_a_url(monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    args = argparse.Namespace(action="wait", kind=None, url=None, timeout=1)
    assert db_command(args) == 2
    assert "set DATABASE_URL or pass --url" in capsys.readouterr().out


# --- grader db show -----------------------------------------------------------------------------

CHAPTER_4 = REPO_ROOT / "solutions" / "04-choosing-a-database"


def messages_table(parts: Any = JSON, thread_id: Any = None) -> Table:
    """The `messages` layout of SPEC §2 (chapter 4's own table), in a fresh MetaData."""
    return Table(
        "messages",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("thread_id", thread_id if thread_id is not None else String(36), nullable=False),
        Column("role", String(16), nullable=False),
        Column("parts", parts, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def write_messages(url: str, rows: list[tuple[str, str, Any]], table: Table | None = None) -> None:
    """Create the table if needed and insert (thread_id, role, parts) rows, in order."""
    table = table if table is not None else messages_table()
    engine = create_engine(url)
    try:
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            for thread_id, role, parts in rows:
                conn.execute(table.insert(), {"thread_id": thread_id, "role": role, "parts": parts})
    finally:
        engine.dispose()


def shown_rows(out: str) -> list[dict[str, Any]]:
    """The blocks `grader db show` printed after its header, each parsed back (parts as JSON)."""
    _header, _, body = out.partition("\n\n")
    rows = []
    for block in body.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        parts: list[str] = []
        for line in block.splitlines():
            if parts or line.startswith("parts:"):
                parts.append(line[len("created_at: ") :])
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        fields["parts"] = json.loads("".join(parts))
        rows.append(fields)
    return rows


def test_db_show_prints_what_a_chapter_4_backend_stored_on_sqlite(tmp_path, monkeypatch, capsys):
    """The SQLite file `grader run` gives the chapter (DATABASE_URL unset, or relative)."""
    chapter = tmp_path / "chapter"
    chapter.mkdir()
    db = chapter / "messages.db"
    backend = Backend(CHAPTER_4, tmp_path / "run", env={"DATABASE_URL": f"sqlite:///{db}"})
    backend.start()
    try:
        with httpx.Client(base_url=backend.url, timeout=30) as client:
            first = client.post("/chat", json={"prompt": "roll 2d6 🎲 'quoted'", "thread_id": None})
            assert first.status_code == 200, first.text
            other = client.post("/chat", json={"prompt": "another thread", "thread_id": None})
            assert other.status_code == 200, other.text
    finally:
        backend.stop()
    thread_id = first.json()["thread_id"]
    stored = first.json()["messages"]  # the turn's messages: the prompt, a tool call, …
    assert stored[0] == {"role": "user", "parts": [{"text": "roll 2d6 🎲 'quoted'"}]}
    assert len(stored) > 2

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert show_command(thread_id, db="sqlite", chapter_dir=chapter) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Thread {thread_id}: {len(stored)} rows in SQLite file {db}\n")
    rows = shown_rows(out)
    assert [{"role": r["role"], "parts": r["parts"]} for r in rows] == stored
    ids = [int(r["id"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(r["created_at"].startswith(str(datetime.now(UTC).year)) for r in rows)
    assert "another thread" not in out

    # DATABASE_URL as `grader run` passes it on: relative to the chapter folder, not to here.
    monkeypatch.setenv("DATABASE_URL", "sqlite:///./messages.db")
    assert show_command(thread_id, db="sqlite", chapter_dir=chapter) == 0
    assert shown_rows(capsys.readouterr().out) == rows
    # The command line, with --url.
    assert main(["db", "show", thread_id, "--url", f"sqlite:///{db}"]) == 0
    assert shown_rows(capsys.readouterr().out) == rows


def test_db_show_shows_the_stored_forms_and_says_when_a_thread_has_no_rows(tmp_path, capsys):
    """A native Uuid column's hex, parts as TEXT, a row whose parts are not JSON."""
    url = f"sqlite:///{tmp_path / 'messages.db'}"
    thread = uuid.uuid4()
    long_parts = [
        {"function_call": {"name": "roll_dice", "args": {"count": 2, "sides": 6}}},
        {"function_response": {"name": "roll_dice", "response": {"rolls": [3, 5], "total": 8}}},
    ]
    write_messages(
        url,
        [
            (thread.hex, "user", json.dumps([{"text": "hi"}])),
            (thread.hex, "tool", json.dumps(long_parts)),
            (thread.hex, "model", "not json {"),
            (uuid.uuid4().hex, "user", json.dumps([{"text": "elsewhere"}])),
        ],
        messages_table(parts=Text, thread_id=String(32)),
    )
    assert main(["db", "show", str(thread).upper(), "--url", url]) == 0
    out = capsys.readouterr().out
    assert f"Thread {thread}: 3 rows in " in out
    assert f"thread_id stored as '{thread.hex}'" in out
    assert '\nparts:      [{"text": "hi"}]\n' in out
    # Several parts: one per line, each compact, under the value.
    assert (
        'parts:      [\n              {"function_call": {"name": "roll_dice", "args": '
        '{"count": 2, "sides": 6}}},\n              {"function_response"'
    ) in out
    assert "parts:      not json {   (not JSON)" in out
    assert "elsewhere" not in out

    missing = str(uuid.uuid4())
    assert main(["db", "show", missing, "--url", url]) == 1
    out = capsys.readouterr().out
    assert f"No rows for thread {missing}" in out
    assert "holds 4 rows of 2 other threads" in out


def test_db_show_on_a_server_database(server, capsys, monkeypatch):
    """The database `grader run --db <kind>` uses (DATABASE_URL of that kind), on a real server."""
    url = server.create_database("grader_show")
    thread_id = str(uuid.uuid4())
    parts = [{"text": "é 🎲 'quoted' \\ \"double\""}]
    tool = [{"function_call": {"name": "roll_dice", "args": {"count": 1, "sides": 20}}}]
    write_messages(
        url,
        [
            (thread_id, "user", parts),
            (str(uuid.uuid4()), "user", [{"text": "elsewhere"}]),
            (thread_id, "model", tool),
        ],
    )
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["db", "show", thread_id, "--db", server.kind]) == 0
    out = capsys.readouterr().out
    assert f"Thread {thread_id}: 2 rows in " in out and "grader_show" in out
    assert [(r["role"], r["parts"]) for r in shown_rows(out)] == [("user", parts), ("model", tool)]
    assert make_url(url).password not in out, "the password must not be printed"
    assert "elsewhere" not in out


def test_db_show_errors_are_messages_not_tracebacks(tmp_path, monkeypatch, capsys):
    thread_id = str(uuid.uuid4())

    def show(*argv: str) -> tuple[int, str]:
        code = main(["db", "show", *argv])
        seen = capsys.readouterr()
        assert "Traceback" not in seen.out + seen.err
        return code, seen.out

    code, out = show("not-a-thread", "--url", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and "'not-a-thread' is not a thread id" in out and "UUID" in out

    code, out = show(thread_id, "--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 1 and f"there is no database file at {tmp_path / 'none.db'}" in out

    other = f"sqlite:///{tmp_path / 'other.db'}"
    engine = create_engine(other)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body TEXT)"))
    engine.dispose()
    code, out = show(thread_id, "--url", other)
    assert code == 1 and "has no `messages` table (its tables: notes)" in out

    odd = f"sqlite:///{tmp_path / 'odd.db'}"
    engine = create_engine(odd)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)"))
    engine.dispose()
    code, out = show(thread_id, "--url", odd)
    assert code == 1 and "has no column thread_id, role, parts, created_at" in out

    silent = f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/x"
    code, out = show(thread_id, "--url", silent)
    assert code == 1 and "cannot read postgresql at 127.0.0.1" in out
    assert "OperationalError" in out and "grader db up postgres" in out
    assert "secret" not in out, "the password must not be printed"

    code, out = show(thread_id, "--url", "not a url")
    assert code == 2 and "--url is not a database URL" in out

    # --db postgres when no server runs: how to start one.
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setattr(persistent, "DB_HOME", tmp_path / "db")
    monkeypatch.setattr(persistent, "LEARNER_PORTS", {"postgres": free_port()})
    code, out = show(thread_id, "--db", "postgres")
    assert code == 1 and "`grader db up postgres`" in out
