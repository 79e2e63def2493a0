"""`alembic …`, run as a learner runs it: from the chapter folder, on DATABASE_URL.

From chapter 6 the backend refuses to start on a database that is not at the newest
migration, so every database a check uses is upgraded first (`upgrade_head`); 6.6 also runs
`downgrade` and watches an upgrade that must refuse (`run_alembic`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from grader.toolkit import steps
from grader.toolkit.expect import TODO_IN_TEXT, fail

ALEMBIC_TIMEOUT = 120


def run_alembic(
    chapter_dir: Path, url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`alembic ARGS` in the chapter folder with DATABASE_URL=url; what it did, whatever it was."""
    if not (chapter_dir / "alembic.ini").is_file():
        fail(
            f"{chapter_dir.name} has no alembic.ini: the schema is made by migrations from "
            "chapter 6 on (`alembic upgrade head` in the chapter folder)",
            expected=str(chapter_dir / "alembic.ini"),
            actual="no such file",
        )
    what = " ".join(["alembic", *args])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=chapter_dir,
            env={**os.environ, **(env or {}), "DATABASE_URL": url},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=ALEMBIC_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        steps.record(f"{what} → no end within {ALEMBIC_TIMEOUT} s")
        fail(f"`{what}` did not finish within {ALEMBIC_TIMEOUT} s")
    steps.record(f"{what} → exit {done.returncode}")
    return done


def said(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr).strip()


def alembic(chapter_dir: Path, url: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`alembic ARGS`; fails, in Alembic's own words, unless it succeeds. Returns its output."""
    done = run_alembic(chapter_dir, url, *args, env=env)
    output = said(done)
    if done.returncode != 0:
        what = " ".join(["alembic", *args])
        lines = output.splitlines() or ["(no output)"]
        todo = TODO_IN_TEXT.search(output)
        fail(
            f"`{what}` reached {todo.group(0)}, which is not done yet"
            if todo
            else f"`{what}` failed: {lines[-1]}",
            expected="exit status 0",
            actual="\n".join(lines[-12:]),
        )
    return output


def upgrade_head(chapter_dir: Path, url: str, env: dict[str, str] | None = None) -> str:
    return alembic(chapter_dir, url, "upgrade", "head", env=env)
