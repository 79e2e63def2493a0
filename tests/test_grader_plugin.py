"""The plugin's contract with check modules: `after=` passes a check's value on, a check whose
dependency did not pass is skipped as blocked (structured `blocked_by`), and an exception that is
not a check failure is the grader's own `error`, never the learner's failure.

A throwaway check module for chapter 1 runs against the passing fixture chapter, as `grader
check` runs the real ones (pytest with the plugin, its terminal output off, a JSON report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mutants import PASSING

from grader import REPO_ROOT

CHECKS = '''
from grader.toolkit.expect import fail
from grader.toolkit.milestone import milestone


@milestone("1.1")
def gives_a_value() -> int:
    """Returns what the next check needs."""
    return 41


@milestone("1.2", after=gives_a_value)
def receives_it(value: int, api) -> None:
    """Gets 1.1's value as its first argument, and fixtures after it."""
    if value != 41:
        fail(f"after= passed {value!r}")
    api.json("GET", "/health")


@milestone("1.3")
def the_grader_breaks() -> None:
    """A bug in a check: not the learner's fault."""
    {}["missing"]


@milestone("1.4", after=the_grader_breaks)
def blocked(value: None) -> None:
    """Never runs: the check it depends on did not pass."""
    raise AssertionError("a blocked check ran")
'''


def _pytest(module: Path, report: Path, tmp_path: Path) -> list[str]:
    """`grader check`'s pytest command for a throwaway check module of chapter 1."""
    cmd = [sys.executable, "-m", "pytest", str(module), "-p", "grader.plugin", "-p", "no:terminal"]
    cmd += ["-p", "no:cacheprovider", f"--rootdir={REPO_ROOT}", f"--target={PASSING}"]
    return [*cmd, f"--grader-json={report}", f"--basetemp={tmp_path / 'work'}"]


def test_after_blocked_and_error(tmp_path: Path) -> None:
    module = tmp_path / "checks_flow.py"
    module.write_text(CHECKS, encoding="utf-8")
    report = tmp_path / "report.json"
    cmd = _pytest(module, report, tmp_path)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    milestones = {m["id"]: m for m in json.loads(report.read_text())["milestones"]}
    statuses = {mid: m["status"] for mid, m in milestones.items()}
    assert statuses == {"1.1": "passed", "1.2": "passed", "1.3": "error", "1.4": "skipped"}, (
        proc.stdout + proc.stderr
    )
    assert proc.returncode == 1
    broke = milestones["1.3"]
    assert broke["rationale"] == "the grader stopped on KeyError: 'missing'"
    assert "KeyError" in broke["traceback"] and "checks_flow.py" in broke["traceback"]
    assert milestones["1.4"]["blocked_by"] == {"milestone": "1.3", "check": "the_grader_breaks"}
    assert (
        milestones["1.4"]["rationale"] == "can't check until 1.3's check the_grader_breaks passes"
    )
    assert milestones["1.2"]["steps"] == [], "a passing check keeps no steps in the report"
    block = proc.stdout[proc.stdout.index("! 1.3") :]
    assert "This is a fault in the grader, not in your code." in block
    assert "why:" not in block.split("– 1.4")[0], "an error is not reported as the learner's fault"
    assert "the grader broke on 1" in proc.stdout


SLOW_SECOND = '''
import os
import time
from pathlib import Path

from grader.toolkit.expect import fail
from grader.toolkit.milestone import milestone


@milestone("1.1")
def passes() -> None:
    """What 1.2 and 1.4 depend on."""


@milestone("1.2")
def fails_at_once() -> None:
    """The first failure."""
    fail("this milestone fails")


@milestone("1.4")
def waits_for_the_reader() -> None:
    """Runs on until the test has read 1.2's failure from the output (or 60 s pass)."""
    go = Path(os.environ["GO_FILE"])
    for _ in range(600):
        if go.exists():
            return
        time.sleep(0.1)
    fail("1.2's line was not printed while this check ran")
'''


def test_each_milestone_is_printed_once_its_checks_ran(tmp_path: Path) -> None:
    """A learner sees the first failure while the later checks still run (a chapter's whole
    run can take many seconds): 1.4 runs on until the test has read 1.2's ✗ line."""
    module = tmp_path / "checks_slow.py"
    module.write_text(SLOW_SECOND, encoding="utf-8")
    go = tmp_path / "go"
    cmd = _pytest(module, tmp_path / "report.json", tmp_path)
    env = {**os.environ, "GO_FILE": str(go)}
    with subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("✗ 1.2"):
                go.touch()
                break
        rest = proc.stdout.read()
        proc.wait(timeout=120)
    assert go.exists(), "".join(seen)
    assert "✓ 1.4" in rest and rest.index("✓ 1.4") < rest.index("milestones checked pass"), rest
    assert seen[0].startswith("Chapter 1 ·"), "the header comes first"


def test_check_modules_stand_alone() -> None:
    """SPEC §5: a check module imports no other check module, and no private API of Streamlit
    or of the grader (names starting with `_`), so each reads as its chapter's spec."""
    import ast

    for path in sorted((REPO_ROOT / "grader" / "checks").glob("ch*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("grader.checks"), (
                    f"{path.name} imports {node.module}"
                )
                for alias in node.names:
                    assert not alias.name.startswith("_"), f"{path.name} imports {alias.name}"
            own = isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not own:
                assert node.attr.startswith("__"), f"{path.name} uses .{node.attr}"
