"""Wrong implementations as small, named changes to a solution, graded as a learner grades.

A discrimination test needs code that is right in every way but one. Copying the solution once
per fault would duplicate it and drift from it unnoticed, so a `Mutant` names its fault as changes
to `solutions/<slug>/`, applied to a copy in a temporary folder (`derive` does the same for any
folder: tests/conftest.py derives the grader's broken fixture chapters from a correct one):

- `Edit(file, old, new)` replaces `old`, which must occur exactly once in the solution's file;
- `Overlay(file, fixture, replaces)` appends a file of whole functions from `tests/fixtures/`
  (`wrong/…` for a fault, `right/…` for a right variant) to the solution's file. A module runs top to bottom, so the appended
  `def`s replace the solution's functions of the same names for every caller that looks them up
  on the module (`store.load_history(...)`).

Either way, a solution that changed under a mutant stops the test with a message saying which
mutant no longer applies, instead of silently grading something else.

`grade` runs `python -m grader check N --target DIR --json F` in a subprocess and returns the
report's milestones by id; `assert_caught` checks that exactly the right milestone failed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT
from grader.dbservers.binaries import binaries_available
from grader.dbservers.errors import how_to_get
from grader.dbservers.server import Server
from grader.dbservers.start import start
from grader.dbservers.urls import ENV_URLS
from grader.manifest import load

SOLUTIONS = REPO_ROOT / "solutions"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
RIGHT = FIXTURES / "right"
IN_CI = bool(os.environ.get("CI"))


@dataclass(frozen=True)
class Edit:
    """Replace `old`, which must occur exactly once in `file`, with `new`."""

    file: str
    old: str
    new: str

    def apply(self, root: Path, mutant: str) -> None:
        path = root / self.file
        text = path.read_text(encoding="utf-8")
        count = text.count(self.old)
        assert count == 1, (
            f"mutant {mutant!r}: {self.old!r} occurs {count} times in {self.file} of the "
            "solution (or fixture) it edits, not once; update the mutant to its current code"
        )
        path.write_text(text.replace(self.old, self.new), encoding="utf-8")


def _functions(source: str) -> set[str]:
    return {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


@dataclass(frozen=True)
class Overlay:
    """Append `tests/fixtures/<fixture>` to `file`; its functions `replaces` win."""

    file: str
    fixture: str
    replaces: tuple[str, ...]

    def apply(self, root: Path, mutant: str) -> None:
        path = root / self.file
        text = path.read_text(encoding="utf-8")
        overlay = (FIXTURES / self.fixture).read_text(encoding="utf-8")
        for what, source in (("the solution's " + self.file, text), (self.fixture, overlay)):
            missing = set(self.replaces) - _functions(source)
            assert not missing, (
                f"mutant {mutant!r}: {what} defines no top-level function {sorted(missing)}; "
                "update the mutant to the solution's current code"
            )
        path.write_text(f"{text}\n\n# --- overlay: {self.fixture} ---\n{overlay}", encoding="utf-8")


# The grader's own fixture chapters (tests/fixtures/chapters/README.md): `passing/`, a correct
# chapter 1, and copies of it with one fault each, built by tests/conftest.py's `fixture_chapter`.
PASSING = REPO_ROOT / "tests" / "fixtures" / "chapters" / "passing"
MAIN = "backend/main.py"
CHAPTER_FAULTS = {
    "failing": Edit(MAIN, 'return {"ping": "pong"}', 'return {"ping": "ping"}  # should be pong'),
    "broken-health": Edit(
        MAIN, 'return {"status": "ok"}', 'return {"status": STATUS}  # STATUS is never defined'
    ),
    "crashing": Edit(
        MAIN, "app = FastAPI()", "app = FastAPI(title=TITLE)  # TITLE is never defined"
    ),
    "chat-crash": Edit(
        MAIN, '    return {"reply": "\\n\\n".join(texts)}', '    return {"reply": turn[0]["reply"]}'
    ),
    "hangs": Edit(
        MAIN,
        "app = FastAPI()",
        "import time\n\n"
        "while True:  # a startup that waits forever (a lock, a server that never answers)\n"
        "    time.sleep(1)\n\n"
        "app = FastAPI()",
    ),
}


def derive(source: Path, target: Path, changes: Iterable[Edit | Overlay], mutant: str) -> Path:
    """Copy the folder `source` to `target` and apply `changes`, named `mutant` in any error."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    for change in changes:
        change.apply(target, mutant)
    return target


@dataclass(frozen=True)
class Mutant:
    """A solution with one fault: milestone `fails` must fail with a `why` matching `says`."""

    name: str
    changes: tuple[Edit | Overlay, ...]
    fails: str
    says: str

    def build(self, slug: str, parent: Path) -> Path:
        """`solutions/<slug>/` with this mutant's changes, in `parent/<name>`."""
        return derive(SOLUTIONS / slug, parent / self.name, self.changes, self.name)

    def param(self) -> Any:
        """This mutant as a pytest parameter, named after it in the test id."""
        return pytest.param(self, id=self.name)


def require_database(db: str) -> None:
    """Skip a check on a database server this machine cannot start; in CI, fail instead."""
    if db == "sqlite" or binaries_available(db) or os.environ.get(ENV_URLS[db]):
        return
    message = f"no {db} server: {how_to_get(db)}"
    if IN_CI:
        pytest.fail(f"CI must run the database tests; {message}")
    pytest.skip(message)


@dataclass
class Graded:
    returncode: int
    output: str
    milestones: dict[str, dict[str, Any]]

    @property
    def statuses(self) -> dict[str, str]:
        return {mid: m["status"] for mid, m in self.milestones.items()}

    def why(self, mid: str) -> str:
        return self.milestones[mid]["rationale"]


# Milestones whose checks freeze and restart the database server: a grader run can only do
# that to a server it started itself (one named by GRADER_*_URL may be someone's own).
FREEZE_THE_SERVER = {"5.4"}
# Otherwise the grade runs of one test process share one throwaway server of each kind, named to
# them by GRADER_*_URL, instead of starting and stopping one each: seconds saved per run. It is
# stopped when the process exits (grader.dbservers tracks the servers it starts).
_SHARED: dict[str, Server] = {}


def _database_env(db: str, chapter: int, milestones: list[str]) -> dict[str, str]:
    if db == "sqlite" or os.environ.get(ENV_URLS[db]):
        return {}
    graded = milestones or [m.id for m in load().chapter(chapter).milestones]
    if FREEZE_THE_SERVER.intersection(graded):
        return {}
    if db not in _SHARED:
        _SHARED[db] = start(db)
    return {ENV_URLS[db]: _SHARED[db].admin_url}


def grade(
    chapter: int, target: Path, tmp_path: Path, db: str = "sqlite", milestones: Iterable[str] = ()
) -> Graded:
    """`python -m grader check CHAPTER --target TARGET --db DB --json ...`, as a learner runs it;
    with `milestones`, only those and what they depend on (`--milestone`)."""
    require_database(db)
    milestones = list(milestones)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "grader", "check", str(chapter), "--target", str(target)]
    cmd += ["--db", db, "--json", str(report), *(f"--milestone={m}" for m in milestones)]
    env = {**os.environ, **_database_env(db, chapter, milestones)}
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    output = f"{proc.stdout}\n{proc.stderr}"
    assert report.exists(), f"the grader wrote no JSON report:\n{output}"
    data = json.loads(report.read_text(encoding="utf-8"))
    return Graded(proc.returncode, output, {m["id"]: m for m in data["milestones"]})


def through(chapter: int, mid: str) -> list[str]:
    """The milestones of `chapter` up to `mid`, in order: what a learner working on `mid` meets
    first. Later ones are not graded for a mutant: they depend on `mid` (skipped, a plugin test
    proves it) or check other code than the mutant's fault."""
    ids = [m.id for m in load().chapter(chapter).milestones]
    return ids[: ids.index(mid) + 1]


def needs(chapter: int, mid: str) -> list[str]:
    """`mid` and the milestones it depends on, in order: all a learner must pass before it. For
    chapters whose milestones each start their own backends and databases, grading only these
    keeps a mutant's run short."""
    wanted = load().chapter(chapter).with_dependencies([mid])
    return [m.id for m in load().chapter(chapter).milestones if m.id in wanted]


def assert_caught(
    graded: Graded, chapter: int, mutant: Mutant, graded_ids: list[str] | None = None
) -> None:
    """`mutant.fails` failed for the right reason and every milestone graded before it passed (a
    demo: failed as designed); the others were not graded."""
    graded_ids = graded_ids or through(chapter, mutant.fails)
    demos = {m.id for m in load().chapter(chapter).milestones if m.kind == "demo"}
    want = {
        mid: "not_run"
        if mid not in graded_ids
        else "failed"
        if mid == mutant.fails
        else "expected_failure"
        if mid in demos
        else "passed"
        for mid in graded.milestones
    }
    assert graded.statuses == want, f"{mutant.name}:\n{graded.output}"
    assert graded.returncode == 1, f"{mutant.name}: the check must exit 1\n{graded.output}"
    why = graded.why(mutant.fails)
    assert re.search(mutant.says, why, re.DOTALL), (
        f"{mutant.name}: {mutant.fails} failed, but its why does not name the fault "
        f"(/{mutant.says}/):\n{why}\nexpected: {graded.milestones[mutant.fails]['expected']}"
        f"\nactual: {graded.milestones[mutant.fails]['actual']}"
    )


def caught(
    chapter: int,
    slug: str,
    mutant: Mutant,
    tmp_path: Path,
    db: str = "sqlite",
    only_needs: bool = False,
) -> Graded:
    """Build `mutant` from `solutions/<slug>/`, grade it on `db` through its milestone (with
    `only_needs`, only its milestone and those it depends on), and `assert_caught` it."""
    target = mutant.build(slug, tmp_path)
    ids = needs(chapter, mutant.fails) if only_needs else through(chapter, mutant.fails)
    graded = grade(chapter, target, tmp_path, db, ids)
    assert_caught(graded, chapter, mutant, ids)
    return graded


def runs(mutants: dict[str, Mutant], pairs: Iterable[tuple[str, Any]]) -> list[Any]:
    """`pytest.param(mutant, db)` for each (mutant name, database) pair, with the database's
    marks (a `pytest.param("postgres", marks=...)` keeps its marks), ids `name-db`."""
    params = []
    for name, db in pairs:
        value = db.values[0] if hasattr(db, "values") else db
        marks = getattr(db, "marks", ())
        params.append(pytest.param(mutants[name], value, id=f"{name}-{value}", marks=marks))
    return params
