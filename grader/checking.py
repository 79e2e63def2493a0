"""Run one chapter's checks in a pytest subprocess and read back the JSON report."""

from __future__ import annotations

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
_NO_PLUGIN_AUTOLOAD = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

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


@dataclass
class CheckRun:
    returncode: int
    output: str
    report: dict[str, Any] | None


def check_module(chapter: Chapter) -> Path:
    return CHECKS_DIR / f"ch{chapter.number:02d}.py"


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
        cmd = [
            sys.executable,
            "-c",
            _PYTEST_MAIN,
            str(check_module(chapter)),
            "-p",
            "no:terminal",
            "-p",
            "no:cacheprovider",
            f"--rootdir={REPO_ROOT}",
            f"--target={target}",
            f"--db={db}",
            f"--grader-json={report_path}",
            f"--basetemp={Path(tmp) / 'work'}",
            *(extra or []),
        ]
        if require_all:
            cmd.append("--require-all")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **_NO_PLUGIN_AUTOLOAD}
        proc = _run_pytest(cmd, env, capture, db)
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            report = None
        output = (proc.stdout or "") + (proc.stderr or "") if capture else ""
        return CheckRun(proc.returncode, output, report)


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
