"""`grader dev new N SLUG`: the skeleton of a new chapter, for a maintainer to fill in.

It appends the chapter to workbook.toml with one placeholder milestone N.1 (TODO N.1), copies the
previous chapter's solution as the new one's start (each chapter is a whole app, repeated on
purpose), writes a check module that fails until its checks are written, adds the docs page to
mkdocs.yml's nav and generates the starter, so `grader dev starters --check` holds at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from grader import REPO_ROOT, starters
from grader.manifest import Chapter, Manifest, load

# A TODO comment's first line; the comment lines after it at its indent continue it.
TODO_LINE_RE = re.compile(r"^(\s*)#\s*TODO\s+\d+\.\d+\b")


class ScaffoldError(ValueError):
    """The chapter cannot be scaffolded; nothing was written."""


def _drop_todo_comments(text: str) -> str:
    """The previous chapter's TODO comments describe its exercises, not the new chapter's."""
    out: list[str] = []
    indent: str | None = None  # set while inside a TODO comment
    for line in text.splitlines(keepends=True):
        if indent is not None:
            if line.startswith(f"{indent}#") and not starters.MARKER_RE.match(line):
                continue
            indent = None
        if m := TODO_LINE_RE.match(line):
            indent = m.group(1)
            continue
        out.append(line)
    return "".join(out)


def _manifest_entry(number: int, slug: str, title: str, previous: Chapter) -> str:
    # json.dumps writes each value as TOML reads it: a JSON string is a TOML basic string.
    page = f"chapters/{slug}.md"
    databases = list(previous.databases)
    return f"""
[[chapters]]
number = {number}
slug = {json.dumps(slug)}
title = {json.dumps(title)}
docs = {json.dumps(page)}
databases = {json.dumps(databases)}

[[chapters.milestones]]
id = "{number}.1"
title = "Placeholder: the first milestone of chapter {number}"
kind = "exercise"
hint = "Not written yet: `grader dev new` made this placeholder."
docs = {json.dumps(page + "#milestones")}
todos = ["{number}.1"]
"""


def _placeholder_todo(number: int) -> str:
    return (
        f"\n\n\n# TODO {number}.1: a placeholder from `grader dev new`: replace it with this "
        "chapter's first exercise.\n"
        f"def chapter_{number}_exercise() -> None:\n"
        "    # BEGIN SOLUTION\n    return None\n    # END SOLUTION\n"
    )


def _readme(number: int, slug: str, title: str, previous: Chapter) -> str:
    return (
        f"# Chapter {number} — {title}\n\n"
        f"Not written yet: `grader dev new` started this chapter from chapter {previous.number}'s "
        "solution.\n\n"
        f"Read the chapter in the docs: `docs/chapters/{slug}.md`.\n\n"
        "## Your TODOs\n\n"
        f"- **TODO {number}.1** in `backend/main.py`: a placeholder, to be replaced by the "
        "chapter's first exercise.\n\n"
        "## Commands\n\n"
        f"```bash\ngrader run {number}\ngrader check {number}\n```\n"
    )


def _check_module(number: int) -> str:
    return (
        f'"""Chapter {number} milestones: not written yet (`grader dev new` made this file)."""\n\n'
        "import pytest\n\nfrom grader.toolkit.expect import fail\n\n\n"
        f'@pytest.mark.milestone("{number}.1")\n'
        "def test_placeholder() -> None:\n"
        f'    """Placeholder for milestone {number}.1."""\n'
        f'    fail("the checks of milestone {number}.1 are not written yet: write them in '
        f'grader/checks/ch{number:02d}.py")\n'
    )


def _docs_page(number: int, slug: str, title: str) -> str:
    return (
        f"# Chapter {number} · {title}\n\n"
        '!!! warning "Not written yet"\n\n'
        f"    `grader dev new` scaffolded this chapter: its code, in `solutions/{slug}/`,\n"
        "    is a copy of the previous chapter's solution.\n\n"
        "## Milestones\n\n"
        "| milestone | what it checks |\n|---|---|\n"
        f"| {number}.1 | a placeholder, until the chapter's milestones are written |\n"
    )


def new_chapter(manifest: Manifest, number: int, slug: str, root: Path = REPO_ROOT) -> list[Path]:
    """Scaffold chapter `number` (`slug` with or without its `NN-`); returns what it wrote.

    Everything is checked before anything is written, so a refusal leaves the repository as it
    was.
    """
    previous = manifest.chapters[-1]
    if number <= previous.number:
        raise ScaffoldError(f"chapter {number} exists: {manifest.chapter(number).slug}")
    if number != previous.number + 1:
        raise ScaffoldError(
            f"the next chapter is {previous.number + 1}: chapters are numbered in order"
        )
    slug = slug.removeprefix(f"{number:02d}-")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug):
        raise ScaffoldError(f"{slug!r} is not a slug: lowercase words joined by '-'")
    slug = f"{number:02d}-{slug}"
    title = slug[3:].replace("-", " ").capitalize()
    solution = root / "solutions" / slug
    checks = root / "grader" / "checks" / f"ch{number:02d}.py"
    page = root / "docs" / "chapters" / f"{slug}.md"
    nav_path = root / "mkdocs.yml"
    taken = [p for p in (solution, root / "chapters" / slug, checks, page) if p.exists()]
    if taken:
        raise ScaffoldError(f"already there: {', '.join(str(p.relative_to(root)) for p in taken)}")
    nav = nav_path.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = next((i for i, line in enumerate(nav) if f"chapters/{previous.slug}.md" in line), None)
    if entry is None:
        raise ScaffoldError(f"mkdocs.yml's nav has no chapters/{previous.slug}.md to add after")

    written: list[Path] = []
    for rel, path in starters.chapter_files(root / "solutions" / previous.slug).items():
        dest = solution / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel == Path("README.md"):
            dest.write_text(_readme(number, slug, title, previous), encoding="utf-8")
        elif path.suffix == ".py":
            text = starters.clean_solution(_drop_todo_comments(path.read_text(encoding="utf-8")))
            if rel == Path("backend/main.py"):
                text = text.rstrip("\n") + _placeholder_todo(number)
            dest.write_text(text, encoding="utf-8")
        else:
            dest.write_bytes(path.read_bytes())
        written.append(dest)
    workbook = root / "workbook.toml"
    toml = workbook.read_text(encoding="utf-8")
    workbook.write_text(
        toml.rstrip("\n") + "\n" + _manifest_entry(number, slug, title, previous), encoding="utf-8"
    )
    checks.write_text(_check_module(number), encoding="utf-8")
    page.write_text(_docs_page(number, slug, title), encoding="utf-8")
    indent = nav[entry][: len(nav[entry]) - len(nav[entry].lstrip())]
    nav.insert(entry + 1, f'{indent}- "{number}. {title}": chapters/{slug}.md\n')
    nav_path.write_text("".join(nav), encoding="utf-8")
    written += [workbook, checks, page, nav_path]
    written += starters.write(load(workbook), root, only=number)
    return written
