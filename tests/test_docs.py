"""The docs site: it builds with `--strict`, the manifest's anchors exist, code is never pasted.

`mkdocs build --strict` fails on a broken link, a missing anchor (mkdocs.yml sets `validation`
to warn) and a missing snippet file (`check_paths: true`). On top of that:

- every `docs` anchor in workbook.toml (the links the grader's report prints) names a page that
  was built and an `id` present in its HTML;
- the chapter pages include their Python from `solutions/` with `--8<--` instead of pasting it,
  so the docs cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Keep the two docs builds of an xdist run from happening twice: one worker builds once.
pytestmark = pytest.mark.xdist_group("docs")


def _manifest_anchors() -> list[tuple[str, str]]:
    """(where, "page.md#anchor") for every `docs` field of workbook.toml."""
    data = tomllib.loads((ROOT / "workbook.toml").read_text(encoding="utf-8"))
    out = []
    for chapter in data.get("chapters", []):
        out.append((f"chapter {chapter['number']}", chapter["docs"]))
        for m in chapter.get("milestones", []):
            out.append((f"milestone {m['id']}", m["docs"]))
    return out


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)


def html_ids(path: Path) -> set[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.ids


def built_page(site: Path, page: str) -> Path:
    """`chapters/01-baseline.md` -> site/chapters/01-baseline/index.html (directory URLs)."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / stem.removesuffix("index") / "index.html"
    return site / stem / "index.html"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One `mkdocs build --strict` for the module: the site folder and the finished process."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,  # the snippets' base_path "." is the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, proc


@pytest.fixture(scope="module")
def site(build: tuple[Path, subprocess.CompletedProcess]) -> Path:
    """The built site. mkdocs writes the pages before a strict build aborts on its warnings,
    so the anchor checks still report page by page when the build as a whole fails."""
    out, proc = build
    if not (out / "index.html").is_file():
        pytest.fail(f"mkdocs built no site:\n{proc.stderr[-3000:]}", pytrace=False)
    return out


def test_the_site_builds_strictly(build: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = build
    if proc.returncode != 0:
        problems = [
            line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line
        ]
        pytest.fail(
            "mkdocs build --strict failed:\n"
            + "\n".join(problems or proc.stderr.splitlines()[-30:]),
            pytrace=False,
        )
    assert (out / "index.html").is_file()
    assert (out / "chapters" / "01-baseline" / "index.html").is_file()


@pytest.mark.parametrize(("where", "anchor"), _manifest_anchors(), ids=lambda v: str(v))
def test_manifest_docs_anchor_resolves(site: Path, where: str, anchor: str) -> None:
    page, _, fragment = anchor.partition("#")
    assert page.endswith(".md"), f"{where}: docs = {anchor!r} must name a .md page"
    assert (DOCS / page).is_file(), f"{where}: docs/{page} does not exist"
    built = built_page(site, page)
    assert built.is_file(), f"{where}: {page} was not built (is it in the nav?)"
    if fragment:
        ids = html_ids(built)
        assert fragment in ids, (
            f"{where}: #{fragment} is not an id on {page}; headings there give: "
            + ", ".join(sorted(i for i in ids if not i.startswith("__")))
        )


# --- docs never drift: Python on the chapter pages comes from solutions/ --------------------

FENCE_OPEN = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*\{?[ \t]*\.?(?P<lang>[\w+-]*)"
)
SNIPPET = re.compile(r"^\s*-*8<-+\s*")
PYTHON = {"python", "py", "python3", "pycon"}
MAX_PASTED_LINES = 3


def fenced_blocks(text: str) -> list[dict[str, Any]]:
    """Every fenced code block: its language, first line number and body lines."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m["fence"], m["lang"].lower(), i + 1
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append({"lang": lang, "line": start, "body": body})
        i += 1
    return blocks


def pasted_python(path: Path) -> list[str]:
    problems = []
    for block in fenced_blocks(path.read_text(encoding="utf-8")):
        if block["lang"] not in PYTHON:
            continue
        code = [line for line in block["body"] if line.strip() and not SNIPPET.match(line)]
        if len(code) > MAX_PASTED_LINES:
            problems.append(
                f"{path.relative_to(ROOT)}:{block['line']}: a ```{block['lang']} block pastes "
                f"{len(code)} lines of code; include it from solutions/ with "
                '--8<-- "solutions/NN-slug/file.py:region" instead'
            )
    return problems


def snippet_includes(path: Path) -> list[str]:
    found = []
    for block in fenced_blocks(path.read_text(encoding="utf-8")):
        for line in block["body"]:
            if SNIPPET.match(line):
                found.append(line.strip())
    return found


CHAPTER_PAGES = sorted((DOCS / "chapters").glob("*.md"))


def test_the_fence_parser_sees_what_mkdocs_sees() -> None:
    sample = (
        "```python\n"
        '--8<-- "solutions/01-baseline/backend/main.py:chat"\n'
        "```\n\n"
        "??? tip\n\n"
        "    ``` py\n    a = 1\n    b = 2\n    c = 3\n    d = 4\n    ```\n\n"
        "```bash\nls\nls\nls\nls\n```\n"
    )
    blocks = fenced_blocks(sample)
    assert [b["lang"] for b in blocks] == ["python", "py", "bash"]
    assert len(blocks[1]["body"]) == 4


@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=lambda p: p.name)
def test_chapter_pages_include_python_instead_of_pasting_it(page: Path) -> None:
    problems = pasted_python(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=lambda p: p.name)
def test_chapter_snippets_come_from_solutions(page: Path) -> None:
    for include in snippet_includes(page):
        target = re.search(r'"([^"]+)"', include)
        assert target, f"{page.name}: cannot read the snippet include {include!r}"
        assert target[1].startswith("solutions/"), (
            f"{page.name}: {include!r} includes from outside solutions/; chapter code on the "
            "docs comes from the solutions, the single source of truth"
        )
