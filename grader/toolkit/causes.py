"""What a backend's log says went wrong, for the `why` of a 5xx.

A learner's `500` is reported with the exception that caused it (the last line of the last
traceback the backend printed during the request), and database errors the grader recognises
are named in words, with what usually causes them.
"""

from __future__ import annotations

import re

# `KeyError: 'x'`, `sqlalchemy.exc.IntegrityError: ...`, `psycopg.errors.UndefinedTable: ...`
_EXCEPTION = re.compile(
    r"^[\s|]*((?:(?:[A-Za-z_]\w*\.)+[A-Z]\w*|[A-Za-z_]\w*(?:Error|Exception|Exit|Failure|Interrupt|Group))(?::.*)?)$"
)
_TRACEBACK = "Traceback (most recent call last):"

_SYNTAX = re.compile(
    r"syntax error|You have an error in your SQL syntax|unrecognized token|incomplete input"
)

# (pattern in the exception line, what it means); the first match wins.
KNOWN: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"no such table: (\w+)|relation \"(\w+)\" does not exist|Table '[\w.]*?(\w+)' doesn't exist"
        ),
        "the table {0} does not exist: create it when the backend starts, on the database "
        "DATABASE_URL names",
    ),
    (
        re.compile(
            r"NOT NULL constraint failed: ([\w.]+)|null value in column \"(\w+)\"|Column '(\w+)' cannot be null"
        ),
        "a row was inserted without a value for {0}, a NOT NULL column",
    ),
    (
        re.compile(
            r"no such column: ([\w.]+)|column \"?([\w.]+)\"? does not exist|Unknown column '([\w.]+)'"
        ),
        "the SQL names a column the table does not have: {0}",
    ),
    (
        re.compile(r"Data too long for column '(\w+)'|value too long for type ([\w ()]+)"),
        "a value is longer than its column allows ({0}): message parts are JSON of any length, "
        "so their column needs a JSON or TEXT type, not VARCHAR(255)",
    ),
    (
        re.compile(r"Incorrect string value"),
        "MySQL refused a character outside its 3-byte utf8: connect with charset=utf8mb4 and "
        "keep the tables in utf8mb4",
    ),
    (
        re.compile(r"\\u0000 cannot be converted to text|unsupported Unicode escape sequence"),
        "Postgres's JSONB type cannot hold the character U+0000 (NUL) that a message contains: "
        "use the JSON type (it keeps the text as sent), or TEXT",
    ),
    (
        re.compile(
            r"UNIQUE constraint failed: ([\w.]+)|duplicate key value violates unique constraint \"(\w+)\"|Duplicate entry .* for key '([\w.]+)'"
        ),
        "a row repeated a value that must be unique ({0})",
    ),
    (
        re.compile(r"database is locked"),
        "SQLite stayed locked past its busy timeout: a transaction left open, or a connection "
        "shared between threads?",
    ),
    (
        _SYNTAX,
        "the database could not parse the SQL: SQL written for another database, or a value "
        "formatted into the SQL string instead of passed as a bound parameter?",
    ),
    (
        re.compile(
            r"Connection refused|could not connect|Can't connect to MySQL|Name or service not known|unable to open database file"
        ),
        "the backend could not open its database: does it read DATABASE_URL from the environment?",
    ),
    (
        re.compile(r"SQLite objects created in a thread can only be used in that same thread"),
        "one sqlite3 connection is shared by the worker threads: open one per request "
        "(or per thread)",
    ),
    (
        re.compile(
            r"QueuePool limit of size \d+ overflow \d+ reached|too many connections|Too many connections",
            re.I,
        ),
        "the database ran out of connections: are connections (or engines) left open per request?",
    ),
]


def exception_line(log: str) -> str | None:
    """The exception that ended the last traceback in `log`, e.g. `KeyError: 'parts'`."""
    start = log.rfind(_TRACEBACK)
    if start < 0:
        return None
    found = None
    for line in log[start:].splitlines()[1:]:
        match = _EXCEPTION.match(line)
        if match and not line.startswith("  File "):
            found = match.group(1).strip()
        elif found and not line.startswith((" ", "|", "[", "(")) and line.strip():
            break  # the next log line: the traceback is over
    return found


def in_words(line: str) -> str | None:
    """What a known database error means, or None."""
    for pattern, meaning in KNOWN:
        match = pattern.search(line)
        if match:
            name = next((g for g in match.groups() if g), "")
            return meaning.format(name)
    return None


def raised(log: str) -> str | None:
    """`X: Y — what it means`: the exception that ended the last traceback in `log`."""
    line = exception_line(log)
    if line is None:
        return None
    words = in_words(line)
    return f"{line[:300]} — {words}" if words else line[:300]


def cause(log: str) -> str | None:
    """`the backend raised X: Y — what it means`, from the log of one request."""
    found = raised(log)
    return f"the backend raised {found}" if found else None


def is_sql_syntax(line: str) -> bool:
    """Whether the database could not parse the statement (the mark of SQL built from strings)."""
    return bool(_SYNTAX.search(line))
