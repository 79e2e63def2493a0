"""`grader dev verify`'s output: live (Rich) on a terminal, plain lines without control codes
anywhere else. The checks themselves are faked: `run_checks` returns a report at once."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from grader import verify as verify_module
from grader.checking import CheckRun
from grader.manifest import Chapter, Manifest, Milestone

ANSI = re.compile(r"\x1b[\[\]()#;?]*[0-9A-Za-z;]*")

EXERCISE = Milestone("1.1", "the exercise", "exercise", "hint", "x.md", todos=("1.1",))
DEMO = Milestone("1.2", "the demo", "demo", "hint", "x.md", lesson="why")
CHAPTER = Chapter(1, "01-fake", "Fake", "x.md", ("sqlite", "postgres"), (EXERCISE, DEMO))
MANIFEST = Manifest(1, "http://localhost", (CHAPTER,))


def _result(mid: str, status: str, todos: list[str] | None = None) -> dict[str, Any]:
    return {"id": mid, "status": status, "blocked_by": [], "rationale": "r", "todos": todos or []}


def _fake_run_checks(broken: str | None = None):
    """Solutions pass the exercise and fail the demo; starters fail the exercise on its TODO.
    The run on database `broken` (if any) has its solution fail the exercise."""

    def run_checks(chapter: Chapter, target: Path, db: str = "sqlite", **_: Any) -> CheckRun:
        if target.parent.name == "solutions":
            status = "failed" if db == broken else "passed"
            results = [_result("1.1", status), _result("1.2", "expected_failure")]
            return CheckRun(
                int(status == "failed"), "1.1 failed [because] :smile:\n", {"milestones": results}
            )
        results = [_result("1.1", "failed", ["TODO 1.1"]), _result("1.2", "expected_failure")]
        return CheckRun(1, "", {"milestones": results})

    return run_checks


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(verify_module.starters, "check", lambda manifest: [])
    monkeypatch.delenv("CI", raising=False)

    def install(broken: str | None = None) -> None:
        monkeypatch.setattr(verify_module, "run_checks", _fake_run_checks(broken))

    return install


def test_not_a_terminal_prints_plain_lines(fake, capsys: pytest.CaptureFixture[str]) -> None:
    fake()
    assert verify_module.verify(MANIFEST) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    lines = [re.sub(r"\(\d+\.\d s\)", "(T s)", line) for line in out.splitlines()]
    assert lines == [
        "✓ workbook.toml: 1 chapters",
        "✓ chapters/ is in sync with solutions/",
        "✓ chapter 1 solution on sqlite   (T s)",
        "✓ chapter 1 starter  on sqlite   (T s)",
        "✓ chapter 1 solution on postgres (T s)",
        "✓ chapter 1 starter  on postgres (T s)",
        "",
        "✓ verify: 4 runs, all as designed",
    ]


def test_not_a_terminal_failure_keeps_exit_code_and_report(
    fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake(broken="postgres")
    assert verify_module.verify(MANIFEST, jobs=1) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "✗ chapter 1 solution on postgres" in out
    assert "    1.1 is failed, expected passed: r" in out
    assert "    1.1 failed [because] :smile:" in out  # printed as is: no markup, no emoji
    assert out.rstrip().endswith("✗ verify: 1 of 4 runs have problems")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_shows_live_progress_then_the_same_lines(
    fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake(broken="postgres")
    tty = _Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setenv("TERM", "xterm-256color")
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    assert verify_module.verify(MANIFEST) == 1
    raw = tty.getvalue()
    assert "\x1b[" in raw  # Rich drew (and erased) the live rows
    text = ANSI.sub("", raw)
    assert "chapter 1 solution on postgres" in text
    assert "1.1 failed [because] :smile:" in text
    assert text.rstrip().endswith("✗ verify: 1 of 4 runs have problems")


def test_terminal_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Tty())
    monkeypatch.setenv("TERM", "xterm")
    assert verify_module._on_terminal()
    monkeypatch.setenv("TERM", "dumb")
    assert not verify_module._on_terminal()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setenv("TERM", "xterm")
    assert not verify_module._on_terminal()
