"""Fixtures shared by the grader's self-tests: the fixture chapters of tests/fixtures/chapters/.

`passing/` is the one chapter kept in the repository. Every other fixture chapter is a copy of it
with one fault, an `Edit` of its backend (tests/mutants.py), built once per test session.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mutants import CHAPTER_FAULTS, PASSING, derive
from procwatch import gone_soon

from grader.toolkit.forkserver import ForkServer


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder this run's xdist workers share (its own basetemp without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def fixture_chapter(shared_tmp: Path) -> Callable[[str], Path]:
    """`fixture_chapter(name)`: the folder of fixture chapter `name`, absolute.

    `passing` is tests/fixtures/chapters/passing; the others are copies of it with their edit
    in `CHAPTER_FAULTS`, built once per run: the first xdist worker to ask builds one under a
    lock, the others wait for the lock and use that folder, so every worker grades one path.
    """
    parent = shared_tmp / "fixture-chapters"
    parent.mkdir(exist_ok=True)

    def get(name: str) -> Path:
        if name == "passing":
            return PASSING
        target = parent / name
        with (parent / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.exists():
                partial = parent / f"{name}.partial"  # a failed build leaves no `target`
                shutil.rmtree(partial, ignore_errors=True)
                derive(PASSING, partial, [CHAPTER_FAULTS[name]], name).rename(target)
        return target

    return get


@pytest.fixture(scope="module")
def fork_server() -> Iterator[ForkServer]:
    """A fork server of the module's own, closed (and proved gone) after its tests."""
    server = ForkServer.start()
    server.wait_ready()
    yield server
    server.close()
    assert gone_soon(server.pid), "the fork server outlived close()"
