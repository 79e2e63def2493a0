"""The grader's own view of a learner's database: one SQLAlchemy reader for all three databases.

The checks never trust the backend's word for what it stored: they open the database the backend
was given (`DATABASE_URL`) and read the `messages` table of SPEC §2 themselves. Whatever type the
learner chose for a column (JSON, JSONB, TEXT; a UUID, its hex or its text), a row comes back the
same way: the thread id as a canonical UUID string, the parts as the JSON text they hold.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, MetaData, Table, create_engine, inspect, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from grader.toolkit import steps
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.explain import listing

TABLE = "messages"
COLUMNS = ("id", "thread_id", "role", "parts", "created_at")


def _canonical(value: Any) -> str | None:
    """A thread id as text, whichever way it is stored (UUID, 32 hex digits, bytes)."""
    try:
        if isinstance(value, bytes) and len(value) == 16:
            return str(uuid.UUID(bytes=value))
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


@dataclass(frozen=True)
class Row:
    """One row of `messages`, as the database holds it."""

    id: int
    thread_id: str | None  # canonical UUID text; None when the column holds something else
    stored_thread_id: Any  # as the column holds it
    role: str
    parts: str  # the JSON text the column holds (a JSON column's value, dumped back)
    created_at: Any

    def message(self) -> dict[str, Any]:
        """The `{role, parts}` message this row stores; fails, saying why, when it is not one."""
        try:
            parts = json.loads(self.parts)
        except (TypeError, ValueError):
            fail(
                "the parts column must hold the message's parts as JSON (json.dumps(parts), "
                "or a JSON column)",
                expected='[{"text": "..."}]',
                actual=shorten(repr(self.parts), 200),
            )
        if isinstance(parts, dict) and "parts" in parts:
            fail(
                "the parts column holds the whole message; store only its parts array there "
                "(the role has its own column)",
                expected='[{"text": "..."}]',
                actual=shorten(self.parts, 200),
            )
        expect(
            isinstance(parts, list),
            "the parts column must hold a JSON array of parts",
            expected='[{"text": "..."}]',
            actual=shorten(self.parts, 200),
        )
        return {"role": self.role, "parts": parts}


def kind_of(url: str) -> str:
    """`sqlite`, `postgres` or `mysql`, from a SQLAlchemy URL."""
    name = make_url(url).get_backend_name()
    return {"postgresql": "postgres", "mariadb": "mysql"}.get(name, name)


class DbView:
    """Reads (and, for checks that need it, writes) the database at `url`, one query at a time.

    `backend_dir` is the folder the backend runs in: a backend that ignores DATABASE_URL writes
    to `./messages.db` there, and the view says so instead of "the table is missing".
    """

    def __init__(self, url: str, backend_dir: Path | None = None) -> None:
        self.url = url
        self.kind = kind_of(url)
        self.backend_dir = backend_dir

    def _engine(self) -> Engine:
        if self.kind == "sqlite":
            path = Path(make_url(self.url).database or "")
            if not path.is_file():
                self._wrong_database(
                    "there is no database file where DATABASE_URL points: read DATABASE_URL "
                    "from the environment (sqlite:///path) and open that file",
                    expected=str(path),
                    actual="no such file",
                )
            # Read-only: the grader must never create or change the learner's file by reading.
            return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool)
        return create_engine(self.url, poolclass=NullPool)

    def _wrong_database(self, rationale: str, **shown: Any) -> None:
        default = self.backend_dir / "messages.db" if self.backend_dir else None
        if default is not None and default.is_file():
            fail(
                "the backend wrote to ./messages.db, its default, not to the database in "
                "DATABASE_URL: read DATABASE_URL from the environment",
                expected=f"the tables in {make_url(self.url).render_as_string(hide_password=True)}",
                actual=f"a database file {default}",
            )
        fail(rationale, **shown)

    def tables(self) -> set[str]:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                return set(inspect(conn).get_table_names())
        finally:
            engine.dispose()

    def columns(self, table: str = TABLE) -> dict[str, str]:
        """Column name -> its type as the database reports it."""
        engine = self._engine()
        try:
            with engine.connect() as conn:
                return {c["name"]: str(c["type"]) for c in inspect(conn).get_columns(table)}
        finally:
            engine.dispose()

    def primary_key(self, table: str = TABLE) -> list[str]:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                return inspect(conn).get_pk_constraint(table)["constrained_columns"]
        finally:
            engine.dispose()

    def indexes(self, table: str = TABLE) -> dict[str, list[str]]:
        """Index name -> its columns, in order (unique constraints included)."""
        engine = self._engine()
        try:
            with engine.connect() as conn:
                found = inspect(conn)
                indexes = {i["name"]: list(i["column_names"]) for i in found.get_indexes(table)}
                for u in found.get_unique_constraints(table):
                    indexes.setdefault(u["name"] or "unique", list(u["column_names"]))
                return indexes
        finally:
            engine.dispose()

    def rows_holding(self, value: str) -> list[tuple[str, dict[str, Any]]]:
        """Every row of every table but `messages` with a column whose text holds `value`, as
        (table, row): where a value the API was sent (a username) ended up, whatever the
        layout."""
        engine = self._engine()
        found = []
        try:
            with engine.connect() as conn:
                for name in sorted(set(inspect(conn).get_table_names()) - {TABLE}):
                    table = Table(name, MetaData(), autoload_with=conn)
                    for row in conn.execute(table.select()).mappings():
                        if any(value in str(v) for v in row.values()):
                            found.append((name, dict(row)))
        finally:
            engine.dispose()
        return found

    def expect_table(self) -> None:
        """Fail unless `messages` exists with the chapter's columns."""
        tables = self.tables()
        if TABLE not in tables:
            self._wrong_database(
                "the database has no `messages` table after the backend started: create it "
                "when the backend starts (CREATE TABLE IF NOT EXISTS …, or metadata.create_all)",
                expected="a table named messages",
                actual=f"tables: {sorted(tables)}",
            )
        missing = [c for c in COLUMNS if c not in self.columns()]
        expect(
            not missing,
            f"the messages table has no column {', '.join(missing)} (SPEC §2 names the columns "
            "the grader reads)",
            expected=list(COLUMNS),
            actual=sorted(self.columns()),
        )

    def rows(self) -> list[Row]:
        """Every row of `messages`, by id."""
        self.expect_table()
        engine = self._engine()
        try:
            with engine.connect() as conn:
                result = conn.execute(
                    text("SELECT id, thread_id, role, parts, created_at FROM messages ORDER BY id")
                ).mappings()
                rows = [self._row(r) for r in result]
        finally:
            engine.dispose()
        steps.record(f"read the messages table: {len(rows)} rows")
        return rows

    @staticmethod
    def _row(r: Any) -> Row:
        parts = r["parts"]
        if isinstance(parts, bytes):
            parts = parts.decode("utf-8")
        if not isinstance(parts, str):  # a JSON column the driver hands back parsed
            parts = json.dumps(parts, ensure_ascii=False)
        return Row(
            r["id"], _canonical(r["thread_id"]), r["thread_id"], r["role"], parts, r["created_at"]
        )

    def thread(self, thread_id: str) -> list[Row]:
        """The rows of one thread, by id (a thread id matches whatever form it is stored in)."""
        want = _canonical(thread_id)
        return [r for r in self.rows() if want is not None and r.thread_id == want]

    def insert(self, thread_id: str, messages: list[dict[str, Any]]) -> None:
        """Add a thread's rows by hand, in the layout and id format the backend's rows use."""
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            table = Table(TABLE, MetaData(), autoload_with=engine)
            with engine.connect() as conn:
                sample = conn.execute(text("SELECT thread_id FROM messages LIMIT 1")).scalar()
            stored: Any = thread_id
            if isinstance(sample, str) and len(sample) == 32:  # a Uuid column's hex on SQLite
                stored = uuid.UUID(thread_id).hex
            elif isinstance(sample, uuid.UUID):
                stored = uuid.UUID(thread_id)
            json_column = isinstance(table.c.parts.type, JSON)
            now = datetime.now(UTC).replace(tzinfo=None)
            rows = [
                {
                    "thread_id": stored,
                    "role": m["role"],
                    "parts": m["parts"] if json_column else json.dumps(m["parts"]),
                    **({"created_at": now} if table.c.created_at.server_default is None else {}),
                }
                for m in messages
            ]
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
        except Exception as exc:
            fail(
                "the grader could not add rows to your messages table by hand; does it have "
                "the chapter's layout (id, thread_id, role, parts, created_at)?",
                expected="INSERT INTO messages (thread_id, role, parts, created_at) to work",
                actual=f"{type(exc).__name__}: {shorten(str(exc), 300)}",
            )
        finally:
            engine.dispose()
        steps.record(f"inserted {len(messages)} rows by hand into thread {thread_id[:8]}…")


def explain_rows(rows: list[Row], want: list[dict[str, Any]], where: str) -> None:
    """Fail, saying how, unless `rows` store exactly the messages `want`, one row each, in order."""
    got = [r.message() for r in rows]
    if not got:
        fail(
            f"POST /chat answered, but {where} has no rows in the messages table: insert one "
            "row per message and commit the transaction",
            expected=f"{len(want)} rows",
            actual="0 rows",
        )
    if got == want:
        return
    shown = {"expected": listing(want), "actual": listing(got)}
    if len(got) != len(want):
        fail(
            f"expected one row per message: {where} has {len(want)} messages but {len(got)} rows",
            **shown,
        )
    if sorted(map(json.dumps, got)) == sorted(map(json.dumps, want)):
        fail(
            f"the rows of {where} are out of order: insert the user's message first, then the "
            "assistant's messages in the order respond() returned them",
            **shown,
        )
    fail(f"the rows of {where} differ from the messages POST /chat answered", **shown)


def query_plan(url: str, sql: str, params: dict[str, Any]) -> str:
    """How the database at `url` would run `sql`, one line per step, in its own words.

    Postgres is told not to scan whole tables where an index could serve (a planner prefers a
    scan of a table this small, which says nothing about the table with a million rows), so
    the plan shows whether an index *can* answer the query in order.
    """
    kind = kind_of(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            if kind == "sqlite":
                rows = conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"), params)
                return "\n".join(str(r[-1]) for r in rows)
            if kind == "postgres":
                conn.execute(text("SET LOCAL enable_seqscan = off"))
                return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}"), params))
            rows = conn.execute(text(f"EXPLAIN {sql}"), params).mappings()
            return "\n".join(
                f"table={r['table']} type={r['type']} key={r['key']} Extra={r['Extra']}"
                for r in rows
            )
    finally:
        engine.dispose()


def plan_problem(kind: str, plan: str) -> str | None:
    """What is wrong with a plan for "a range of one index, in the index's order", if anything."""
    if kind == "sqlite":
        if "USING" not in plan or "INDEX" not in plan:
            return "it reads the whole table"
        if "TEMP B-TREE" in plan:
            return "it sorts the rows it found (no index gives them in the order asked)"
        return None
    if kind == "postgres":
        if "Index" not in plan:
            return "it reads the whole table"
        if any(line.strip().startswith(("Sort", "->  Sort")) for line in plan.splitlines()):
            return "it sorts the rows it found (no index gives them in the order asked)"
        return None
    if "key=None" in plan:
        return "it reads the whole table"
    if "filesort" in plan:
        return "it sorts the rows it found (no index gives them in the order asked)"
    return None
