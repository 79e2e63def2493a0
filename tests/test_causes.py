"""`grader.toolkit.causes`: a backend's traceback becomes one line, and known database errors
become words. The logs are what uvicorn prints for an exception in a route."""

from __future__ import annotations

import pytest

from grader.toolkit.causes import cause, exception_line

CHAINED = """INFO:     127.0.0.1:5000 - "POST /chat HTTP/1.1" 500 Internal Server Error
ERROR:    Exception in ASGI application
Traceback (most recent call last):
  File "store.py", line 3, in save
    cursor.execute(sql)
sqlite3.IntegrityError: NOT NULL constraint failed: messages.parts

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "store.py", line 9, in save
    raise
sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) NOT NULL constraint failed: messages.parts
[SQL: INSERT INTO messages (thread_id, role, parts) VALUES (?, ?, ?)]
[parameters: ('a', 'user', None)]
(Background on this error at: https://sqlalche.me/e/20/gkpj)
INFO:     127.0.0.1:5002 - "GET /health HTTP/1.1" 200 OK
"""

GROUPED = """Traceback (most recent call last):
  + Exception Group Traceback (most recent call last):
  |   File "anyio/_backends/_asyncio.py", line 1, in run
  | ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "main.py", line 12, in chat
    |     return turn[0]["reply"]
    | KeyError: 'reply'
    +------------------------------------
"""


def test_the_last_traceback_names_the_outer_exception() -> None:
    assert exception_line(CHAINED) == (
        "sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) NOT NULL constraint failed: "
        "messages.parts"
    )
    assert cause(CHAINED) == (
        "the backend raised " + exception_line(CHAINED) + " — a row was inserted without a "
        "value for messages.parts, a NOT NULL column"
    )


def test_an_exception_group_names_the_inner_exception() -> None:
    assert exception_line(GROUPED) == "KeyError: 'reply'"


def test_no_traceback_no_cause() -> None:
    assert cause('INFO:     127.0.0.1:5000 - "POST /chat HTTP/1.1" 503\n') is None


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("sqlite3.OperationalError: no such table: messages", "the table messages does not exist"),
        (
            'psycopg.errors.UndefinedTable: relation "messages" does not exist',
            "the table messages does not exist",
        ),
        (
            "pymysql.err.DataError: (1406, \"Data too long for column 'parts' at row 1\")",
            "not VARCHAR(255)",
        ),
        (
            "pymysql.err.DataError: (1366, \"Incorrect string value: '\\\\xF0\\\\x9F\\\\x90\\\\x89' "
            "for column 'parts'\")",
            "charset=utf8mb4",
        ),
        (
            "psycopg.errors.UntranslatableCharacter: unsupported Unicode escape sequence",
            "JSONB type cannot hold the character U+0000",
        ),
        (
            'psycopg.errors.SyntaxError: syntax error at or near "s"',
            "formatted into the SQL string",
        ),
        (
            "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached",
            "ran out of connections",
        ),
    ],
)
def test_known_database_errors_in_words(line: str, words: str) -> None:
    log = f'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\n{line}\n'
    found = cause(log)
    assert found is not None and words in found, found
