"""Run one chapter's checks in a pytest subprocess and read back the JSON report."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.manifest import Chapter
from grader.toolkit import forkserver

CHECKS_DIR = REPO_ROOT / "grader" / "checks"


# The checks need no installed pytest plugin (the grader's own comes from grader/checks/
# conftest.py), and the installed ones are slow to load: hypothesis', schemathesis' and Locust's
# (dev and load-test tools) cost pytest 2.4 s at startup, anyio's a sixth of a second. So none
# is loaded, whatever gets installed next.
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


# `python -m pytest`, minus the interpreter's teardown of Streamlit, SQLAlchemy and the rest
# (a sixth of a second): once pytest has returned, every report is written and every process it
# started is stopped; the exit status is pytest's.
_PYTEST_MAIN = (
    "import os, sys, pytest\n"
    "code = int(pytest.main())\n"
    "sys.stdout.flush()\n"
    "sys.stderr.flush()\n"
    "os._exit(code)\n"
)
# The same, for a run prepared ahead (`PreparedRun`): import what the run will need, wait for
# "go" on stdin (an end of stdin instead means the run is not needed), then run. Ctrl-C while
# it waits ends it at once: nothing has run, and an ordinary interpreter exit could hang on
# the import a check module started in a thread of its own (grader.toolkit.preload).
_PREPARED_PYTEST_MAIN = (
    "import importlib, os, sys\n"
    "try:\n"
    "    import pytest, grader.plugin\n"
    "    for name in os.environ.get('GRADER_WARM_IMPORTS', '').split():\n"
    "        importlib.import_module(name)\n"
    "    go = sys.stdin.readline()\n"
    "except KeyboardInterrupt:\n"
    "    os._exit(130)\n"
    "if go != 'go\\n':\n"
    "    os._exit(0)\n" + _PYTEST_MAIN.split("\n", 1)[1]
)


@dataclass
class CheckRun:
    returncode: int
    output: str
    report: dict[str, Any] | None


def check_module(chapter: Chapter) -> Path:
    return CHECKS_DIR / f"ch{chapter.number:02d}.py"


def _pytest_args(
    chapter: Chapter,
    target: Path,
    db: str,
    report_path: Path,
    workdir: Path,
    require_all: bool = False,
    extra: list[str] | None = None,
) -> list[str]:
    args = [
        str(check_module(chapter)),
        "-p",
        "no:terminal",
        "-p",
        "no:cacheprovider",
        f"--rootdir={REPO_ROOT}",
        f"--target={target}",
        f"--db={db}",
        f"--grader-json={report_path}",
        f"--basetemp={workdir}",
        *(extra or []),
    ]
    return [*args, "--require-all"] if require_all else args


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_checks(
    chapter: Chapter,
    target: Path,
    db: str = "sqlite",
    json_path: Path | None = None,
    require_all: bool = False,
    capture: bool = False,
    extra: list[str] | None = None,
) -> CheckRun:
    """`capture=False` streams the report to the terminal as it is printed."""
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp:
        report_path = json_path or Path(tmp) / "report.json"
        args = _pytest_args(
            chapter, target, db, report_path, Path(tmp) / "work", require_all, extra
        )
        cmd = [sys.executable, "-c", _PYTEST_MAIN, *args]
        proc = _run_pytest(cmd, _env(), capture, db)
        output = (proc.stdout or "") + (proc.stderr or "") if capture else ""
        return CheckRun(proc.returncode, output, _read_report(report_path))


class PreparedRun:
    """A check run started ahead of time, for `grader watch`: the next run, waiting for a save.

    Its pytest process imports what every run needs (pytest, the grader's plugin, the chapter's
    check module and what it preloads, Streamlit's testing API among them) and its fork server
    preloads the backends' libraries, then both wait. `run()` lets it go, so a re-check after a
    save starts where a cold one would be a second in. Nothing of the learner's code is loaded
    ahead: the backends import it when they start, after the save.
    """

    def __init__(self, chapter: Chapter, target: Path, db: str = "sqlite") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="grader-")
        self._report = Path(self._tmp.name) / "report.json"
        args = _pytest_args(chapter, target, db, self._report, Path(self._tmp.name) / "work")
        module = f"grader.checks.{check_module(chapter).stem}"
        self._server = forkserver.start_detached(also=forkserver.drivers_for(db))
        env = {**_env(), "GRADER_WARM_IMPORTS": module}
        if self._server is not None:
            env = {**env, **self._server.env()}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PREPARED_PYTEST_MAIN, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            text=True,
            pass_fds=(self._server.fd,) if self._server is not None else (),
        )
        if self._server is not None:
            self._server.release()

    def run(self) -> CheckRun:
        """Let the prepared run go; its report streams to the terminal."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write("go\n")
            self._proc.stdin.close()
            returncode = self._proc.wait()
        except BaseException:  # Ctrl-C: stop it, as subprocess.run does
            self._proc.kill()
            raise
        finally:
            report = _read_report(self._report)
            self.discard()
        return CheckRun(returncode, "", report)

    def discard(self) -> None:
        """Stop a run that will not be needed (end of stdin: it exits without running)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._server is not None:
            self._server.close()
            self._server = None
        self._tmp.cleanup()


def _run_pytest(
    cmd: list[str], env: dict[str, str], capture: bool, db: str = "sqlite"
) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd)`, with a fork server started first and handed to pytest.

    The server preloads the backends' imports while pytest starts and collects, so the first
    backend boots at once. It is closed (and every backend it still has is stopped) once
    pytest has exited, whatever happened to pytest.
    """
    server = forkserver.start_detached(also=forkserver.drivers_for(db))
    if server is not None:
        env = {**env, **server.env()}
    try:
        with subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            pass_fds=(server.fd,) if server is not None else (),
        ) as proc:
            if server is not None:
                server.release()  # pytest has its copy; the server sees the end through it
            try:
                out, err = proc.communicate()
            except BaseException:  # Ctrl-C: as subprocess.run does
                proc.kill()
                raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    finally:
        if server is not None:
            server.close()
