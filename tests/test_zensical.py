"""The docs also build with Zensical, the successor of Material for MkDocs, from the same mkdocs.yml.

Material for MkDocs stays the default (`mkdocs build --strict`, tests/test_docs.py); it reaches
end of life on 2027-05-05, and Zensical (by the same authors) reads mkdocs.yml as it is. This
test keeps the switch cheap: `zensical build --strict` runs offline on a copy of mkdocs.yml,
docs/ and solutions/ in a temporary folder (Zensical writes its site and a `.cache/` next to the
config, and wants docs_dir inside that folder), and every page, anchor, snippet and diagram must
be there.

What Zensical does not check yet is asserted exactly, as a known gap, so the day it does, this
test fails and the gap comes off the list (here and in CONTRIBUTING.md):

- a page that is in docs/ but not in the nav (mkdocs.yml `validation.omitted_files`);
- an absolute link such as `/grader/` (`validation.absolute_links`);
- a link or image to a file that is not a page and does not exist, such as `nope.png`.

It does check what the workbook relies on most: a link to a missing page, a missing anchor, and
a missing snippet file (pymdownx.snippets `check_paths`) all fail the strict build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import DOCS, ROOT, _manifest_anchors, built_page, fenced_blocks, html_ids

ZENSICAL = Path(sys.executable).parent / "zensical"

pytestmark = pytest.mark.xdist_group("zensical")


def _project(where: Path) -> Path:
    """A copy of what the docs build reads: mkdocs.yml, docs/ and solutions/ (the snippets)."""
    where.mkdir(parents=True)
    shutil.copy2(ROOT / "mkdocs.yml", where / "mkdocs.yml")
    shutil.copytree(DOCS, where / "docs")
    shutil.copytree(ROOT / "solutions", where / "solutions", ignore=shutil.ignore_patterns("*.db"))
    return where


def _build(project: Path) -> subprocess.CompletedProcess[str]:
    if not ZENSICAL.is_file():
        pytest.fail(f"{ZENSICAL} is missing: it comes with the dev extras (bootstrap.py)")
    return subprocess.run(
        [str(ZENSICAL), "build", "--strict"],
        cwd=project,  # the snippets' base_path "." is the project folder
        capture_output=True,
        text=True,
        timeout=300,
    )


def _plain(proc: subprocess.CompletedProcess[str]) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def zensical_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("zensical") / "project")
    proc = _build(project)
    assert proc.returncode == 0, f"zensical build --strict failed:\n{_plain(proc)[-4000:]}"
    return project / "site"


PAGES = sorted(
    p.relative_to(DOCS).as_posix()
    for p in DOCS.rglob("*.md")
    if "assets" not in p.relative_to(DOCS).parts
)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_built(zensical_site: Path, page: str) -> None:
    built = built_page(zensical_site, page)
    assert built.is_file(), f"zensical did not build {page}"
    html = built.read_text(encoding="utf-8")
    assert "--8<--" not in html and "8&lt;" not in html, f"{page}: a snippet was not included"
    fences = sum(
        1 for b in fenced_blocks((DOCS / page).read_text("utf-8")) if b["lang"] == "mermaid"
    )
    assert html.count('class="mermaid"') == fences, f"{page}: {fences} mermaid fence(s)"
    if fences:
        assert "assets/javascripts/mermaid/mermaid.tiny.js" in html, (
            f"{page}: the site's own Mermaid is not loaded; the diagrams would need unpkg"
        )


@pytest.mark.parametrize(("where", "anchor"), _manifest_anchors(), ids=lambda v: str(v))
def test_manifest_anchors_resolve(zensical_site: Path, where: str, anchor: str) -> None:
    page, _, fragment = anchor.partition("#")
    built = built_page(zensical_site, page)
    assert built.is_file(), f"{where}: zensical did not build {page}"
    if fragment:
        assert fragment in html_ids(built), f"{where}: no #{fragment} on {page} built by zensical"


def test_snippets_come_from_solutions(zensical_site: Path) -> None:
    html = built_page(zensical_site, "chapters/03-stateless-history.md").read_text("utf-8")
    assert "ask_assistant" in html and "BUSY_TIMEOUT_SECONDS" in html
    assert not (zensical_site / "assets/javascripts/mermaid/README").exists()  # exclude_docs


PROBE = """

## Probe

[missing page](nope.md), [missing anchor](index.md#no-such-anchor).
"""
GAPS = """

## Probe

[absolute](/grader/) and ![missing image](nope.png).
"""


def _append(page: Path, text: str) -> None:
    page.write_text(page.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_what_zensical_checks_and_its_known_gaps(tmp_path: Path) -> None:
    # Checked: a missing page and a missing anchor fail --strict, each reported.
    checked = _project(tmp_path / "checked")
    _append(checked / "docs" / "index.md", PROBE)
    proc = _build(checked)
    out = _plain(proc)
    assert proc.returncode != 0, out
    assert "page does not exist" in out and "anchor does not exist" in out, out

    # Checked: a missing snippet file fails the build (pymdownx.snippets check_paths).
    snippets = _project(tmp_path / "snippets")
    _append(snippets / "docs" / "index.md", '\n```python\n--8<-- "solutions/nope.py:region"\n```\n')
    proc = _build(snippets)
    assert proc.returncode != 0 and "SnippetMissingError" in _plain(proc), _plain(proc)

    # Known gaps: an orphan page, an absolute link and a missing image pass --strict unreported
    # (mkdocs build --strict fails on each). When this assertion fails, Zensical closed a gap:
    # take it off the lists in this docstring and in CONTRIBUTING.md.
    gaps = _project(tmp_path / "gaps")
    _append(gaps / "docs" / "index.md", GAPS)
    (gaps / "docs" / "orphan.md").write_text("# Not in the nav\n", encoding="utf-8")
    proc = _build(gaps)
    out = _plain(proc)
    assert proc.returncode == 0 and "No issues found" in out, (
        f"zensical now reports one of its known gaps; update the list:\n{out[-3000:]}"
    )
    assert (gaps / "site" / "orphan" / "index.html").is_file()
