"""Chapter 4's checks catch the classic database mistakes, say which one it is, and accept right
solutions written differently.

Each mutant is the chapter 4 solution with one fault (see tests/mutants.py); it must fail its
milestone with a `why` naming the fault, on every database it is run on, every milestone
before it passing (the later ones are not graded). The right variants (named bound parameters
in SQL text, a native Uuid column) must pass everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import SOLUTIONS, Edit, Mutant, Overlay, caught, derive, grade, runs

CHAPTER, SLUG = 4, "04-choosing-a-database"
DB, STORE, TABLES = "backend/db.py", "backend/store.py", "backend/tables.py"
SQLITE, POSTGRES, MYSQL = (
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.databases),
    pytest.param("mysql", marks=pytest.mark.databases),
)
PER_ENGINE = "self._begin = engine.begin()"
NEW_ENGINE = "self._begin = make_engine(DATABASE_URL).begin()"
WHERE_THREAD = "        .where(messages.c.thread_id == str(thread_id))\n"

MUTANTS = {
    "engine-per-request": Mutant(
        "engine-per-request",
        (Edit(DB, PER_ENGINE, NEW_ENGINE),),
        fails="4.3",
        says=r"new engine .*per request.* Make one engine per process",
    ),
    "engine-per-request-disposed": Mutant(  # leaves no connection behind to count
        "engine-per-request-disposed",
        (
            Edit(DB, PER_ENGINE, NEW_ENGINE),
            Edit(
                DB,
                "        self._begin.__exit__(*exc_info)\n",
                "        self._begin.__exit__(*exc_info)\n        self._connection.engine.dispose()\n",
            ),
        ),
        fails="4.3",
        says=r"new engine .*per request.* Make one engine per process",
    ),
    "engine-per-thread": Mutant(
        "engine-per-thread",
        (
            Edit(DB, PER_ENGINE, "self._begin = thread_engine().begin()"),
            Edit(
                DB,
                "engine = make_engine(DATABASE_URL)\n",
                "engine = make_engine(DATABASE_URL)\n_per_thread = threading.local()\n\n\n"
                "def thread_engine() -> Engine:\n"
                "    if not hasattr(_per_thread, 'engine'):\n"
                "        _per_thread.engine = make_engine(DATABASE_URL)\n"
                "    return _per_thread.engine\n",
            ),
        ),
        fails="4.3",
        says=r"An engine per request or per thread\? Make one engine per process",
    ),
    "string-sql": Mutant(
        "string-sql",
        (
            Overlay(
                STORE,
                "wrong/ch04-string-sql.py",
                replaces=("append_messages", "load_history", "delete_thread"),
            ),
        ),
        fails="4.4",
        says=r"POST /chat with the prompt .*SQL assembled from strings.*bound parameter",
    ),
    "ignores-database-url": Mutant(
        "ignores-database-url",
        (
            Edit(
                "backend/settings.py",
                'DATABASE_URL = database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)',
                "DATABASE_URL = database_url(DEFAULT_DATABASE_URL)",
            ),
        ),
        fails="4.1",
        says=r"the backend wrote to \./messages\.db, its default, not to the database in "
        r"DATABASE_URL",
    ),
    "history-not-filtered-by-thread": Mutant(
        "history-not-filtered-by-thread",
        (Edit(STORE, WHERE_THREAD, ""),),
        fails="4.1",
        says=r"holds another thread's message .*: the history must be filtered by thread_id",
    ),
    "jsonb-parts": Mutant(  # Postgres's JSONB cannot hold U+0000, which a prompt may contain
        "jsonb-parts",
        (
            Edit(
                TABLES,
                'Column("parts", JSON,',
                'Column("parts", JSON().with_variant(JSONB(), "postgresql"),',
            ),
            Edit(
                TABLES,
                "from sqlalchemy import ",
                "from sqlalchemy.dialects.postgresql import JSONB\nfrom sqlalchemy import ",
            ),
        ),
        fails="4.4",
        says=r"JSONB type cannot hold the character U\+0000",
    ),
}
RUNS = [
    ("engine-per-request", SQLITE),
    ("engine-per-request", POSTGRES),
    ("engine-per-request", MYSQL),
    ("engine-per-request-disposed", SQLITE),
    ("engine-per-request-disposed", POSTGRES),
    ("engine-per-thread", SQLITE),
    ("engine-per-thread", POSTGRES),
    ("string-sql", SQLITE),
    ("string-sql", POSTGRES),
    ("ignores-database-url", SQLITE),
    ("ignores-database-url", POSTGRES),
    ("history-not-filtered-by-thread", SQLITE),
    ("jsonb-parts", POSTGRES),
]


@pytest.mark.parametrize(("mutant", "db"), runs(MUTANTS, RUNS))
def test_the_fault_fails_its_milestone(mutant: Mutant, db: str, tmp_path: Path) -> None:
    graded = caught(CHAPTER, SLUG, mutant, tmp_path, db)
    if mutant.fails == "4.3":  # the failure points at the TODO where the engine must come from
        assert any("backend/db.py" in t for t in graded.milestones["4.3"]["todos"])


NATIVE_UUID = (
    Edit(
        TABLES,
        'Column("thread_id", String(36), nullable=False)',
        'Column("thread_id", Uuid, nullable=False)',
    ),
    Edit(TABLES, "from sqlalchemy import ", "from sqlalchemy import Uuid\nfrom sqlalchemy import "),
    Edit(STORE, '{"thread_id": str(thread_id), "role"', '{"thread_id": thread_id, "role"'),
    Edit(STORE, WHERE_THREAD, "        .where(messages.c.thread_id == thread_id)\n"),
    Edit(
        STORE,
        "delete(messages).where(messages.c.thread_id == str(thread_id))",
        "delete(messages).where(messages.c.thread_id == thread_id)",
    ),
)
TEXT_SQL = (
    Overlay(
        STORE,
        "right/ch04-text-sql.py",
        replaces=("append_messages", "load_history", "delete_thread"),
    ),
)


@pytest.mark.parametrize("db", [SQLITE, POSTGRES, MYSQL])
@pytest.mark.parametrize(
    ("name", "changes"),
    [pytest.param(n, c, id=n) for n, c in (("native-uuid", NATIVE_UUID), ("text-sql", TEXT_SQL))],
)
def test_a_right_variant_passes(name: str, changes: tuple, db: str, tmp_path: Path) -> None:
    target = derive(SOLUTIONS / SLUG, tmp_path / name, changes, name)
    graded = grade(CHAPTER, target, tmp_path, db)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
