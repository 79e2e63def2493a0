#!/usr/bin/env python3
"""Set up the workbook's virtual environment on first use, then run a task in it.

    python3 bootstrap.py run     # start the current chapter's app (backend :8000, frontend :8501)
    python3 bootstrap.py test    # the whole test suite, as CI runs it

Needs only Python 3.11+. The first run creates .venv/ and installs the dependencies with uv
(about ten times faster than pip); later runs reinstall only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def _sh(*cmd: str | Path, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (bootstrap runs on any python3)
        sys.exit(f"Make It Scale needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("Creating .venv/ …", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing dependencies (first run only) …", flush=True)
    if not (BIN / "uv").exists():
        _sh(BIN / "python", "-m", "pip", "install", "--quiet", "uv")
    _sh(BIN / "uv", "pip", "install", "--quiet", "--python", BIN / "python", "-e", ".[dev]")
    STAMP.write_text(wanted)


def run_tests(extra: list[str]) -> int:
    """ruff, the starters, `grader dev verify`, then the repository's own tests."""
    steps = [
        [BIN / "ruff", "check", "."],
        [BIN / "ruff", "format", "--check", "."],
        [BIN / "grader", "dev", "verify"],
        [BIN / "python", "-m", "pytest", "-n", "2", "--dist", "loadgroup", *extra],
    ]
    for step in steps:
        print(
            f"\n$ {' '.join(str(s.name) if isinstance(s, Path) else s for s in step)}", flush=True
        )
        code = subprocess.run([str(s) for s in step], cwd=ROOT).returncode
        if code != 0:
            print(f"\nFAILED: {' '.join(str(s) for s in step)} exited {code}", flush=True)
            return code
    return 0


def main(argv: list[str]) -> int:
    task, extra = (argv[0], argv[1:]) if argv else ("run", [])
    if task not in ("run", "test", "setup"):
        print(__doc__)
        return 2
    ensure_venv()
    if task == "setup":
        return 0
    if task == "test":
        return run_tests(extra)
    # Become `grader run` (same PID): a signal meant for this command reaches the process that
    # stops the backend and the page, even when it is not sent to the whole process group.
    os.chdir(ROOT)
    os.execv(BIN / "grader", [str(BIN / "grader"), "run", *extra])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
