"""The learner's progress, in `.grader/progress.json` (git-ignored): last result per milestone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.manifest import Chapter, Manifest

PROGRESS_DIR = REPO_ROOT / ".grader"
PROGRESS_FILE = PROGRESS_DIR / "progress.json"


def load() -> dict[str, Any]:
    try:
        return json.loads(PROGRESS_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record(report: dict[str, Any]) -> None:
    data = load()
    data.setdefault("milestones", {})
    for m in report["milestones"]:
        if m["status"] != "not_run":
            data["milestones"][m["id"]] = m["status"]
    data["last_check"] = {
        "chapter": report["chapter"],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    PROGRESS_DIR.mkdir(exist_ok=True)
    PROGRESS_FILE.write_text(json.dumps(data, indent=2), encoding="utf-8")


def chapter_done(chapter: Chapter, data: dict[str, Any]) -> bool:
    states = data.get("milestones", {})
    return all(states.get(m.id) in ("passed", "expected_failure") for m in chapter.milestones)


def current_chapter(manifest: Manifest, data: dict[str, Any] | None = None) -> Chapter:
    """The first chapter not finished yet (the last one when all are)."""
    data = load() if data is None else data
    for chapter in manifest.chapters:
        if not chapter_done(chapter, data):
            return chapter
    return manifest.chapters[-1]


def backup_dir(slug: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return PROGRESS_DIR / "backups" / f"{slug}-{stamp}"
