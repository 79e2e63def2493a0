"""Find where a TODO lives in a learner's chapter, so a failure can point at it, whole."""

from __future__ import annotations

import re
from pathlib import Path

_CONTINUED = re.compile(r"^\s*#\s?(.*)$")
_NOT_PROSE = re.compile(r"^\s*#\s*(BEGIN|END)\s+(SOLUTION|STARTER)|^\s*#\s*--8<--|^\s*#\s*TODO\b")


def _comment_from(lines: list[str], start: int, first: str) -> str:
    """The TODO's text: its own line and the comment lines that continue it, joined."""
    words = [first]
    for line in lines[start + 1 :]:
        match = _CONTINUED.match(line)
        if not match or _NOT_PROSE.match(line) or not match.group(1).strip():
            break
        words.append(match.group(1).strip())
    return " ".join(w for w in words if w)


def find_todos(chapter_dir: Path, todo_ids: tuple[str, ...] | list[str]) -> list[str]:
    """`["TODO 3.1 in backend/store.py:41 — store the user's message ..."]` for each id found."""
    found: list[str] = []
    if not todo_ids:
        return found
    pattern = re.compile(
        r"#\s*TODO\s+(" + "|".join(re.escape(t) for t in todo_ids) + r")\b:?\s*(.*)"
    )
    for path in sorted(chapter_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines):
            m = pattern.search(line)
            if m:
                rel = path.relative_to(chapter_dir)
                text = _comment_from(lines, n, m.group(2).strip())
                found.append(f"TODO {m.group(1)} in {rel}:{n + 1} — {text}")
    return found
