"""Chapter 4's checks catch the two classic database mistakes, and say which one it is.

Each mutant is the chapter 4 solution with one fault (see tests/mutants.py):

- `engine-per-request`: `Database.__enter__` calls make_engine itself, so every request gets a
  new pool and its connections linger; milestone 4.3 must fail and say so;
- `string-sql`: the store pastes values into SQL text, with home-made quote doubling that gets
  everyday text through (tests/fixtures/wrong/ch04-string-sql.py); milestone 4.4 must fail
  and name bound parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import Edit, Mutant, Overlay, assert_caught, grade

CHAPTER, SLUG = 4, "04-choosing-a-database"

ENGINE_PER_REQUEST = Mutant(
    "engine-per-request",
    (
        Edit(
            "backend/db.py",
            "self._connection: Connection = get_engine().connect()",
            "self._connection: Connection = make_engine(DATABASE_URL).connect()",
        ),
    ),
    fails="4.3",
    says=r"new engine .*per request.* Make one engine per process",
)
STRING_SQL = Mutant(
    "string-sql",
    (
        Overlay(
            "backend/store.py",
            "ch04-string-sql.py",
            replaces=("append_messages", "load_history", "delete_thread"),
        ),
    ),
    fails="4.4",
    says=r"POST /chat with the prompt .*SQL assembled from strings.*bound parameter",
)
SQLITE, POSTGRES, MYSQL = (
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.databases),
    pytest.param("mysql", marks=pytest.mark.databases),
)


@pytest.mark.parametrize("db", [SQLITE, POSTGRES, MYSQL])
def test_an_engine_per_request_fails_the_pool_milestone(db: str, tmp_path: Path):
    mutant = ENGINE_PER_REQUEST
    graded = grade(CHAPTER, mutant.build(SLUG, tmp_path), tmp_path, db)
    assert_caught(graded, CHAPTER, mutant)
    # The failure points at the TODO where the engine must come from.
    assert any("backend/db.py" in t for t in graded.milestones["4.3"]["todos"])


@pytest.mark.parametrize("db", [SQLITE, POSTGRES])
def test_sql_built_from_strings_fails_the_hostile_strings_milestone(db: str, tmp_path: Path):
    mutant = STRING_SQL
    assert_caught(grade(CHAPTER, mutant.build(SLUG, tmp_path), tmp_path, db), CHAPTER, mutant)
