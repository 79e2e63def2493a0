"""`grader load`: a real load run on real instances, its figures, its audit and its exit status.

The chapter 5 solution must come out whole (exit 0); chapter 4's, whose turns on one thread do
not take turns, must be caught interleaving on a server database (exit 1). `--url` loads a
backend that is already running and reads its threads back through the API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mutants import require_database

from grader import REPO_ROOT, cli
from grader.toolkit.balancer import nginx_binary
from grader.toolkit.procs import Backend, start_all, stop_all

needs_nginx = pytest.mark.skipif(
    nginx_binary() is None and not os.environ.get("CI"),
    reason="needs Debian's nginx (apt-get install nginx)",
)


def grader_load(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grader", "load", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_nginx
def test_the_solution_comes_out_whole(tmp_path: Path) -> None:
    report = tmp_path / "load.json"
    args = ["5", "--solution", "--users", "8", "--seconds", "2", "--instances", "2"]
    proc = grader_load(*args, "--shared-threads", "3", "--json", str(report))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "2 instances behind nginx on SQLite" in out, out
    assert "throughput" in out and "p95" in out and "errors: none" in out, out
    assert "no integrity faults" in out, out
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["audit"]["ok"] is True
    assert data["audit"]["threads"] == 3
    assert data["result"]["turns"] == data["audit"]["stored_turns"] > 0
    assert data["result"]["buckets"], "no per-second figures for the notebook"


@pytest.mark.databases
@needs_nginx
def test_chapter_4_is_caught_interleaving() -> None:
    """Chapter 4 on Postgres through two instances, several users per thread: the audit names
    the turns that ran at once, and the command exits 1."""
    require_database("postgres")
    args = ["4", "--solution", "--users", "12", "--seconds", "2", "--instances", "2"]
    proc = grader_load(*args, "--db", "postgres", "--shared-threads", "2")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"audited 2 threads: .* \d+ faults", out), out
    assert "stale (a reply that did not see every earlier turn)" in out, out


def test_url_loads_a_running_backend(tmp_path: Path) -> None:
    """`--url`: no instance started by the grader; the threads are read back through the API."""
    backend = Backend(
        REPO_ROOT / "solutions" / "05-scale-out",
        tmp_path / "backend",
        env={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'messages.db'}",
            "ASSISTANT_PROVIDER": "offline",
        },
    )
    start_all([backend])
    try:
        proc = grader_load("5", "--url", backend.url, "--users", "4", "--seconds", "1.5")
    finally:
        stop_all([backend])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"the deployment at {backend.url}" in proc.stdout, proc.stdout
    assert "no integrity faults" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--users", "0"], "--users must be 1 or more"),
        (["--instances", "0"], "--instances must be 1 or more"),
        (["--seconds", "0"], "--seconds must be more than 0"),
        (["--shared-threads", "-1"], "--shared-threads must be 0"),
    ],
)
def test_a_bad_option_is_refused_in_words(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["load", "5", "--solution", *args]) == 2
    assert says in capsys.readouterr().out


def test_several_instances_without_nginx_say_how_to_get_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader import loadrun

    monkeypatch.setattr(loadrun, "nginx_binary", lambda: None)
    assert cli.main(["load", "5", "--solution", "--instances", "2"]) == 2
    assert "apt-get install nginx" in capsys.readouterr().out
