"""The docs' diagrams, in a real browser with no internet: every mermaid fence renders to an SVG.

The site is built with `mkdocs build --strict` (test_docs.py's fixture), served by
`python -m http.server` on a free loopback port, and each page with a ```` ```mermaid ```` fence is
opened in Chromium. Every request that does not go to that server is aborted, so the diagrams
can only render with the Mermaid runtime the site serves itself
(docs/assets/javascripts/mermaid/, listed in mkdocs.yml's `extra_javascript`); without it
Material would fetch Mermaid from unpkg.

Material renders each diagram into a *closed* shadow root on a `div.mermaid` that replaces the
code block. An init script opens those shadow roots (it changes nothing else) so the test can see
the SVG. A diagram that does not parse stays a `pre.mermaid` code block, Mermaid raises its parse
error and prints "Syntax error in text" on the page. Screenshot: test-artifacts/docs-ch03-diagram.png.

Material scales each diagram down to the width of the page's text column, so a wide diagram
(long message labels, many participants, a long `flowchart LR` chain) ends up with labels a few
pixels high. Every label must be drawn at least `MIN_LABEL_PX` CSS pixels high in a 1280-pixel
wide window: wrap long labels with `<br/>`, use fewer participants, or `flowchart TB`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import ARTIFACTS, UI_TIMEOUT_MS, free_ports, launch_browser, running
from test_docs import DOCS, build, built_page, fenced_blocks, site  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Route

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _mermaid_pages() -> list[tuple[str, int]]:
    """("chapters/03-stateless-history.md", number of mermaid fences) for every page with one."""
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        blocks = fenced_blocks(path.read_text(encoding="utf-8"))
        count = sum(1 for block in blocks if block["lang"] == "mermaid")
        if count:
            found.append((path.relative_to(DOCS).as_posix(), count))
    return found


MERMAID_PAGES = _mermaid_pages()
SCREENSHOT_PAGE = "chapters/03-stateless-history.md"

# Runs before the page's own scripts: open Material's closed shadow roots, and keep the page's
# uncaught errors (a diagram that does not parse rejects a promise inside Material's bundle).
INIT_SCRIPT = """
{
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    return attach.call(this, { ...init, mode: "open" });
  };
  window.__pageErrors = [];
  const keep = (what) => window.__pageErrors.push(String(what && (what.message || what)));
  window.addEventListener("error", (event) => keep(event.error || event.message));
  window.addEventListener("unhandledrejection", (event) => keep(event.reason));
}
"""

# Done when `n` diagrams are SVGs, or as soon as the page has an error to report.
RENDERED = """
(n) => window.__pageErrors.length > 0 || [...document.querySelectorAll("div.mermaid")]
  .filter((host) => host.shadowRoot && host.shadowRoot.querySelector("svg")).length >= n
"""

# The smallest label of each rendered diagram, in CSS pixels as drawn: its font size times the
# factor by which the SVG is scaled from its viewBox to the page.
MIN_LABEL_PX = 9
LABEL_SIZES = """
() => [...document.querySelectorAll("div.mermaid")].map((host) => {
  const svg = host.shadowRoot && host.shadowRoot.querySelector("svg");
  if (!svg) return null;
  const drawn = svg.getBoundingClientRect().width;
  const box = svg.viewBox && svg.viewBox.baseVal;
  const scale = box && box.width ? drawn / box.width : 1;
  const labels = [...svg.querySelectorAll("text, foreignObject div, foreignObject span")]
    .filter((el) => (el.textContent || "").trim() && !el.querySelector("text, div, span"));
  if (!labels.length) return null;
  const sizes = labels.map((el) => [parseFloat(getComputedStyle(el).fontSize) * scale, el]);
  const [px, el] = sizes.reduce((a, b) => (b[0] < a[0] ? b : a));
  return { px, label: el.textContent.trim().slice(0, 60) };
})
"""

REPORT = """
() => ({
  errors: window.__pageErrors,
  svgs: [...document.querySelectorAll("div.mermaid")]
    .filter((host) => host.shadowRoot && host.shadowRoot.querySelector("svg")).length,
  unrendered: [...document.querySelectorAll("pre.mermaid")].map((pre) => pre.textContent),
  syntaxError: [document.body, ...[...document.querySelectorAll("div.mermaid")]
    .map((host) => host.shadowRoot).filter(Boolean)]
    .some((root) => (root.textContent || "").includes("Syntax error")),
  mermaid: typeof window.mermaid,
})
"""


@contextlib.contextmanager
def _serve(directory: Path) -> Iterator[str]:
    """`python -m http.server` on a free loopback port; yields its URL, stops it by PID."""
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    log_path = ARTIFACTS / "docs-http.log"
    with running(cmd, log_path, {"docs site": url}, cwd=directory, program="http.server"):
        yield url


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[tuple[Path, str]]:  # noqa: F811 (test_docs's fixture)
    """The built site's folder and the URL it is served at."""
    with _serve(site) as url:
        yield site, url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with launch_browser() as browser:
        yield browser


@pytest.fixture
def offline(
    chromium: Browser, served: tuple[Path, str]
) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context that reaches the docs server and nothing else; and the list of the
    requests it refused ("resource type URL")."""
    docs_url = served[1]
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=2)
    refused: list[str] = []

    def only_the_docs(route: Route) -> None:
        if route.request.url.startswith(docs_url):
            route.continue_()
        else:
            refused.append(f"{route.request.resource_type} {route.request.url}")
            route.abort()

    context.route("**/*", only_the_docs)
    context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context, refused
    finally:
        context.close()


def test_some_pages_have_diagrams() -> None:
    assert SCREENSHOT_PAGE in dict(MERMAID_PAGES), "the chapter 3 diagram is gone; update the test"


@pytest.mark.parametrize(("page", "diagrams"), MERMAID_PAGES, ids=[p for p, _ in MERMAID_PAGES])
def test_every_diagram_renders_offline(
    served: tuple[Path, str],
    offline: tuple[BrowserContext, list[str]],
    page: str,
    diagrams: int,
) -> None:
    site_dir, docs_url = served
    built = built_page(site_dir, page)
    assert built.is_file(), f"{page} was not built (is it in the nav?)"
    folder = built.parent.relative_to(site_dir).as_posix()
    url = docs_url if folder == "." else f"{docs_url}{folder}/"

    context, refused = offline
    tab = context.new_page()
    tab.goto(url, wait_until="load", timeout=UI_TIMEOUT_MS)
    with contextlib.suppress(Exception):  # a timeout is reported below, with what was seen
        tab.wait_for_function(RENDERED, arg=diagrams, timeout=UI_TIMEOUT_MS)
    seen = tab.evaluate(REPORT)

    assert not refused, f"{page} loads from outside the site (offline that fails): {refused}"
    assert seen["mermaid"] != "undefined", f"{page}: the site's own Mermaid did not load"
    assert not seen["errors"], f"{page}: errors while rendering: {seen['errors']}"
    assert not seen["unrendered"], (
        f"{page}: {len(seen['unrendered'])} diagram(s) did not render; the first starts:\n"
        + seen["unrendered"][0][:500]
    )
    assert not seen["syntaxError"], f"{page}: Mermaid reports a syntax error"
    assert seen["svgs"] == diagrams, (
        f"{page}: {diagrams} mermaid fence(s), {seen['svgs']} rendered diagram(s)"
    )

    for number, smallest in enumerate(tab.evaluate(LABEL_SIZES), start=1):
        assert smallest is not None, f"{page}: diagram {number} has no labels to measure"
        assert smallest["px"] >= MIN_LABEL_PX, (
            f"{page}: diagram {number} draws {smallest['label']!r} {smallest['px']:.1f} px high "
            f"(at least {MIN_LABEL_PX}): it is too wide for the page and is scaled down; wrap "
            "long labels with <br/>, use fewer participants or nodes, or flowchart TB"
        )

    if page == SCREENSHOT_PAGE:
        diagram = tab.locator("div.mermaid").first
        diagram.scroll_into_view_if_needed()
        sequence = diagram.locator("svg[aria-roledescription=sequence]")
        assert sequence.count() == 1, f"{page}: the first diagram is not a sequence diagram"
        ARTIFACTS.mkdir(exist_ok=True)
        diagram.screenshot(path=str(ARTIFACTS / "docs-ch03-diagram.png"))
