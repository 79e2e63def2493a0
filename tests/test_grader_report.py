"""The grader's report, end to end: `grader check 1 --target` on small fixture chapters.

The fixture chapters are tests/fixtures/chapters/passing and copies of it with one fault each,
built once per run (tests/conftest.py). Each is graded once per module (a grader run takes a few
seconds) and the tests read that run's exit code, printed report and JSON. Under
`pytest -n 2 --dist loadgroup` each fixture's tests stay on one worker, so the runs are shared
and the two workers split them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT, cli, progress
from grader.manifest import Chapter, Manifest, Milestone, load
from grader.report import MilestoneResult, Report, Status, render

STARTER = REPO_ROOT / "chapters" / "01-baseline"

TOP_LEVEL_KEYS = {
    "format_version",
    "chapter",
    "slug",
    "target",
    "db",
    "passed",
    "counts",
    "milestones",
}
MILESTONE_KEYS = {
    "id",
    "title",
    "kind",
    "status",
    "rationale",
    "expected",
    "actual",
    "nudge",
    "lesson",
    "todos",
    "log",
    "steps",
    "blocked_by",
    "traceback",
    "docs",
    "depends",
}
SKIP_11 = "can't check until 1.1 passes"
SKIP_12 = "can't check until 1.2 passes"

# fixture -> (exit code, {milestone: status}, {milestone: text its rationale contains})
EXPECTED: dict[str, tuple[int, dict[str, str], dict[str, str]]] = {
    "passing": (
        0,
        {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "passed"},
        {},
    ),
    "failing": (
        1,
        {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "failed"},
        {"1.4": 'GET /ping must answer {"ping": "pong"}'},
    ),
    "crashing": (
        1,
        {"1.1": "failed", "1.2": "skipped", "1.3": "skipped", "1.4": "skipped"},
        {
            "1.1": "the backend exited with code 1 before answering GET /health",
            "1.2": SKIP_11,
            "1.3": SKIP_12,
            "1.4": SKIP_11,
        },
    ),
    "broken-health": (
        1,
        {"1.1": "failed", "1.2": "skipped", "1.3": "skipped", "1.4": "skipped"},
        {"1.1": "GET /health answered 500", "1.2": SKIP_11, "1.3": SKIP_12, "1.4": SKIP_11},
    ),
    "chat-crash": (
        1,
        {"1.1": "passed", "1.2": "failed", "1.3": "skipped", "1.4": "passed"},
        {
            "1.2": "POST /chat answered 500 instead of 200: the backend raised KeyError: 'reply'",
            "1.3": SKIP_12,
        },
    ),
}


def fixture_params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xdist_group(f"grader-{name}")) for name in EXPECTED
    ]


@dataclass
class GraderRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    def milestone(self, mid: str) -> dict[str, Any]:
        assert self.report is not None, f"no JSON report; stdout:\n{self.stdout}"
        return next(m for m in self.report["milestones"] if m["id"] == mid)

    def block(self, mid: str) -> str:
        """The printed lines of one milestone: its ✓/✗/– line and the details under it."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line[2:].startswith(f"{mid} "))
        end = start + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        return "\n".join(lines[start:end])


def grader(
    *args: str, code: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """`python -m grader ARGS` from the repository root (or `python -c CODE ARGS`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    cmd = [sys.executable, *(["-c", code] if code else ["-m", "grader"]), *args]
    return subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _run(args: list[str], out: Path, code: str | None = None) -> GraderRun:
    """Run the grader once per test session, even across xdist workers (any `--dist` mode).

    xdist workers share the parent of their temporary folders: the first worker to ask for a
    run makes it under a lock and saves it there; the others wait for the lock and read it.
    """
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "run.json"
    with (out / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not saved.exists():
            proc = grader(*args, "--json", str(out / "report.json"), code=code)
            run = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
            saved.write_text(json.dumps(run), encoding="utf-8")
    run = json.loads(saved.read_text(encoding="utf-8"))
    report_path = out / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
    return GraderRun(run["returncode"], run["stdout"], run["stderr"], report)


@pytest.fixture(scope="module")
def graded(shared_tmp: Path, fixture_chapter: Callable[[str], Path]) -> Callable[[str], GraderRun]:
    """`graded(name)`: `grader check 1 --target` the fixture chapter `name`, run once."""
    runs: dict[str, GraderRun] = {}

    def get(name: str) -> GraderRun:
        if name not in runs:
            out = shared_tmp / f"grader-report-{name}"
            runs[name] = _run(["check", "1", "--target", str(fixture_chapter(name))], out)
        return runs[name]

    return get


# `grader check 1` on the real starter, with progress written to a temporary folder instead of
# the developer's `.grader/` (the default target records progress; --target does not).
CHECK_WITH_TMP_PROGRESS = """
import pathlib, sys
import grader.progress as p
p.PROGRESS_DIR = pathlib.Path(sys.argv[1])
p.PROGRESS_FILE = p.PROGRESS_DIR / "progress.json"
from grader.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def starter_run(shared_tmp: Path) -> tuple[GraderRun, Path]:
    out = shared_tmp / "grader-report-starter"
    progress_dir = out / "grader-progress"
    run = _run([str(progress_dir), "check", "1"], out, CHECK_WITH_TMP_PROGRESS)
    return run, progress_dir


def _shown(target: Path) -> str:
    """How the report names a target: relative to the repository when it is inside it
    (tests/fixtures/chapters/passing), else in full (the fixture chapters built in /tmp)."""
    return str(target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target)


def _line_number(path: Path, pattern: str) -> int:
    """The number of the first line of `path` that matches `pattern`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if re.search(pattern, line))


# --- every fixture -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_params())
def test_exit_code_and_statuses(graded: Callable[[str], GraderRun], name: str) -> None:
    run = graded(name)
    code, statuses, rationales = EXPECTED[name]
    assert run.returncode == code, run.stdout + run.stderr
    assert run.report is not None
    assert {m["id"]: m["status"] for m in run.report["milestones"]} == statuses
    for mid, text in rationales.items():
        assert text in run.milestone(mid)["rationale"]
    assert run.report["passed"] is (code == 0)


@pytest.mark.parametrize("name", fixture_params())
def test_json_shape(
    graded: Callable[[str], GraderRun], fixture_chapter: Callable[[str], Path], name: str
) -> None:
    report = graded(name).report
    assert report is not None
    assert set(report) == TOP_LEVEL_KEYS
    assert report["format_version"] == 2
    assert report["chapter"] == 1
    assert report["slug"] == "01-baseline"
    assert report["target"] == str(fixture_chapter(name))
    assert report["db"] == "sqlite"
    statuses = [m["status"] for m in report["milestones"]]
    assert report["counts"] == {s: statuses.count(s) for s in set(statuses)}
    assert [m["id"] for m in report["milestones"]] == ["1.1", "1.2", "1.3", "1.4"]
    manifest = load()
    for m in report["milestones"]:
        assert set(m) == MILESTONE_KEYS, m["id"]
        declared = manifest.milestone(m["id"])
        assert m["title"] == declared.title
        assert m["kind"] == "exercise"
        assert m["nudge"] == declared.nudge and m["nudge"]
        assert isinstance(m["steps"], list)
        assert m["traceback"] == "", "the grader itself must not break on a fixture chapter"
        assert m["depends"] == list(declared.depends)
        assert m["docs"] == manifest.docs_link(declared.docs)
        assert m["docs"].startswith("http")
        assert isinstance(m["rationale"], str)
        assert isinstance(m["log"], str)
        assert isinstance(m["todos"], list)
        if m["status"] == "passed":
            assert m["rationale"] == "" and m["log"] == ""
    json.dumps(report)  # round-trips


@pytest.mark.parametrize("name", fixture_params())
def test_printed_report(
    graded: Callable[[str], GraderRun], fixture_chapter: Callable[[str], Path], name: str
) -> None:
    run = graded(name)
    _, statuses, _ = EXPECTED[name]
    lines = run.stdout.splitlines()
    assert lines[0] == "Chapter 1 · Baseline: FastAPI + Streamlit"
    assert lines[1] == f"  checking {_shown(fixture_chapter(name))} on sqlite"
    assert "\033[" not in run.stdout, "no colour codes when stdout is not a terminal"
    for mid, status in statuses.items():
        title = run.milestone(mid)["title"]
        head = run.block(mid).splitlines()[0]
        assert head.startswith(f"{Status(status).symbol} {mid} {title}"), head
        if status == "skipped":
            assert head.endswith(f" — {run.milestone(mid)['rationale']}")
        if status == "failed":
            block = run.block(mid)
            for label in ("why:", "nudge:", "more:", "docs:"):
                assert re.search(rf"^    {label}\s+\S", block, re.M), f"{label} in\n{block}"
            assert run.milestone(mid)["docs"] in block
    passed = list(statuses.values()).count("passed")
    assert f"{passed} of 4 milestones pass." in lines
    first_failed = next((mid for mid, s in statuses.items() if s == "failed"), None)
    if first_failed:
        assert any(line.startswith(f"Next: fix {first_failed} (") for line in lines)
        assert f"`grader hint {first_failed}`" in run.stdout
    else:
        assert "Chapter 1 is done. `grader status` shows what comes next." in lines


@pytest.mark.parametrize("name", fixture_params())
def test_no_pytest_noise(graded: Callable[[str], GraderRun], name: str) -> None:
    """The learner sees the report, not pytest's session header, progress or tracebacks.

    A traceback may appear only inside a backend-log section (`      | ` lines): the
    backend's own, which is what the learner has to read.
    """
    run = graded(name)
    for line in run.stdout.splitlines():
        if line.startswith("      | "):
            continue
        assert "Traceback" not in line, line
        assert not re.match(r'\s*File ".*", line \d+', line), line
        assert not line.startswith(("=====", "_____", "E   ", "FAILED ", "ERROR ")), line
        for noise in ("test session starts", "short test summary", "passed in", "rootdir:"):
            assert noise not in line, line
        assert "grader/checks/ch01.py" not in line, line
    assert "Traceback" not in run.stderr, run.stderr


# --- one fixture each ------------------------------------------------------------------------


@pytest.mark.xdist_group("grader-passing")
def test_passing_report_has_no_details(graded: Callable[[str], GraderRun]) -> None:
    run = graded("passing")
    for label in ("why:", "expected:", "actual:", "nudge:", "what the grader did", "backend log"):
        assert label not in run.stdout
    assert run.report is not None
    assert run.report["counts"] == {"passed": 4}


@pytest.mark.xdist_group("grader-failing")
def test_failing_shows_expected_and_actual(graded: Callable[[str], GraderRun]) -> None:
    run = graded("failing")
    m = run.milestone("1.4")
    assert m["expected"] == {"ping": "pong"}
    assert m["actual"] == {"ping": "ping"}
    block = run.block("1.4")
    assert '    expected: {"ping": "pong"}' in block
    assert '    actual:   {"ping": "ping"}' in block
    assert f"    nudge:    {m['nudge']}" in block
    assert "`grader hint 1.4` shows a code-level hint" in block
    assert load().milestone("1.4").hint not in run.stdout, "the code-level hint is the answer"
    # The step log: what the grader did in this check, and nothing of the checks before it.
    assert m["steps"][-1].endswith("GET /ping → 200"), m["steps"]
    assert "    what the grader did:" in block
    assert not any("/chat" in step for step in m["steps"])
    assert "    docs:     http://127.0.0.1:8001/chapters/01-baseline/#exercise-ping" in block
    # The backend's own log lines of the failing check, not the whole session's.
    assert "backend log (last lines):" in block
    assert '"GET /ping HTTP/1.1" 200' in block
    assert '"POST /chat' not in block
    # The fixture has no TODO 1.4 comment, so there is nothing to point at.
    assert m["todos"] == [] and "todo:" not in block
    assert run.report is not None
    assert run.report["counts"] == {"passed": 3, "failed": 1}


@pytest.mark.xdist_group("grader-crashing")
def test_crashing_shows_the_backends_traceback(
    graded: Callable[[str], GraderRun], fixture_chapter: Callable[[str], Path]
) -> None:
    run = graded("crashing")
    main_py = fixture_chapter("crashing") / "backend" / "main.py"
    crash = _line_number(main_py, r"^app = FastAPI\(title=TITLE\)")
    m = run.milestone("1.1")
    assert "Traceback (most recent call last)" in m["log"]
    assert "NameError: name 'TITLE' is not defined" in m["log"]
    block = run.block("1.1")
    assert "    why:      the backend exited with code 1 before answering GET /health" in block
    assert "    backend log (last lines):" in block
    log_lines = [line for line in block.splitlines() if line.startswith("      | ")]
    # The last lines of the traceback: the learner's file and line, then the error.
    assert log_lines[-1] == "      | NameError: name 'TITLE' is not defined"
    assert f'      |   File "{main_py}", line {crash}, in <module>' in log_lines
    assert any("app = FastAPI(title=TITLE)" in line for line in log_lines)
    for mid in ("1.2", "1.3", "1.4"):
        assert run.milestone(mid)["log"] == ""
        assert len(run.block(mid).splitlines()) == 1, "a skipped milestone is one line"


@pytest.mark.xdist_group("grader-chat-crash")
def test_a_500_is_reported_with_its_cause(graded: Callable[[str], GraderRun]) -> None:
    """The exception's last line from the backend log is the `why`; the next check, on the
    same backend, is not hidden behind "could not reach the backend"."""
    run = graded("chat-crash")
    m = run.milestone("1.2")
    assert "KeyError: 'reply'" in m["rationale"]
    assert any(step.endswith("→ 500") and "POST /chat" in step for step in m["steps"])
    assert m["log"].endswith("KeyError: 'reply'")
    assert run.milestone("1.4")["status"] == "passed"


@pytest.mark.xdist_group("grader-broken-health")
def test_broken_health_skips_the_dependents(graded: Callable[[str], GraderRun]) -> None:
    run = graded("broken-health")
    m = run.milestone("1.1")
    assert "500" in m["rationale"]
    assert "NameError: name 'STATUS' is not defined" in m["log"]
    assert "`grader hint 1.1`" in run.stdout
    assert run.block("1.2") == f"– 1.2 POST /chat answers through the assistant — {SKIP_11}"
    assert run.block("1.4").endswith(f" — {SKIP_11}")
    assert run.block("1.3").endswith(f" — {SKIP_12}")
    assert run.report is not None
    assert run.report["counts"] == {"failed": 1, "skipped": 3}


# --- the real starter --------------------------------------------------------------------------


@pytest.mark.xdist_group("grader-starter")
def test_the_real_starter_fails_its_todo(starter_run: tuple[GraderRun, Path]) -> None:
    run, _ = starter_run
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.report is not None
    assert run.report["target"] == str(STARTER)
    statuses = {m["id"]: m["status"] for m in run.report["milestones"]}
    assert statuses == {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "failed"}
    m = run.milestone("1.4")
    line = _line_number(STARTER / "backend" / "main.py", r"#\s*TODO 1\.4\b")
    assert len(m["todos"]) == 1
    assert m["todos"][0].startswith(f"TODO 1.4 in backend/main.py:{line}")
    assert "TODO 1.4" in m["rationale"] and "not done yet" in m["rationale"]
    assert "501" in str(m["actual"])
    assert f"    todo:     TODO 1.4 in backend/main.py:{line}" in run.block("1.4")
    assert "  checking chapters/01-baseline on sqlite" in run.stdout


@pytest.mark.xdist_group("grader-starter")
def test_checking_the_default_target_records_progress(
    starter_run: tuple[GraderRun, Path],
) -> None:
    _, progress_dir = starter_run
    data = json.loads((progress_dir / "progress.json").read_text(encoding="utf-8"))
    assert data["milestones"] == {
        "1.1": "passed",
        "1.2": "passed",
        "1.3": "passed",
        "1.4": "failed",
    }
    assert data["last_check"]["chapter"] == 1


# --- the small commands ------------------------------------------------------------------------


def test_hint_prints_the_milestones_hint() -> None:
    proc = grader("hint", "1.4")
    assert proc.returncode == 0, proc.stderr
    m = load().milestone("1.4")
    assert proc.stdout.splitlines()[0] == f"1.4 {m.title}"
    assert f"hint: {m.hint}" in proc.stdout
    assert "docs: http://127.0.0.1:8001/chapters/01-baseline/#exercise-ping" in proc.stdout


@pytest.mark.parametrize("bad", ["9.9", "1.99", "ping"])
def test_hint_for_an_unknown_milestone(bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["hint", bad])
    assert f"no milestone {bad!r}" in str(exc.value.code)


def test_check_one_milestone_and_those_it_depends_on(
    tmp_path: Path, fixture_chapter: Callable[[str], Path]
) -> None:
    """`--milestone 1.3` grades 1.3 and the milestones it needs (1.2, and 1.1 under it); 1.4,
    which fails in this fixture, is not run, so the check passes."""
    report = tmp_path / "report.json"
    target = str(fixture_chapter("failing"))
    proc = grader("check", "1", "--target", target, "--milestone", "1.3", "--json", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = {m["id"]: m["status"] for m in json.loads(report.read_text())["milestones"]}
    assert statuses == {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "not_run"}
    assert re.search(r"^· 1\.4 .* — not run$", proc.stdout, re.MULTILINE), proc.stdout
    assert "3 of the 3 milestones checked pass." in proc.stdout
    assert "Only some milestones were checked: `grader check 1` checks them all." in proc.stdout


@pytest.mark.parametrize("bad", ["1.9", "2.1"])
def test_check_an_unknown_milestone(bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "1", "--solution", "--milestone", bad])
    assert f"chapter 1 has no milestone {bad}; its milestones are 1.1, 1.2" in str(exc.value.code)


def test_check_a_folder_that_is_not_a_chapter(tmp_path: Path) -> None:
    proc = grader("check", "1", "--target", str(tmp_path))
    assert proc.returncode != 0
    assert "has no backend/main.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def _keep_progress_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the grader's progress at `folder`, never the developer's `.grader/`."""
    monkeypatch.setattr(progress, "PROGRESS_DIR", folder)
    monkeypatch.setattr(progress, "PROGRESS_FILE", folder / "progress.json")
    return folder


@pytest.fixture()
def tmp_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _keep_progress_in(tmp_path / ".grader", monkeypatch)


def test_status_with_no_progress(tmp_progress: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^→ 1\. Baseline: FastAPI \+ Streamlit\s+░{10} 0/4", out, re.M), out
    assert "Next: chapter 1." in out
    assert "`grader check 1`" in out
    assert not tmp_progress.exists(), "status only reads"


def test_status_shows_progress(tmp_progress: Path, capsys: pytest.CaptureFixture[str]) -> None:
    states = {"1.1": "passed", "1.2": "passed", "1.3": "passed", "1.4": "failed"}
    progress.record(
        {"chapter": 1, "milestones": [{"id": k, "status": v} for k, v in states.items()]}
    )
    assert cli.main([]) == 0  # plain `grader` is `grader status`
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if " 1. Baseline" in line)
    assert line.startswith("→")
    assert "3/4" in line and "✓1.1" in line and "✗1.4" in line
    progress.record({"chapter": 1, "milestones": [{"id": "1.4", "status": "passed"}]})
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  1\. Baseline.*4/4", out, re.M), out
    assert re.search(r"^→ 2\. ", out, re.M), out


@pytest.fixture()
def tmp_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway copy of chapter 1 for `grader reset`, so the real chapters/ is never touched."""
    from grader import starters

    root = tmp_path / "repo"
    starters.copy_tree(REPO_ROOT / "solutions" / "01-baseline", root / "solutions" / "01-baseline")
    starters.copy_tree(STARTER, root / "chapters" / "01-baseline")
    _keep_progress_in(root / ".grader", monkeypatch)
    monkeypatch.setattr(cli, "REPO_ROOT", root)
    real_write = starters.write
    monkeypatch.setattr(
        starters, "write", lambda manifest, only=None: real_write(manifest, root, only)
    )
    return root


def test_reset_restores_the_starter_and_keeps_a_backup(
    tmp_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chapter = tmp_repo / "chapters" / "01-baseline"
    main_py = chapter / "backend" / "main.py"
    mine = main_py.read_text(encoding="utf-8").replace(
        'raise NotImplementedError("TODO 1.4")', 'return {"ping": "pong"}'
    )
    main_py.write_text(mine, encoding="utf-8")
    (chapter / "backend" / "notes.py").write_text("# my own file\n", encoding="utf-8")
    assert cli.main(["reset", "1", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "chapters/01-baseline is back to its starter." in out
    assert main_py.read_bytes() == (STARTER / "backend" / "main.py").read_bytes()
    assert not (chapter / "backend" / "notes.py").exists()
    (backup,) = (tmp_repo / ".grader" / "backups").iterdir()
    assert backup.name.startswith("01-baseline-")
    assert f"Backed up your code to {backup.relative_to(tmp_repo)}" in out
    assert (backup / "backend" / "main.py").read_text(encoding="utf-8") == mine
    assert (backup / "backend" / "notes.py").exists()


def test_reset_asks_first(
    tmp_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main_py = tmp_repo / "chapters" / "01-baseline" / "backend" / "main.py"
    main_py.write_text("# mine\n", encoding="utf-8")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)  # pytest's stdin is no terminal
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["reset", "1"]) == 1
    assert "Nothing changed." in capsys.readouterr().out
    assert main_py.read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_repo / ".grader").exists()


# --- demos and the report's rendering (no processes) -------------------------------------------


def _milestone(mid: str, kind: str = "exercise", **kw: Any) -> Milestone:
    fields = {"title": f"milestone {mid}", "hint": f"hint for {mid}", "docs": "c.md#m"}
    if kind == "demo":
        fields["lesson"] = f"lesson of {mid}"
    return Milestone(id=mid, kind=kind, **{**fields, **kw})


def _report(*results: MilestoneResult) -> Report:
    chapter = Chapter(2, "02-x", "Two", "c.md", ("sqlite",), tuple(r.milestone for r in results))
    return Report(
        chapter=chapter,
        target=REPO_ROOT / "chapters" / "02-x",
        db="sqlite",
        milestones=list(results),
    )


def _result(milestone: Milestone, status: str, **kw: Any) -> MilestoneResult:
    manifest = Manifest(1, "http://docs.test", ())
    r = MilestoneResult.pending(milestone, manifest)
    r.status = Status(status)
    for key, value in kw.items():
        setattr(r, key, value)
    return r


def test_a_failing_demo_is_an_expected_failure() -> None:
    r = _result(_milestone("2.4", "demo"), "failed", rationale="the history is gone")
    r.finish()
    assert r.status == "expected_failure"
    report = _report(_result(_milestone("2.1"), "passed"), r)
    for m in report.milestones:
        m.finish()
    assert not report.has_failures
    text = render(report)
    assert "◆ 2.4 demo: milestone 2.4" in text
    assert "    as expected, this fails: the history is gone" in text
    assert "    lesson:   lesson of 2.4" in text
    assert "why:" not in text
    assert "1 of 1 milestones pass; 1 demo(s) failed as expected." in text
    assert "Chapter 2 is done." in text
    d = report.as_dict()
    assert d["passed"] is True
    assert d["counts"] == {"passed": 1, "expected_failure": 1}
    assert d["milestones"][1]["kind"] == "demo"
    assert d["milestones"][1]["lesson"] == "lesson of 2.4"


def test_a_passing_demo_is_an_unexpected_pass() -> None:
    r = _result(_milestone("2.5", "demo"), "passed")
    r.finish()
    assert r.status == "unexpected_pass"
    assert "should fail here" in r.rationale
    report = _report(r)
    assert report.has_failures
    text = render(report)
    assert "✗ 2.5 demo: milestone 2.5" in text
    assert "    why:      this demo shows a limit" in text
    assert "    more:     `grader hint 2.5` shows a code-level hint" in text
    assert "hint for 2.5" not in text
    assert "    docs:     http://docs.test/c/#m" in text
    assert report.as_dict()["passed"] is False


@pytest.mark.parametrize("status", ["skipped", "not_run"])
def test_a_demo_that_did_not_run_stays_as_it_is(status: str) -> None:
    r = _result(_milestone("2.4", "demo"), status, rationale="can't check until 2.2 passes")
    r.finish()
    assert r.status == status


def test_a_milestone_without_checks_fails() -> None:
    r = _result(_milestone("2.1"), "pending")
    r.finish()
    assert r.status == "error", "a milestone no check covers is the grader's fault"
    assert "no check ran" in r.rationale


def test_finish_points_at_the_todo(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "store.py").write_text(
        "import x\n\n\ndef f():\n    # TODO 2.1: store it.\n    raise NotImplementedError\n"
    )
    r = _result(_milestone("2.1", todos=("2.1",)), "failed", rationale="no")
    r.finish(tmp_path)
    assert r.todo_locations == ["TODO 2.1 in backend/store.py:5 — store it."]
    passed = _result(_milestone("2.1", todos=("2.1",)), "passed")
    passed.finish(tmp_path)
    assert passed.todo_locations == []


def test_render_long_values_and_colour() -> None:
    long = "\n".join(f"line {i}" for i in range(30))
    r = _result(_milestone("2.1"), "failed", rationale="bad", expected=long, actual=[1, "é"])
    report = _report(r, _result(_milestone("2.2"), "not_run"))
    text = render(report)
    assert "    expected: line 0" in text
    assert "… (18 more lines)" in text
    assert '    actual:   [1, "é"]' in text
    assert "· 2.2 milestone 2.2 — not run" in text
    assert "Next: fix 2.1 (milestone 2.1)" in text
    painted = render(report, color=True)
    assert "\033[31m✗\033[0m 2.1" in painted
