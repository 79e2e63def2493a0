"""`grader db show THREAD_ID`: one thread's rows as the database holds them.

It reads the database `grader run` uses for `--db` (the SQLite file in the chapter folder, or the
server `grader db up` started; `--url` names any other) with the grader's own reader,
`grader.toolkit.dbview.DbView`, the one the checks use, read-only on SQLite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from grader.dbservers.errors import describe
from grader.runner import database_url, describe_database
from grader.toolkit.dbview import TABLE, DbView, Row
from grader.toolkit.expect import CheckFailed

WIDTH = 100  # a parts array longer than this on one line is shown one part per line
LABEL = 12  # the width of "created_at: "
EXAMPLE_ID = "5d0e8a4c-1f2b-4c3d-9e8f-0a1b2c3d4e5f"


def resolve_url(db: str, chapter_dir: Path, url: str | None = None) -> str:
    """The URL `grader run --db <db>` gives the chapter's backend, or `url`.

    A relative SQLite path is relative to the chapter folder, where `grader run` starts the
    backend (a `--url` given here is relative to where you are, as you typed it).
    """
    if url:
        return url
    chosen = database_url(db, chapter_dir)  # SystemExit: no server for --db postgres|mysql
    parsed = make_url(chosen)
    path = parsed.database
    relative = path and path != ":memory:" and not Path(path).is_absolute()
    if parsed.get_backend_name() == "sqlite" and relative:
        chosen = parsed.set(database=str((chapter_dir / path).resolve())).render_as_string(
            hide_password=False
        )
    return chosen


def _pretty_parts(text: str) -> list[str]:
    """The parts as JSON lines: one line when short, else one part per line (each compact)."""
    try:
        parts = json.loads(text)
    except (TypeError, ValueError):
        return [f"{text}   (not JSON)"]
    one_line = json.dumps(parts, ensure_ascii=False)
    if not isinstance(parts, list) or (len(parts) < 2 and len(one_line) <= WIDTH):
        return [one_line]
    items = [json.dumps(p, ensure_ascii=False) for p in parts]
    return ["[", *(f"  {item}," for item in items[:-1]), f"  {items[-1]}", "]"]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _when(value: Any) -> str:
    return value.isoformat(sep=" ") if hasattr(value, "isoformat") else str(value)


def format_row(row: Row) -> str:
    """One block: id, role, created_at, parts (continuation lines under the value)."""
    parts = _pretty_parts(row.parts)
    lines = [
        f"{'id:':<{LABEL}}{row.id}",
        f"{'role:':<{LABEL}}{row.role}",
        f"{'created_at:':<{LABEL}}{_when(row.created_at)}",
        f"{'parts:':<{LABEL}}{parts[0]}",
        *(" " * LABEL + line for line in parts[1:]),
    ]
    return "\n".join(lines)


def show_thread(thread_id: str, url: str, where: str, out: Callable[[str], Any] = print) -> int:
    """Print the thread's rows; 0 when it has some, 1 when it has none or the database can't say.

    `where` names the database in the messages (never with its password).
    """
    try:
        wanted = str(uuid.UUID(thread_id))
    except ValueError:
        out(
            f"grader: {thread_id!r} is not a thread id. A thread id is a UUID, such as "
            f"{EXAMPLE_ID}: POST /chat answers with it, and the chat page keeps it in its "
            "address (?thread_id=…)."
        )
        return 2
    view = DbView(url)
    if view.kind == "sqlite":
        path = make_url(url).database
        if path in (None, "", ":memory:"):
            out(f"grader: {where}: nothing is left to show once its backend has stopped.")
            return 1
        if not Path(path).is_file():
            out(
                f"grader: there is no database file at {path}. The backend creates it when it "
                "starts: `grader run N`, send a message, then look again (`--chapter N` reads "
                "another chapter's file, `--url` any database)."
            )
            return 1
    try:
        tables = view.tables()
    except Exception as exc:
        hint = (
            f" Is its server running? `grader db status` says; `grader db up {view.kind}` "
            "starts one."
            if view.kind in ("postgres", "mysql")
            else ""
        )
        out(f"grader: cannot read {where}: {describe(exc)}.{hint}")
        return 1
    if TABLE not in tables:
        out(
            f"grader: {where} has no `{TABLE}` table (its tables: "
            f"{', '.join(sorted(tables)) or 'none'}). The backend creates it when it starts."
        )
        return 1
    try:
        rows = view.thread(wanted)
        others = view.rows() if not rows else []
    except CheckFailed as failure:
        out(f"grader: {where}: {failure.rationale}")
        if failure.expected is not None:
            out(f"  expected: {failure.expected}\n  actual:   {failure.actual}")
        return 1
    except Exception as exc:
        out(f"grader: cannot read the {TABLE} table of {where}: {describe(exc)}")
        return 1
    if not rows:
        threads = len({r.stored_thread_id for r in others})
        out(
            f"No rows for thread {wanted} in {where}: its {TABLE} table holds "
            f"{_count(len(others), 'row')} of {_count(threads, 'other thread')}."
        )
        return 1
    stored = rows[0].stored_thread_id
    as_stored = f", thread_id stored as {stored!r}" if str(stored) != wanted else ""
    out(f"Thread {wanted}: {_count(len(rows), 'row')} in {where}{as_stored}\n")
    out("\n\n".join(format_row(r) for r in rows))
    return 0


def show_command(thread_id: str, db: str, chapter_dir: Path, url: str | None = None) -> int:
    """`grader db show THREAD_ID [--db sqlite|postgres|mysql] [--url URL]`."""
    try:
        chosen = resolve_url(db, chapter_dir, url)
        make_url(chosen)
    except SystemExit as exc:  # no server runs for --db postgres|mysql: it says how to start one
        print(exc.code)
        return 1
    except ArgumentError:
        given = "--url" if url else "DATABASE_URL"
        print(f"grader: {given} is not a database URL (such as sqlite:///path/messages.db)")
        return 2
    return show_thread(thread_id, chosen, describe_database(chosen, chapter_dir))
