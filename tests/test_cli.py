"""The `grader` commands, run for real on a throwaway copy of the workbook.

`python -m grader` from the copy's folder imports the copy's `grader` package, whose REPO_ROOT is
that folder: its chapters/, solutions/ and .grader/ are the ones changed, never the real ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT, cli, progress
from grader.manifest import load
from grader.runner import describe_database
from grader.starters import clean_solution, copy_tree, render

ALL_THREE = ("sqlite", "postgres", "mysql")
COPIED = ("grader", "solutions", "chapters", "workbook.toml", "mkdocs.yml", "docs/chapters")


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A copy of the workbook's grader, manifest, solutions, chapters and docs pages."""
    root = tmp_path / "repo"
    for name in COPIED:
        src, dest = REPO_ROOT / name, root / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    return root


def grader(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m grader ARGS` in `root`, without a terminal (stdin is /dev/null)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "grader", *args],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_progress(root: Path, milestones: dict[str, Any]) -> Path:
    path = root / ".grader" / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"milestones": milestones}), encoding="utf-8")
    return path


def finished(*numbers: int, db: str | None = None) -> dict[str, Any]:
    """Every milestone of these chapters done, as `grader check` records it."""
    out: dict[str, Any] = {}
    for number in numbers:
        for m in load().chapter(number).milestones:
            status = "expected_failure" if m.kind == "demo" else "passed"
            out[m.id] = {db: status} if db else status
    return out


def test_the_copy_runs_its_own_grader(repo: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import grader; print(grader.REPO_ROOT)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == str(repo), "the tests below would touch the real repository"


# --- grader reset ----------------------------------------------------------------------------


def test_reset_without_a_terminal_asks_for_yes_and_changes_nothing(repo: Path) -> None:
    main_py = repo / "chapters" / "01-baseline" / "backend" / "main.py"
    main_py.write_text("# mine\n", encoding="utf-8")
    proc = grader(repo, "reset", "1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--yes" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert main_py.read_text(encoding="utf-8") == "# mine\n"
    assert not (repo / ".grader").exists()


def test_reset_says_how_to_restore_and_forgets_the_chapters_progress(repo: Path) -> None:
    main_py = repo / "chapters" / "01-baseline" / "backend" / "main.py"
    mine = main_py.read_text(encoding="utf-8").replace(
        'raise NotImplementedError("TODO 1.4")', 'return {"ping": "pong"}'
    )
    main_py.write_text(mine, encoding="utf-8")
    progress_file = write_progress(repo, {**finished(1), "2.1": "failed"})

    proc = grader(repo, "reset", "1", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'raise NotImplementedError("TODO 1.4")' in main_py.read_text(encoding="utf-8")
    assert json.loads(progress_file.read_text(encoding="utf-8"))["milestones"] == {
        "2.1": "failed"
    }, "chapter 1's marks are gone, chapter 2's stay"
    (line,) = [line for line in proc.stdout.splitlines() if "cp -r" in line]
    command = line.split(": ", 1)[1]
    assert re.fullmatch(
        r"cp -r \.grader/backups/01-baseline-[\d-]+/\. chapters/01-baseline/", command
    ), command

    subprocess.run(command, shell=True, cwd=repo, check=True)
    assert main_py.read_text(encoding="utf-8") == mine, "the printed command restores the code"


# --- grader solution -------------------------------------------------------------------------


def test_solution_of_code_identical_to_it(repo: Path) -> None:
    solution, mine = repo / "solutions" / "01-baseline", repo / "chapters" / "01-baseline"
    for path in solution.rglob("*.py"):
        text = clean_solution(path.read_text(encoding="utf-8"))
        (mine / path.relative_to(solution)).write_text(text, encoding="utf-8")
    proc = grader(repo, "solution", "1", "--force")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "The solution is in solutions/01-baseline/. Your code is the same as the solution."
    )


def test_solution_of_the_starter_shows_the_diff(repo: Path) -> None:
    proc = grader(repo, "solution", "1", "--force")
    assert "Differences from your code:" in proc.stdout
    assert '-    raise NotImplementedError("TODO 1.4")' in proc.stdout
    assert "same as the solution" not in proc.stdout


def test_the_solution_of_a_chapter_on_three_databases_opens_after_all_three(repo: Path) -> None:
    write_progress(repo, finished(4, db="sqlite"))
    proc = grader(repo, "solution", "4")
    assert proc.returncode == 1
    assert "passes on sqlite, postgres, mysql" in proc.stdout
    write_progress(repo, {mid: dict.fromkeys(ALL_THREE, "passed") for mid in finished(4)})
    proc = grader(repo, "solution", "4")
    assert proc.returncode == 0, proc.stdout
    assert "The solution is in solutions/04-choosing-a-database/." in proc.stdout


# --- grader status and the progress file -----------------------------------------------------


def _line(out: str, chapter: int) -> str:
    return next(line for line in out.splitlines() if re.match(rf"^[→ ] {chapter}\. ", line))


def test_status_shows_each_database_and_is_not_done_on_sqlite_alone(repo: Path) -> None:
    write_progress(repo, {**finished(1, 2, 3), **finished(4, db="sqlite")})
    proc = grader(repo, "status")
    assert proc.returncode == 0, proc.stderr
    line = _line(proc.stdout, 4)
    assert line.startswith("→ 4.")
    assert line.endswith("sqlite ✓  postgres ·  mysql ·"), line
    assert "4/12" in line, "each milestone counts once per database"
    assert "Every chapter is done" not in proc.stdout
    assert "`grader check 4 --db postgres`" in proc.stdout
    assert "passes on sqlite" in proc.stdout


def test_status_every_chapter_done_only_when_done_on_every_database(repo: Path) -> None:
    everything = finished(1, 2, 3)
    for chapter in load().chapters[3:]:
        if len(chapter.databases) > 1:  # a result per database
            done = dict.fromkeys(chapter.databases, "passed")
            everything.update({mid: done for mid in finished(chapter.number)})
        else:
            everything.update(finished(chapter.number))
    write_progress(repo, everything)
    proc = grader(repo, "status")
    assert "Every chapter is done. Well played." in proc.stdout
    assert _line(proc.stdout, 4).endswith("sqlite ✓  postgres ✓  mysql ✓")

    everything["4.3"] = {"sqlite": "passed", "postgres": "error", "mysql": "passed"}
    write_progress(repo, everything)
    proc = grader(repo, "status")
    assert "Every chapter is done" not in proc.stdout
    line = _line(proc.stdout, 4)
    assert "!4.3" in line and line.endswith("sqlite ✓  postgres !  mysql ✓"), line


def test_status_reads_the_old_flat_progress_file(repo: Path) -> None:
    # Before results were kept per database: one status per milestone, whatever the database.
    write_progress(repo, {**finished(1, 2, 3), **finished(4), "1.4": "error"})
    proc = grader(repo, "status")
    assert proc.returncode == 0, proc.stderr
    assert "!1.4" in _line(proc.stdout, 1)
    assert _line(proc.stdout, 4).endswith("sqlite ✓  postgres ·  mysql ·")
    assert "Every chapter is done" not in proc.stdout


def test_record_keeps_one_result_per_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_DIR", tmp_path)
    monkeypatch.setattr(progress, "PROGRESS_FILE", tmp_path / "progress.json")
    chapter = load().chapter(4)
    (tmp_path / "progress.json").write_text('{"milestones": {"4.1": "passed"}}')

    def report(db: str, status: str) -> dict[str, Any]:
        return {"chapter": 4, "db": db, "milestones": [{"id": "4.1", "status": status}]}

    progress.record(report("postgres", "failed"), chapter.databases)
    progress.record(report("mysql", "not_run"), chapter.databases)
    data = progress.load()
    assert data["milestones"]["4.1"] == {"sqlite": "passed", "postgres": "failed"}
    assert progress.results("4.1", chapter, data) == {"sqlite": "passed", "postgres": "failed"}
    progress.record({"chapter": 1, "milestones": [{"id": "1.1", "status": "passed"}]})
    assert progress.load()["milestones"]["1.1"] == "passed", "one database: the flat layout"


# --- grader run --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("slug", ["01-baseline", "03-stateless-history"])
def test_the_run_banner_names_the_sqlite_file_from_chapter_3(slug: str, tmp_path: Path) -> None:
    """Chapters 1 and 2 keep their conversations in memory: their banner names no database."""
    target = tmp_path / "chapter"
    copy_tree(REPO_ROOT / "solutions" / slug, target)
    env = {**os.environ, "DATABASE_URL": "sqlite:///./here.db", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "grader", "run", slug[:2].lstrip("0"), "--target", str(target)]
    cmd += ["--backend-port", str(_free_port()), "--frontend-port", str(_free_port())]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    seen: list[str] = []
    watchdog = threading.Timer(60, proc.send_signal, [signal.SIGTERM])  # a banner never shown
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line:  # the banner's last line
                break
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)  # `grader run` stops both of its children
        proc.wait(timeout=30)
    banner = "".join(seen)
    assert "  frontend: http://127.0.0.1:" in banner, banner
    if slug.startswith("01"):
        assert "database:" not in banner, banner
    else:
        assert f"  database: SQLite file {target / 'here.db'}\n" in seen, banner


def test_the_banner_names_a_server_without_its_password() -> None:
    url = "postgresql+psycopg://learner:s3cret@127.0.0.1:5433/workbook"
    text = describe_database(url, Path("/x"))
    assert "s3cret" not in text
    assert text.startswith("postgresql at 127.0.0.1:5433")
    assert "learner:***@127.0.0.1:5433/workbook" in text
    assert describe_database("sqlite:////tmp/a.db", Path("/x")) == "SQLite file /tmp/a.db"
    assert "not a database URL" in describe_database("pass:word@nowhere", Path("/x"))


def test_run_refuses_no_instances_and_a_missing_nginx(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from grader import runner

    assert cli.main(["run", "5", "--solution", "--instances", "0"]) == 2
    assert "--instances must be 1 or more" in capsys.readouterr().out
    monkeypatch.setattr(runner, "nginx_binary", lambda: None)
    argv = ["run", "5", "--solution", "--instances", "3"]
    argv += ["--backend-port", str(_free_port()), "--frontend-port", str(_free_port())]
    assert cli.main(argv) == 2
    assert "apt-get install nginx" in capsys.readouterr().out


def test_run_says_why_nginx_did_not_start_and_leaves_no_folder_behind(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An nginx that exits at once (a broken install): a message, exit 1, no folder left."""
    import tempfile

    from grader import runner
    from grader.toolkit import balancer

    def folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("grader-nginx-*"))

    for module in (runner, balancer):
        monkeypatch.setattr(module, "nginx_binary", lambda: "/bin/false")
    before = folders()
    argv = ["run", "5", "--solution", "--instances", "2"]
    argv += ["--backend-port", str(_free_port()), "--frontend-port", str(_free_port())]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "grader: nginx stopped at once" in out, out
    assert folders() == before, "grader run left its nginx folder behind"


# --- grader dev --------------------------------------------------------------------------------


@pytest.mark.parametrize("old", ["verify", "starters"])
def test_maintainer_commands_moved_under_dev(repo: Path, old: str) -> None:
    proc = grader(repo, old)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert grader(repo, "dev", old, "--help").returncode == 0


def test_dev_verify_passes_its_options_to_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    from grader import verify

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(verify, "verify", lambda manifest, **kw: calls.append(kw) or 0)
    argv = ["dev", "verify", "--db", "sqlite", "--db", "mysql", "--chapter", "3", "--jobs", "4"]
    assert cli.main(argv) == 0
    assert calls == [{"databases": ["sqlite", "mysql"], "chapters": [3], "jobs": 4}]
    assert cli.main(["dev", "verify"]) == 0
    assert calls[-1] == {"databases": None, "chapters": None, "jobs": 2}


def test_dev_starters_refuses_to_overwrite_an_edit_and_force_backs_it_up(repo: Path) -> None:
    main_py = repo / "chapters" / "01-baseline" / "backend" / "main.py"
    starter = main_py.read_text(encoding="utf-8")
    main_py.write_text(starter + "# my edit\n", encoding="utf-8")
    proc = grader(repo, "dev", "starters")
    assert proc.returncode == 1
    assert "  chapters/01-baseline/backend/main.py" in proc.stdout
    assert "--force" in proc.stdout
    assert main_py.read_text(encoding="utf-8").endswith("# my edit\n")

    proc = grader(repo, "dev", "starters", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (backup,) = (repo / ".grader" / "backups").iterdir()
    assert f"Backed up 1 edited file(s) to {backup.relative_to(repo)}/" in proc.stdout
    saved = backup / "01-baseline" / "backend" / "main.py"
    assert saved.read_text(encoding="utf-8").endswith("# my edit\n")
    assert main_py.read_text(encoding="utf-8") == starter
    assert grader(repo, "dev", "starters", "--check").returncode == 0


def test_dev_starters_follows_a_changed_solution_on_a_fresh_clone(repo: Path) -> None:
    # A fresh clone's chapters/ is what its stamp records, so a changed solution regenerates.
    solution = repo / "solutions" / "01-baseline" / "backend" / "main.py"
    solution.write_text(solution.read_text(encoding="utf-8") + "\nNEW = 1\n", encoding="utf-8")
    assert grader(repo, "dev", "starters", "--check").returncode == 1
    proc = grader(repo, "dev", "starters")
    assert proc.returncode == 0, proc.stdout
    assert "(1 file(s) changed)" in proc.stdout
    chapter = repo / "chapters" / "01-baseline" / "backend" / "main.py"
    assert chapter.read_text(encoding="utf-8").endswith("\nNEW = 1\n")
    assert grader(repo, "dev", "starters", "--check").returncode == 0
    assert not (repo / ".grader").exists(), "nothing was edited, nothing to back up"


def test_dev_starters_check_reports_todo_ids_both_ways(repo: Path) -> None:
    solution = repo / "solutions" / "01-baseline" / "backend" / "main.py"
    text = solution.read_text(encoding="utf-8")
    solution.write_text(text + "\n\n# TODO 4.1: left over from chapter 4.\n", encoding="utf-8")
    workbook = repo / "workbook.toml"
    toml = workbook.read_text(encoding="utf-8")
    workbook.write_text(toml.replace('todos = ["1.4"]', 'todos = ["1.4", "1.5"]'), encoding="utf-8")
    proc = grader(repo, "dev", "starters", "--check")
    assert proc.returncode == 1
    starter = render(repo / "solutions" / "01-baseline")[Path("backend/main.py")].decode()
    line = starter.splitlines().index("# TODO 4.1: left over from chapter 4.") + 1
    assert (
        f"chapters/01-baseline/backend/main.py: line {line}: TODO 4.1 is chapter 4's, "
        "not chapter 1's"
    ) in proc.stdout
    id_line = next(n for n, s in enumerate(toml.splitlines(), 1) if s.strip() == 'id = "1.4"')
    assert (
        f"workbook.toml: milestone 1.4 (line {id_line}) lists TODO 1.5, but "
        "chapters/01-baseline has no `# TODO 1.5` comment"
    ) in proc.stdout


def test_dev_new_scaffolds_the_next_chapter(repo: Path) -> None:
    proc = grader(repo, "dev", "new", "7", "real-models-and-streaming")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = load(repo / "workbook.toml")
    chapter = manifest.chapter(7)
    assert chapter.slug == "07-real-models-and-streaming"
    assert chapter.databases == manifest.chapter(6).databases, "as chapter 6"
    assert [(m.id, m.todos) for m in chapter.milestones] == [("7.1", ("7.1",))]
    solution = repo / "solutions" / "07-real-models-and-streaming"
    every = "\n".join(p.read_text(encoding="utf-8") for p in solution.rglob("*.py"))
    assert "TODO 6." not in every and "BEGIN SOLUTION\n    return None" in every
    assert "# TODO 7.1:" in every
    # Chapter 6's code, finished: its TODO blocks hold their solution code.
    assert "update(threads)" in (solution / "backend" / "store.py").read_text()
    nav = (repo / "mkdocs.yml").read_text(encoding="utf-8")
    assert (
        '      - "7. Real models and streaming": chapters/07-real-models-and-streaming.md\n' in nav
    )
    assert (
        (repo / "docs" / "chapters" / "07-real-models-and-streaming.md")
        .read_text()
        .count("## Milestones")
    )
    check = grader(repo, "dev", "starters", "--check")
    assert check.returncode == 0, check.stdout
    lint = [str(solution), str(repo / "grader" / "checks" / "ch07.py")]
    ruff = Path(sys.executable).parent / "ruff"
    config = ["--config", str(REPO_ROOT / "pyproject.toml")]
    subprocess.run([ruff, "check", *config, *lint], check=True)
    subprocess.run([ruff, "format", "--check", *config, *lint], check=True)

    proc = grader(repo, "check", "7", "--solution", timeout=300)
    assert proc.returncode == 1
    assert "not written yet" in proc.stdout

    again = grader(repo, "dev", "new", "7", "real-models-and-streaming")
    assert again.returncode == 1 and "chapter 7 exists" in again.stderr


def test_dev_new_refuses_a_taken_folder_and_changes_nothing(repo: Path) -> None:
    (repo / "docs" / "chapters" / "07-real-models-and-streaming.md").write_text("# mine\n")
    before = (repo / "workbook.toml").read_bytes()
    proc = grader(repo, "dev", "new", "7", "real-models-and-streaming")
    assert proc.returncode == 1
    assert "already there: docs/chapters/07-real-models-and-streaming.md" in proc.stderr
    assert (repo / "workbook.toml").read_bytes() == before
    assert not (repo / "solutions" / "07-real-models-and-streaming").exists()
    assert "chapters are numbered in order" in grader(repo, "dev", "new", "9", "x").stderr
