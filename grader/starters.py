"""Generate the learner's starters (`chapters/`) from the finished code (`solutions/`).

In a solution file,

    # TODO 3.1: store the user's message.
    # BEGIN SOLUTION
    ...finished code...
    # END SOLUTION

becomes the TODO comment followed by `raise NotImplementedError("TODO 3.1")` at the same indent,
unless a `# BEGIN STARTER` / `# END STARTER` block of commented lines follows right after: then
those lines, uncommented, are the starter text. Snippet markers for the docs
(`# --8<-- [start:name]`) are dropped. A trailing `# STARTER: text` on a line of code (or of a
STARTER block) becomes `# text` in the starter and disappears from the solution a learner reads:
it marks, for example, an import that only the unfinished TODO uses (`# STARTER: noqa: F401
(TODO 3.1 uses it)`). A plain `# noqa` in the solution would not do: ruff reads it there too,
even in a commented-out line, and flags it as suppressing nothing.

Regenerating never destroys an edit. `chapters/.starters.sha256` (committed with `chapters/`, in
`sha256sum` format) records what the last regeneration wrote, so a file of `chapters/` that is
neither the new starter nor what was written last time was edited by someone: `edited` lists it.
On a fresh clone every file matches the record; a file with no record is only "unedited" when it
already equals the new starter.
"""

from __future__ import annotations

import difflib
import filecmp
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader import REPO_ROOT
from grader.manifest import Chapter, Manifest

TODO_RE = re.compile(r"#\s*TODO\s+(\d+\.\d+)\b")
# Any mention of a TODO, in a comment, a string or a README: each must name its own chapter.
TODO_MENTION_RE = re.compile(r"\bTODO\s+(\d+)\.(\d+)\b")
SNIPPET_RE = re.compile(r"^\s*#\s*--8<--\s*\[(start|end):[\w-]+\]\s*$")
MARKER_RE = re.compile(r"^(\s*)#\s*(BEGIN|END)\s+(SOLUTION|STARTER)\s*$")
STARTER_COMMENT_RE = re.compile(r"^(\s*[^\s#].*?)\s+#\s*STARTER:\s*(.*?)\s*$")
STAMP = Path("chapters") / ".starters.sha256"
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


def _starter_comment(line: str) -> str:
    return STARTER_COMMENT_RE.sub(r"\1  # \2", line)


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
            out.append(_starter_comment(line))
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
                out.append(_starter_comment(_uncomment(lines[k], indent, f"{name}:{k + 1}")))
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
    """A solution file as a learner should read it: no docs regions, markers or STARTER text."""
    lines: list[str] = []
    in_starter = False
    for line in text.splitlines():
        marker = _marker(line)
        if marker is not None:
            in_starter = marker[1:] == ("BEGIN", "STARTER")
            continue
        if not in_starter and not SNIPPET_RE.match(line):
            lines.append(STARTER_COMMENT_RE.sub(r"\1", line))
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(_collapse_blank_runs(lines)) + ("\n" if text.endswith("\n") else "")


def _ignored(rel: Path) -> bool:
    return any(part in IGNORED for part in rel.parts) or rel.name.endswith(IGNORED_SUFFIXES)


def chapter_files(folder: Path) -> dict[Path, Path]:
    """A chapter folder's files, relative path -> path, without what running it leaves behind."""
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
    for rel, path in chapter_files(solution).items():
        if path.suffix == ".py":
            rendered[rel] = transform(path.read_text(encoding="utf-8"), str(path)).encode()
        else:
            rendered[rel] = path.read_bytes()
    return rendered


@dataclass
class Drift:
    path: Path
    diff: str


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _key(chapter: Chapter, rel: Path) -> str:
    return f"{chapter.slug}/{rel.as_posix()}"


def _read_stamp(root: Path) -> dict[str, str]:
    """`chapters/.starters.sha256`: file (relative to chapters/) -> hash of what was written."""
    try:
        text = (root / STAMP).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {key: sha for sha, _, key in (line.partition("  ") for line in text.splitlines())}


def _stamp_text(stamp: dict[str, str]) -> str:
    return "".join(f"{sha}  {key}\n" for key, sha in sorted(stamp.items()))


def _wanted_stamp(manifest: Manifest, root: Path) -> dict[str, str]:
    return {
        _key(chapter, rel): _sha(content)
        for chapter in manifest.chapters
        for rel, content in render(root / "solutions" / chapter.slug).items()
    }


def _line_of(path: Path, pattern: str) -> str:
    """` (line N)` where `pattern` first matches in `path`, or nothing when it does not."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return ""
    n = next((n for n, line in enumerate(lines, 1) if re.match(pattern, line)), None)
    return f" (line {n})" if n else ""


def check_todos(chapter: Chapter, starter: dict[Path, bytes], root: Path) -> list[Drift]:
    """TODO ids both ways: each one the starter mentions belongs to this chapter, and its
    `# TODO N.M` comments are exactly the `todos` its milestones list in workbook.toml."""
    problems: list[Drift] = []
    found: dict[str, tuple[Path, int]] = {}  # each TODO comment's first place
    for rel, content in starter.items():
        shown = Path("chapters") / chapter.slug / rel
        try:
            lines = content.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            continue  # a binary file mentions no TODO
        for n, line in enumerate(lines, 1):
            for m in TODO_MENTION_RE.finditer(line):
                if int(m.group(1)) != chapter.number:
                    problems.append(
                        Drift(
                            shown,
                            f"line {n}: TODO {m.group(1)}.{m.group(2)} is chapter "
                            f"{m.group(1)}'s, not chapter {chapter.number}'s (left over from a "
                            "copied chapter?)",
                        )
                    )
            if rel.suffix == ".py" and (m := TODO_RE.search(line)):
                found.setdefault(m.group(1), (shown, n))
    listed: dict[str, str] = {}  # TODO id -> the first milestone that lists it
    for milestone in chapter.milestones:
        for todo in milestone.todos:
            listed.setdefault(todo, milestone.id)
    for todo, (shown, n) in found.items():
        if todo not in listed and todo.split(".")[0] == str(chapter.number):
            problems.append(
                Drift(
                    shown,
                    f"line {n}: TODO {todo} is in no `todos` of chapter {chapter.number}'s "
                    "milestones in workbook.toml",
                )
            )
    for todo, mid in listed.items():
        if todo not in found:
            line = _line_of(root / "workbook.toml", rf'\s*id\s*=\s*"{re.escape(mid)}"')
            problems.append(
                Drift(
                    Path("workbook.toml"),
                    f"milestone {mid}{line} lists TODO {todo}, but chapters/{chapter.slug} "
                    f"has no `# TODO {todo}` comment",
                )
            )
    return problems


def check(manifest: Manifest, root: Path = REPO_ROOT) -> list[Drift]:
    """Every difference between `chapters/` and what `solutions/` would generate, every TODO id
    out of place, and a stale `chapters/.starters.sha256`."""
    drifts: list[Drift] = []
    for chapter in manifest.chapters:
        wanted = render(root / "solutions" / chapter.slug)
        drifts += check_todos(chapter, wanted, root)
        target = root / "chapters" / chapter.slug
        have = chapter_files(target)
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
    if _read_stamp(root) != _wanted_stamp(manifest, root):
        drifts.append(Drift(STAMP, "does not record the starters solutions/ generates"))
    return drifts


def _selected(manifest: Manifest, only: int | None) -> list[Chapter]:
    return [c for c in manifest.chapters if only is None or c.number == only]


def edited(manifest: Manifest, root: Path = REPO_ROOT, only: int | None = None) -> list[Path]:
    """Files `write` would overwrite or delete that hold edits: in `chapters/` but neither the
    new starter text nor what the last regeneration wrote (per `chapters/.starters.sha256`)."""
    stamp = _read_stamp(root)
    found: list[Path] = []
    for chapter in _selected(manifest, only):
        wanted = render(root / "solutions" / chapter.slug)
        for rel, path in chapter_files(root / "chapters" / chapter.slug).items():
            current = path.read_bytes()
            if current != wanted.get(rel) and stamp.get(_key(chapter, rel)) != _sha(current):
                found.append(path)
    return found


def write(manifest: Manifest, root: Path = REPO_ROOT, only: int | None = None) -> list[Path]:
    """Regenerate `chapters/` (or one chapter), edits included (see `edited`), and record what
    was written in `chapters/.starters.sha256`; returns the files written or removed."""
    touched: list[Path] = []
    stamp = _read_stamp(root) if only is not None else {}
    for chapter in _selected(manifest, only):
        target = root / "chapters" / chapter.slug
        wanted = render(root / "solutions" / chapter.slug)
        for rel in chapter_files(target).keys() - wanted.keys():
            (target / rel).unlink()
            touched.append(target / rel)
        stamp = {k: v for k, v in stamp.items() if not k.startswith(f"{chapter.slug}/")}
        for rel, content in wanted.items():
            stamp[_key(chapter, rel)] = _sha(content)
            dest = target / rel
            if dest.is_file() and dest.read_bytes() == content:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
            touched.append(dest)
    text = _stamp_text(stamp)
    stamp_path = root / STAMP
    if not stamp_path.is_file() or stamp_path.read_text(encoding="utf-8") != text:
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path.write_text(text, encoding="utf-8")
    return touched


def same_tree(a: Path, b: Path) -> bool:
    """True when two chapter folders hold the same files (ignoring run leftovers)."""
    fa, fb = chapter_files(a), chapter_files(b)
    return fa.keys() == fb.keys() and all(filecmp.cmp(fa[k], fb[k], shallow=False) for k in fa)


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*IGNORED, "*.db*"))
