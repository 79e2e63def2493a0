"""Find where a TODO lives in a learner's chapter, so a failure can point at the line."""

from __future__ import annotations

import re
from pathlib import Path


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
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            m = pattern.search(line)
            if m:
                rel = path.relative_to(chapter_dir)
                found.append(f"TODO {m.group(1)} in {rel}:{n + 1} — {m.group(2).strip()}")
    return found
