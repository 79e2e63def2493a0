"""Generate the learner's starters (`chapters/`) from the finished code (`solutions/`).

In a solution file,

    # TODO 3.1: store the user's message.
    # BEGIN SOLUTION
    ...finished code...
    # END SOLUTION

becomes the TODO comment followed by `raise NotImplementedError("TODO 3.1")` at the same indent,
unless a `# BEGIN STARTER` / `# END STARTER` block of commented lines follows right after: then
those lines, uncommented, are the starter text. Snippet markers for the docs
(`# --8<-- [start:name]`) are dropped.
"""

from __future__ import annotations

import difflib
import filecmp
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader import REPO_ROOT
from grader.manifest import Manifest

TODO_RE = re.compile(r"#\s*TODO\s+(\d+\.\d+)\b")
SNIPPET_RE = re.compile(r"^\s*#\s*--8<--\s*\[(start|end):[\w-]+\]\s*$")
MARKER_RE = re.compile(r"^(\s*)#\s*(BEGIN|END)\s+(SOLUTION|STARTER)\s*$")
# Files a learner's run leaves behind; never part of a starter, never reported as drift.
IGNORED = ("__pycache__", ".pytest_cache", ".streamlit")
IGNORED_SUFFIXES = (".pyc", ".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite3")


class StarterError(ValueError):
    """A solution file's markers are malformed; the message gives file and line."""


def _marker(line: str) -> tuple[str, str, str] | None:
    m = MARKER_RE.match(line)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _uncomment(line: str, indent: str, where: str) -> str:
    if not line.strip():
        return ""
    body = line[len(indent) :] if line.startswith(indent) else None
    if body is None or not body.startswith("#"):
        raise StarterError(f"{where}: a STARTER block holds only commented lines at its indent")
    body = body[1:]
    # A bare `#` is a blank line of the starter: no trailing whitespace.
    return indent + (body[1:] if body.startswith(" ") else body) if body.strip() else ""


def transform(text: str, name: str = "<text>") -> str:
    """Turn one solution file's text into its starter text."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{name}:{i + 1}"
        if SNIPPET_RE.match(line):
            i += 1
            continue
        marker = _marker(line)
        if marker is None:
            out.append(line)
            i += 1
            continue
        indent, edge, block = marker
        if (edge, block) != ("BEGIN", "SOLUTION"):
            raise StarterError(f"{where}: '# {edge} {block}' without a '# BEGIN SOLUTION' before")
        todo = next((m.group(1) for p in reversed(out) if (m := TODO_RE.search(p))), None)
        if todo is None:
            raise StarterError(f"{where}: BEGIN SOLUTION has no '# TODO N.M: ...' comment above")
        j = i + 1
        while j < len(lines) and _marker(lines[j]) != (indent, "END", "SOLUTION"):
            if _marker(lines[j]):
                raise StarterError(f"{name}:{j + 1}: nested marker inside a SOLUTION block")
            j += 1
        if j == len(lines):
            raise StarterError(f"{where}: BEGIN SOLUTION is never closed by '# END SOLUTION'")
        i = j + 1
        if i < len(lines) and _marker(lines[i]) == (indent, "BEGIN", "STARTER"):
            k = i + 1
            while k < len(lines) and _marker(lines[k]) != (indent, "END", "STARTER"):
                out.append(_uncomment(lines[k], indent, f"{name}:{k + 1}"))
                k += 1
            if k == len(lines):
                raise StarterError(f"{name}:{i + 1}: BEGIN STARTER is never closed")
            i = k + 1
        else:
            out.append(f'{indent}raise NotImplementedError("TODO {todo}")')
    while out and not out[-1].strip():  # a dropped marker at the end leaves blank lines
        out.pop()
    return "\n".join(_collapse_blank_runs(out)) + ("\n" if text.endswith("\n") else "")


def _collapse_blank_runs(lines: list[str]) -> list[str]:
    """Dropping marker lines can leave 3+ blank lines in a row; keep at most two, as PEP 8 does."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and len(out) >= 2 and not out[-1].strip() and not out[-2].strip():
            continue
        out.append(line)
    return out


def clean_solution(text: str) -> str:
    """A solution file as a learner should read it: no docs regions, markers or STARTER blocks."""
    lines: list[str] = []
    in_starter = False
    for line in text.splitlines():
        marker = _marker(line)
        if marker is not None:
            in_starter = marker[1:] == ("BEGIN", "STARTER")
            continue
        if not in_starter and not SNIPPET_RE.match(line):
            lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(_collapse_blank_runs(lines)) + ("\n" if text.endswith("\n") else "")


def _ignored(rel: Path) -> bool:
    return any(part in IGNORED for part in rel.parts) or rel.name.endswith(IGNORED_SUFFIXES)


def _files(folder: Path) -> dict[Path, Path]:
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not _ignored(p.relative_to(folder))
    }


def render(solution: Path) -> dict[Path, bytes]:
    """The starter of one chapter: relative path -> content."""
    rendered: dict[Path, bytes] = {}
    for rel, path in _files(solution).items():
        if path.suffix == ".py":
            rendered[rel] = transform(path.read_text(encoding="utf-8"), str(path)).encode()
        else:
            rendered[rel] = path.read_bytes()
    return rendered


@dataclass
class Drift:
    path: Path
    diff: str


def check(manifest: Manifest, root: Path = REPO_ROOT) -> list[Drift]:
    """Every difference between `chapters/` and what `solutions/` would generate."""
    drifts: list[Drift] = []
    for chapter in manifest.chapters:
        wanted = render(root / "solutions" / chapter.slug)
        target = root / "chapters" / chapter.slug
        have = _files(target)
        for rel, content in wanted.items():
            shown = Path("chapters") / chapter.slug / rel
            if rel not in have:
                drifts.append(Drift(shown, "missing"))
                continue
            current = have[rel].read_bytes()
            if current != content:
                diff = difflib.unified_diff(
                    content.decode(errors="replace").splitlines(),
                    current.decode(errors="replace").splitlines(),
                    "generated",
                    "on disk",
                    lineterm="",
                )
                drifts.append(Drift(shown, "\n".join(list(diff)[:40])))
        for rel in have.keys() - wanted.keys():
            drifts.append(Drift(Path("chapters") / chapter.slug / rel, "not in solutions/"))
    return drifts


def write(manifest: Manifest, root: Path = REPO_ROOT, only: int | None = None) -> list[Path]:
    """Regenerate `chapters/` (or one chapter); returns the files written or removed."""
    touched: list[Path] = []
    for chapter in manifest.chapters:
        if only is not None and chapter.number != only:
            continue
        target = root / "chapters" / chapter.slug
        wanted = render(root / "solutions" / chapter.slug)
        for rel in _files(target).keys() - wanted.keys():
            (target / rel).unlink()
            touched.append(target / rel)
        for rel, content in wanted.items():
            dest = target / rel
            if dest.is_file() and dest.read_bytes() == content:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
            touched.append(dest)
    return touched


def same_tree(a: Path, b: Path) -> bool:
    """True when two chapter folders hold the same files (ignoring run leftovers)."""
    fa, fb = _files(a), _files(b)
    return fa.keys() == fb.keys() and all(filecmp.cmp(fa[k], fb[k], shallow=False) for k in fa)


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*IGNORED, "*.db*"))
