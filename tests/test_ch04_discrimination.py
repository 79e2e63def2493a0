"""Chapter 4's checks catch the two classic database mistakes, and say which one it is.

Each fixture under tests/fixtures/wrong/ is the chapter 4 solution with one fault:

- `ch04-engine-per-request`: `Database.__enter__` calls create_engine itself, so every request
  gets a new pool and its connections linger; milestone 4.3 must fail and say so;
- `ch04-string-sql`: the store pastes values into SQL text (with home-made quote doubling that
  gets everyday text through); milestone 4.4 must fail and name bound parameters.

The checks run as a learner runs them: `python -m grader check 4 --target DIR --json F`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT, dbservers

WRONG = REPO_ROOT / "tests" / "fixtures" / "wrong"
IN_CI = bool(os.environ.get("CI"))


def grade(fixture: str, db: str, tmp_path: Path) -> dict[str, Any]:
    if (
        db != "sqlite"
        and not dbservers.binaries_available(db)
        and not os.environ.get(dbservers.ENV_URLS[db])
    ):
        message = f"no {db} server: {dbservers.how_to_get(db)}"
        if IN_CI:
            pytest.fail(f"CI must run the database tests; {message}")
        pytest.skip(message)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "grader", "check", "4", "--target", str(WRONG / fixture)]
    cmd += ["--db", db, "--json", str(report)]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600
    )
    assert proc.returncode == 1, f"the check must fail (exit 1):\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(report.read_text(encoding="utf-8"))
    return {m["id"]: m for m in data["milestones"]}


@pytest.mark.parametrize(
    "db",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.databases),
        pytest.param("mysql", marks=pytest.mark.databases),
    ],
)
def test_an_engine_per_request_fails_the_pool_milestone(db: str, tmp_path: Path):
    results = grade("ch04-engine-per-request", db, tmp_path)
    # Everything else about the fixture is right: only the pool milestone may fail.
    assert results["4.1"]["status"] == "passed", results["4.1"]["rationale"]
    assert results["4.2"]["status"] == "passed", results["4.2"]["rationale"]
    assert results["4.4"]["status"] == "passed", results["4.4"]["rationale"]
    pool = results["4.3"]
    assert pool["status"] == "failed"
    assert "new engine" in pool["rationale"] and "per request" in pool["rationale"]
    assert "one engine per process" in pool["rationale"]
    # The failure points at the TODO where the engine must come from.
    assert any("backend/db.py" in t for t in pool["todos"])


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.databases)])
def test_sql_built_from_strings_fails_the_hostile_strings_milestone(db: str, tmp_path: Path):
    results = grade("ch04-string-sql", db, tmp_path)
    for mid in ("4.1", "4.2", "4.3"):
        assert results[mid]["status"] == "passed", results[mid]["rationale"]
    hostile = results["4.4"]
    assert hostile["status"] == "failed"
    assert "assembled from strings" in hostile["rationale"]
    assert "bound parameter" in hostile["rationale"]
    assert "POST /chat with the prompt" in hostile["rationale"]
