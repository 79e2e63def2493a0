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

CHECKS_DIR = REPO_ROOT / "grader" / "checks"


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
            "-m",
            "pytest",
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
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
        )
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            report = None
        output = (proc.stdout or "") + (proc.stderr or "") if capture else ""
        return CheckRun(proc.returncode, output, report)
