#!/usr/bin/env python3
"""Set up the workbook's virtual environment on first use, then run a task in it.

    python3 bootstrap.py run     # start the current chapter's app (backend :8000, frontend :8501)
    python3 bootstrap.py test    # the whole test suite, as CI runs it
    python3 bootstrap.py setup   # only create or update .venv/
    python3 bootstrap.py lock    # after editing pyproject.toml's dependencies: update uv.lock

Needs only Python 3.11+. The first run creates .venv/ and installs exactly the versions that
uv.lock records (the project itself editable, with its `dev` extra) with uv, in seconds; later
runs reinstall only when pyproject.toml or uv.lock changes. `lock` passes its options to
`uv lock`, e.g. `python3 bootstrap.py lock --upgrade-package rich`; commit uv.lock with
pyproject.toml, because CI installs what uv.lock says and fails when it is out of date.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"
LOCK = ROOT / "uv.lock"
# How .venv/ is installed from the lock; part of the stamp, so changing it reinstalls.
SYNC = ("sync", "--locked", "--extra", "dev")

STALE = """\
✗ uv.lock is out of date: pyproject.toml's dependencies changed since it was written.
  Update it with   python3 bootstrap.py lock
  then commit uv.lock together with pyproject.toml (CI installs exactly what uv.lock says).
  (`.venv/bin/uv lock --check` shows what differs.)"""


def _sh(*cmd: str | Path, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def fingerprint(root: Path) -> str:
    """What an install of .venv/ depends on: pyproject.toml, uv.lock and the install command."""
    lock = root / "uv.lock"
    digest = hashlib.sha256()
    for part in (
        " ".join(SYNC).encode(),
        (root / "pyproject.toml").read_bytes(),
        lock.read_bytes() if lock.exists() else b"(no uv.lock)",
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def needs_install(stamp: Path, wanted: str) -> bool:
    """True unless the last successful install recorded this very fingerprint."""
    try:
        return stamp.read_text(encoding="utf-8").strip() != wanted
    except OSError:
        return True


def locked_version(lock: Path, name: str) -> str | None:
    """The version of package `name` that uv.lock pins (None when it does not list it)."""
    import tomllib  # after the version check: Python 3.11+

    with lock.open("rb") as f:
        packages = tomllib.load(f).get("package", [])
    return next((p.get("version") for p in packages if p.get("name") == name), None)


def lock_is_stale(uv: Path, root: Path, python: Path) -> bool:
    """Does uv.lock no longer satisfy pyproject.toml? Offline, and milliseconds when it does."""
    proc = subprocess.run(
        [str(uv), "lock", "--check", "--offline", "--quiet", "--python", str(python)],
        cwd=root,
        env=_uv_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return proc.returncode != 0


def _uv_env() -> dict[str, str]:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)}
    env.pop("VIRTUAL_ENV", None)  # another active venv is not ours: no warning about it
    return env


def _uv_version(uv: Path) -> str | None:
    if not uv.exists():
        return None
    try:
        out = subprocess.run([str(uv), "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    words = out.split()  # "uv 0.13.9 (hash date)"
    return words[1] if len(words) > 1 else None


def _check_python() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (bootstrap runs on any python3)
        sys.exit(f"Make It Scale needs Python 3.11 or newer; this is {sys.version.split()[0]}.")


def _create_venv() -> None:
    if not (BIN / "python").exists():
        print("Creating .venv/ …", flush=True)
        venv.create(VENV, with_pip=True)


def ensure_uv() -> Path:
    """uv in .venv/, at the version uv.lock pins (pip installs it the first time)."""
    want = locked_version(LOCK, "uv") if LOCK.exists() else None
    uv = BIN / "uv"
    have = _uv_version(uv)
    if have is None:
        python = str(BIN / "python")
        if subprocess.run([python, "-c", "import pip"], capture_output=True).returncode:
            _sh(python, "-m", "ensurepip", "--default-pip")  # `uv sync` removed pip
        spec = f"uv=={want}" if want else "uv"
        _sh(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec)
    elif want and have != want:
        _sh(uv, "pip", "install", "--quiet", "--python", BIN / "python", f"uv=={want}")
    return uv


def ensure_venv() -> None:
    _check_python()
    wanted = fingerprint(ROOT)
    if not needs_install(STAMP, wanted):
        return
    if not LOCK.exists():
        sys.exit("✗ uv.lock is missing: write it with `python3 bootstrap.py lock`, then commit it.")
    _create_venv()
    uv = ensure_uv()
    if lock_is_stale(uv, ROOT, BIN / "python"):
        sys.exit(STALE)
    print("Installing the versions locked in uv.lock …", flush=True)
    start = time.monotonic()
    STAMP.unlink(missing_ok=True)  # an install that stops half-way is redone next time
    # Exact: packages uv.lock does not list are removed, so .venv/ holds what CI tested.
    _sh(uv, *SYNC, "--quiet", "--python", BIN / "python", env=_uv_env())
    STAMP.write_text(wanted, encoding="utf-8")
    print(f"Installed in {time.monotonic() - start:.1f} s.", flush=True)


def lock(extra: list[str]) -> int:
    """`uv lock` (keeps every pin it can; `--upgrade` to move them), then install the result."""
    _check_python()
    _create_venv()
    uv = ensure_uv()
    print(f"$ uv lock {' '.join(extra)}".rstrip(), flush=True)
    cmd = [str(uv), "lock", "--python", str(BIN / "python"), *extra]
    code = subprocess.run(cmd, cwd=ROOT, env=_uv_env()).returncode
    if code != 0:
        return code
    ensure_venv()
    print("uv.lock is up to date with pyproject.toml: commit them together.", flush=True)
    return 0


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
    if task not in ("run", "test", "setup", "lock"):
        print(__doc__)
        return 2
    if task == "lock":
        return lock(extra)
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
