"""The starter generator: solution markers in, learner starters out, drift detected."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT
from grader.manifest import load, parse
from grader.starters import (
    StarterError,
    check,
    clean_solution,
    edited,
    render,
    same_tree,
    transform,
    write,
)


def t(text: str) -> str:
    return transform(textwrap.dedent(text).lstrip("\n"), "f.py")


def d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --- transform -----------------------------------------------------------------------------


def test_module_level_marker_becomes_a_raise() -> None:
    out = t("""
        import os

        # TODO 3.1: read the setting.
        # BEGIN SOLUTION
        SETTING = os.environ.get("SETTING", "x")
        # END SOLUTION
        print("after")
        """)
    assert out == d("""
        import os

        # TODO 3.1: read the setting.
        raise NotImplementedError("TODO 3.1")
        print("after")
        """)


def test_function_body_marker_keeps_its_indent() -> None:
    out = t("""
        def store(db, message):
            db.begin()
            # TODO 3.2: insert the message.
            # BEGIN SOLUTION
            db.insert(message)
            db.commit()
            # END SOLUTION
            return message
        """)
    assert out == d("""
        def store(db, message):
            db.begin()
            # TODO 3.2: insert the message.
            raise NotImplementedError("TODO 3.2")
            return message
        """)
    ast.parse(out)


def test_nested_marker() -> None:
    out = t("""
        class Store:
            def get(self, key):
                if key:
                    # TODO 4.1: look it up.
                    # BEGIN SOLUTION
                    return self.rows[key]
                    # END SOLUTION
                return None
        """)
    assert '            raise NotImplementedError("TODO 4.1")\n        return None\n' in out
    assert "self.rows" not in out
    ast.parse(out)


def test_the_nearest_todo_above_names_the_block() -> None:
    out = t("""
        # TODO 2.1: the first thing.
        def a():
            # TODO 2.2: the second thing.
            # BEGIN SOLUTION
            return 2
            # END SOLUTION


        def b():
            # TODO 2.3: the third thing.
            x = 1  # a line between the TODO and its block is fine
            # BEGIN SOLUTION
            return x
            # END SOLUTION
        """)
    assert '    raise NotImplementedError("TODO 2.2")' in out
    assert '    raise NotImplementedError("TODO 2.3")' in out
    assert 'TODO 2.1")' not in out
    ast.parse(out)


def test_starter_block_is_uncommented_at_its_indent() -> None:
    out = t("""
        from fastapi import FastAPI

        app = FastAPI()


        # TODO 1.4: add GET /ping.
        # BEGIN SOLUTION
        @app.get("/ping")
        def ping():
            return {"ping": "pong"}
        # END SOLUTION
        # BEGIN STARTER
        # @app.get("/ping")
        # def ping():
        #     raise NotImplementedError("TODO 1.4")
        # END STARTER


        def after():
            pass
        """)
    assert out == d("""
        from fastapi import FastAPI

        app = FastAPI()


        # TODO 1.4: add GET /ping.
        @app.get("/ping")
        def ping():
            raise NotImplementedError("TODO 1.4")


        def after():
            pass
        """)


def test_starter_block_in_a_function_with_blank_lines() -> None:
    out = t("""
        def page(st):
            st.title("x")
            # TODO 3.6: a toggle.
            # BEGIN SOLUTION
            show = st.toggle("Show tool calls")
            # END SOLUTION
            # BEGIN STARTER
            # show = True  # replace with a toggle

            # if show:
            #
            #     st.write("calls")
            # END STARTER
            return show
        """)
    assert out == (
        "def page(st):\n"
        '    st.title("x")\n'
        "    # TODO 3.6: a toggle.\n"
        "    show = True  # replace with a toggle\n"
        "\n"
        "    if show:\n"
        "\n"
        '        st.write("calls")\n'
        "    return show\n"
    )
    assert not any(line != line.rstrip() for line in out.splitlines()), "no trailing spaces"


def test_starter_block_comment_without_a_space() -> None:
    out = t("""
        # TODO 1.1: x.
        # BEGIN SOLUTION
        x = 1
        # END SOLUTION
        # BEGIN STARTER
        #x = None
        #     # a comment stays a comment
        # END STARTER
        """)
    assert out == "# TODO 1.1: x.\nx = None\n    # a comment stays a comment\n"


def test_snippet_markers_are_stripped_everywhere() -> None:
    out = t("""
        # --8<-- [start:imports]
        import os
        # --8<-- [end:imports]


        def f():
            # --8<-- [start:body]
            x = os.sep
                # --8<-- [end:body]
            return x
        # --8<-- [start:todo]
        # TODO 1.2: y.
        # BEGIN SOLUTION
        # --8<-- [start:inside]
        y = 1
        # --8<-- [end:inside]
        # END SOLUTION
        # --8<-- [end:todo]
        # --8<-- "not-a-region.md"
        """)
    assert "[start:" not in out and "[end:" not in out
    assert '# --8<-- "not-a-region.md"' in out, "only region markers are dropped"
    assert out.startswith("import os\n\n\ndef f():\n    x = os.sep\n    return x\n# TODO 1.2")


def test_no_runs_of_more_than_two_blank_lines() -> None:
    out = t("""
        import os


        # --8<-- [start:a]


        x = 1
        """)
    assert "\n\n\n\n" not in out
    assert out == "import os\n\n\nx = 1\n"


def test_the_final_newline_is_kept_as_it_was() -> None:
    assert transform("x = 1\n") == "x = 1\n"
    assert transform("x = 1") == "x = 1"
    assert transform("") == ""


def test_a_file_without_markers_is_unchanged() -> None:
    text = (REPO_ROOT / "assistant" / "dice.py").read_text(encoding="utf-8")
    if "BEGIN SOLUTION" in text or "--8<--" in text:
        pytest.skip("dice.py has markers")
    assert transform(text) == text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "# TODO 1.1: x.\n# BEGIN SOLUTION\nx = 1\n",
            "f.py:2: BEGIN SOLUTION is never closed",
            id="unclosed",
        ),
        pytest.param(
            "def f():\n    # TODO 1.1: x.\n    # BEGIN SOLUTION\n    x = 1\n# END SOLUTION\n",
            "f.py:5: nested marker inside a SOLUTION block",
            id="end-at-another-indent",
        ),
        pytest.param(
            "# TODO 1.1: x.\n# BEGIN SOLUTION\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n",
            "f.py:3: nested marker inside a SOLUTION block",
            id="nested",
        ),
        pytest.param(
            "# TODO 1.1: x.\n# BEGIN SOLUTION\n# BEGIN STARTER\n# END STARTER\n# END SOLUTION\n",
            "f.py:3: nested marker",
            id="starter-inside-solution",
        ),
        pytest.param(
            "x = 1\n# END SOLUTION\n",
            "f.py:2: '# END SOLUTION' without a '# BEGIN SOLUTION' before",
            id="end-without-begin",
        ),
        pytest.param(
            "x = 1\n\n# END STARTER\n",
            "f.py:3: '# END STARTER' without",
            id="end-starter-without-begin",
        ),
        pytest.param(
            "x = 1\n# BEGIN STARTER\n# x = 2\n# END STARTER\n",
            "f.py:2: '# BEGIN STARTER' without",
            id="starter-without-solution",
        ),
        pytest.param(
            "x = 1\n# BEGIN SOLUTION\nx = 2\n# END SOLUTION\n",
            "f.py:2: BEGIN SOLUTION has no '# TODO N.M: ...' comment above",
            id="missing-todo",
        ),
        pytest.param(
            "# TODO: no number\n# BEGIN SOLUTION\nx = 2\n# END SOLUTION\n",
            "f.py:2: BEGIN SOLUTION has no '# TODO N.M",
            id="todo-without-id",
        ),
        pytest.param(
            "# TODO 1.1: x.\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n# BEGIN STARTER\n# x = 2\n",
            "f.py:5: BEGIN STARTER is never closed",
            id="unclosed-starter",
        ),
        pytest.param(
            "# TODO 1.1: x.\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n"
            "# BEGIN STARTER\nx = 2\n# END STARTER\n",
            "f.py:6: a STARTER block holds only commented lines",
            id="uncommented-starter-line",
        ),
        pytest.param(
            "def f():\n    # TODO 1.1: x.\n    # BEGIN SOLUTION\n    x = 1\n    # END SOLUTION\n"
            "    # BEGIN STARTER\n# x = 2\n    # END STARTER\n",
            "f.py:7: a STARTER block holds only commented lines at its indent",
            id="starter-line-outdented",
        ),
    ],
)
def test_malformed_markers_name_file_and_line(source: str, message: str) -> None:
    with pytest.raises(StarterError) as exc:
        transform(source, "f.py")
    assert message in str(exc.value)


def test_clean_solution_drops_markers_regions_and_starter_blocks() -> None:
    text = d("""
        # --8<-- [start:a]
        # TODO 1.1: x.
        # BEGIN SOLUTION
        x = 1
        # END SOLUTION
        # BEGIN STARTER
        # x = None
        # END STARTER
        # --8<-- [end:a]


        """)
    assert clean_solution(text) == "# TODO 1.1: x.\nx = 1\n"


def test_a_starter_comment_is_a_comment_of_the_starter_only() -> None:
    text = d("""
        import json  # STARTER: noqa: F401 (TODO 1.1 uses it)
        x = "# STARTER: in a string"  # a comment  # STARTER: noqa: E501
            # STARTER: a comment line is left alone
        # TODO 1.1: y.
        # BEGIN SOLUTION
        y = json.dumps(x)
        # END SOLUTION
        # BEGIN STARTER
        # y = None  # STARTER: noqa: F841 (TODO 1.1 uses it)
        # END STARTER
        """)
    assert transform(text) == d("""
        import json  # noqa: F401 (TODO 1.1 uses it)
        x = "# STARTER: in a string"  # a comment  # noqa: E501
            # STARTER: a comment line is left alone
        # TODO 1.1: y.
        y = None  # noqa: F841 (TODO 1.1 uses it)
        """)
    assert clean_solution(text) == d("""
        import json
        x = "# STARTER: in a string"  # a comment
            # STARTER: a comment line is left alone
        # TODO 1.1: y.
        y = json.dumps(x)
        """)


# --- render / check / write on a temporary workbook ----------------------------------------

MAIN = d("""
    from fastapi import FastAPI

    app = FastAPI()


    # --8<-- [start:health]
    @app.get("/health")
    def health():
        return {"status": "ok"}


    # --8<-- [end:health]
    def ping():
        # TODO 1.2: answer pong.
        # BEGIN SOLUTION
        return {"ping": "pong"}
        # END SOLUTION
    """)

STARTER_MAIN = d("""
    from fastapi import FastAPI

    app = FastAPI()


    @app.get("/health")
    def health():
        return {"status": "ok"}


    def ping():
        # TODO 1.2: answer pong.
        raise NotImplementedError("TODO 1.2")
    """)


def _milestone(mid: str, todos: list[str]) -> dict[str, Any]:
    fields = {"title": "t", "kind": "exercise", "hint": "h", "docs": "d.md#x", "todos": todos}
    return {"id": mid, **fields}


@pytest.fixture()
def workbook(tmp_path: Path):
    """A two-chapter workbook under tmp_path with its solutions and no chapters/ yet."""
    sol1 = tmp_path / "solutions" / "01-one"
    (sol1 / "backend").mkdir(parents=True)
    (sol1 / "frontend").mkdir()
    (sol1 / "backend" / "__init__.py").write_text("")
    (sol1 / "backend" / "main.py").write_text(MAIN)
    (sol1 / "frontend" / "app.py").write_text("import streamlit as st\n")
    (sol1 / "README.md").write_text("# One\n\n# BEGIN SOLUTION is only special in .py files\n")
    (sol1 / "logo.bin").write_bytes(bytes(range(256)))
    # Leftovers of running the solution: never part of a starter.
    (sol1 / "backend" / "__pycache__").mkdir()
    (sol1 / "backend" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (sol1 / "messages.db").write_bytes(b"SQLite")
    sol2 = tmp_path / "solutions" / "02-two"
    (sol2 / "backend").mkdir(parents=True)
    (sol2 / "backend" / "main.py").write_text("x = 2\n")
    data = {
        "format_version": 1,
        "docs_url": "http://docs",
        "chapters": [
            {
                "number": n,
                "slug": slug,
                "title": slug,
                "docs": "d.md",
                "milestones": [_milestone(f"{n}.1", todos)],
            }
            for n, slug, todos in ((1, "01-one", ["1.2"]), (2, "02-two", []))
        ],
    }
    return tmp_path, parse(data, root=tmp_path)


def test_render(workbook) -> None:
    root, _ = workbook
    files = render(root / "solutions" / "01-one")
    assert sorted(str(p) for p in files) == [
        "README.md",
        "backend/__init__.py",
        "backend/main.py",
        "frontend/app.py",
        "logo.bin",
    ]
    assert files[Path("backend/main.py")].decode() == STARTER_MAIN
    assert files[Path("logo.bin")] == bytes(range(256))
    assert b"BEGIN SOLUTION is only special" in files[Path("README.md")]


def test_check_and_write(workbook) -> None:
    root, manifest = workbook
    chapters = root / "chapters"
    drifts = check(manifest, root)
    assert {(str(d.path), d.diff) for d in drifts} == {
        (f"chapters/01-one/{rel}", "missing")
        for rel in ("README.md", "backend/__init__.py", "backend/main.py", "frontend/app.py")
    } | {
        ("chapters/01-one/logo.bin", "missing"),
        ("chapters/02-two/backend/main.py", "missing"),
        ("chapters/.starters.sha256", "does not record the starters solutions/ generates"),
    }

    touched = write(manifest, root)
    assert len(touched) == 6
    assert check(manifest, root) == []
    assert (chapters / "01-one" / "backend" / "main.py").read_text() == STARTER_MAIN
    assert not (chapters / "01-one" / "messages.db").exists()
    assert not (chapters / "01-one" / "backend" / "__pycache__").exists()
    assert write(manifest, root) == [], "nothing to do when in sync"

    # A learner's run leaves files behind; they are not drift and survive a write.
    (chapters / "01-one" / "messages.db").write_bytes(b"mine")
    (chapters / "01-one" / "backend" / "__pycache__").mkdir()
    (chapters / "01-one" / "backend" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert check(manifest, root) == []

    # Drift: a changed file, a missing file and an extra file.
    main = chapters / "01-one" / "backend" / "main.py"
    main.write_text(STARTER_MAIN.replace('raise NotImplementedError("TODO 1.2")', "return 1"))
    (chapters / "01-one" / "frontend" / "app.py").unlink()
    (chapters / "02-two" / "backend" / "extra.py").write_text("y = 1\n")
    drifts = {str(d.path): d.diff for d in check(manifest, root)}
    assert set(drifts) == {
        "chapters/01-one/backend/main.py",
        "chapters/01-one/frontend/app.py",
        "chapters/02-two/backend/extra.py",
    }
    assert drifts["chapters/01-one/frontend/app.py"] == "missing"
    assert drifts["chapters/02-two/backend/extra.py"] == "not in solutions/"
    diff = drifts["chapters/01-one/backend/main.py"]
    assert "--- generated" in diff and "+++ on disk" in diff
    assert '-    raise NotImplementedError("TODO 1.2")' in diff
    assert "+    return 1" in diff

    # Regenerating one chapter fixes that chapter only.
    touched = write(manifest, root, only=2)
    assert touched == [chapters / "02-two" / "backend" / "extra.py"]
    assert not (chapters / "02-two" / "backend" / "extra.py").exists()
    assert {str(d.path) for d in check(manifest, root)} == {
        "chapters/01-one/backend/main.py",
        "chapters/01-one/frontend/app.py",
    }

    write(manifest, root)
    assert check(manifest, root) == []
    assert main.read_text() == STARTER_MAIN
    assert (chapters / "01-one" / "messages.db").read_bytes() == b"mine", "learner data kept"
    assert same_tree(chapters / "01-one", chapters / "01-one")
    assert not same_tree(chapters / "01-one", root / "solutions" / "01-one")


def test_edited_files_are_those_nobody_generated(workbook) -> None:
    root, manifest = workbook
    main = root / "chapters" / "01-one" / "backend" / "main.py"
    assert edited(manifest, root) == [], "files that do not exist yet are no one's edit"
    write(manifest, root)
    assert edited(manifest, root) == []

    # A maintainer changes a solution: the starter on disk is what was generated last time.
    solution = root / "solutions" / "01-one" / "backend" / "main.py"
    solution.write_text(MAIN + "\nNEW = 1\n")
    assert edited(manifest, root) == []
    write(manifest, root)
    assert main.read_text().endswith("\nNEW = 1\n")

    # A learner edits a starter and adds a file of their own: both are edits.
    main.write_text("# mine\n")
    notes = root / "chapters" / "01-one" / "backend" / "notes.py"
    notes.write_text("# my notes\n")
    assert edited(manifest, root) == [main, notes]
    assert edited(manifest, root, only=2) == []

    # Without a record (no stamp), only a file that equals the new starter is safe.
    (root / "chapters" / ".starters.sha256").unlink()
    write(manifest, root, only=2)
    assert edited(manifest, root) == [main, notes]
    recorded = (root / "chapters" / ".starters.sha256").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in recorded] == ["02-two/backend/main.py"]


def test_todo_ids_are_checked_both_ways(workbook) -> None:
    root, manifest = workbook
    write(manifest, root)
    assert check(manifest, root) == []
    # Chapter 2 started as a copy of chapter 1 and kept its TODO, while the manifest of
    # chapter 2 expects a TODO 2.1 that no starter has.
    (root / "solutions" / "02-two" / "backend" / "main.py").write_text(
        "x = 2\n\n\ndef f():\n    # TODO 1.2: answer pong.\n    # BEGIN SOLUTION\n"
        "    return 1\n    # END SOLUTION\n"
    )
    data = {
        "format_version": 1,
        "docs_url": "http://docs",
        "chapters": [
            {"number": 1, "slug": "01-one", "title": "one", "docs": "d.md"}
            | {"milestones": [_milestone("1.1", ["1.2"])]},
            {"number": 2, "slug": "02-two", "title": "two", "docs": "d.md"}
            | {"milestones": [_milestone("2.1", ["2.1"]), _milestone("2.2", ["2.1", "2.3"])]},
        ],
    }
    write(parse(data, root=root), root)
    problems = {(str(p.path), p.diff) for p in check(parse(data, root=root), root)}
    assert problems == {
        (
            "chapters/02-two/backend/main.py",
            "line 5: TODO 1.2 is chapter 1's, not chapter 2's (left over from a copied chapter?)",
        ),
        (
            "chapters/02-two/backend/main.py",
            "line 6: TODO 1.2 is chapter 1's, not chapter 2's (left over from a copied chapter?)",
        ),
        (
            "workbook.toml",
            "milestone 2.1 lists TODO 2.1, but chapters/02-two has no `# TODO 2.1` comment",
        ),
        (
            "workbook.toml",
            "milestone 2.2 lists TODO 2.3, but chapters/02-two has no `# TODO 2.3` comment",
        ),
    }
    # A TODO of the chapter's own that no milestone lists.
    (root / "solutions" / "02-two" / "backend" / "main.py").write_text(
        "# TODO 2.1: x.\n# TODO 2.3: y.\n# TODO 2.4: not in workbook.toml.\n"
    )
    write(parse(data, root=root), root)
    assert {p.diff for p in check(parse(data, root=root), root)} == {
        "line 3: TODO 2.4 is in no `todos` of chapter 2's milestones in workbook.toml"
    }


def test_a_malformed_solution_fails_render_with_its_path(workbook) -> None:
    root, manifest = workbook
    bad = root / "solutions" / "02-two" / "backend" / "main.py"
    bad.write_text("x = 1\n# BEGIN SOLUTION\nx = 2\n# END SOLUTION\n")
    with pytest.raises(StarterError, match=r"02-two/backend/main\.py:2: BEGIN SOLUTION has no"):
        check(manifest, root)


# --- the real repository -------------------------------------------------------------------


def test_every_real_solution_generates_a_valid_starter() -> None:
    for chapter in load().chapters:
        for rel, content in render(REPO_ROOT / "solutions" / chapter.slug).items():
            if rel.suffix == ".py":
                text = content.decode()
                ast.parse(text, f"{chapter.slug}/{rel}")
                assert "--8<--" not in text and "BEGIN SOLUTION" not in text, rel


def test_the_real_starters_pass_ruff(tmp_path: Path) -> None:
    """A starter's unused imports are marked `# noqa` (with a `# STARTER:` comment in the
    solution), so a learner's editor shows no warning the exercise did not ask for."""
    for chapter in load().chapters:
        for rel, content in render(REPO_ROOT / "solutions" / chapter.slug).items():
            (tmp_path / chapter.slug / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / chapter.slug / rel).write_bytes(content)
    config = ["--config", str(REPO_ROOT / "pyproject.toml"), "--no-force-exclude"]
    proc = subprocess.run(
        [Path(sys.executable).parent / "ruff", "check", *config, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_real_starters_are_in_sync() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "dev", "starters", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chapters/ is in sync with solutions/." in proc.stdout
