"""The learner's progress, in `.grader/progress.json` (git-ignored): last result per milestone.

    {"milestones": {"1.4": "passed", "4.1": {"sqlite": "passed", "postgres": "failed"}}, ...}

A chapter that runs on one database keeps one status per milestone. A chapter that lists several
keeps one per database, because it is done only once it passes on every one of them. A plain
status in such a chapter (files written before results were kept per database) counts for the
chapter's first database: sqlite, the one `grader check N` uses unless told otherwise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.manifest import Chapter, Manifest

PROGRESS_DIR = REPO_ROOT / ".grader"
PROGRESS_FILE = PROGRESS_DIR / "progress.json"
# A demo is done when it failed as designed; `error` (the grader broke) is never done.
DONE = ("passed", "expected_failure")


def load() -> dict[str, Any]:
    try:
        data = json.loads(PROGRESS_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(data: dict[str, Any]) -> None:
    PROGRESS_DIR.mkdir(exist_ok=True)
    PROGRESS_FILE.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _per_database(value: Any, databases: tuple[str, ...]) -> dict[str, str]:
    if isinstance(value, str):
        return {databases[0]: value}
    if isinstance(value, dict):
        return {db: s for db, s in value.items() if db in databases and isinstance(s, str)}
    return {}


def results(milestone_id: str, chapter: Chapter, data: dict[str, Any]) -> dict[str, str]:
    """A milestone's last status on each database of its chapter that it was checked on."""
    return _per_database(data.get("milestones", {}).get(milestone_id), chapter.databases)


def record(report: dict[str, Any], databases: tuple[str, ...] = ("sqlite",)) -> None:
    """Keep a report's results; `databases` are those its chapter lists in workbook.toml."""
    data = load()
    states = data.setdefault("milestones", {})
    db = report.get("db", databases[0])
    for m in report["milestones"]:
        if m["status"] == "not_run":
            continue
        if len(databases) == 1:
            states[m["id"]] = m["status"]
        else:
            states[m["id"]] = {**_per_database(states.get(m["id"]), databases), db: m["status"]}
    data["last_check"] = {
        "chapter": report["chapter"],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _save(data)


def forget(chapter: Chapter) -> None:
    """Drop a chapter's results: after `grader reset` they describe code that is gone."""
    data = load()
    states = data.get("milestones", {})
    gone = [m.id for m in chapter.milestones if m.id in states]
    for mid in gone:
        del states[mid]
    if gone:
        _save(data)


def done_on(chapter: Chapter, db: str, data: dict[str, Any]) -> bool:
    return all(results(m.id, chapter, data).get(db) in DONE for m in chapter.milestones)


def chapter_done(chapter: Chapter, data: dict[str, Any]) -> bool:
    return all(done_on(chapter, db, data) for db in chapter.databases)


def current_chapter(manifest: Manifest, data: dict[str, Any] | None = None) -> Chapter:
    """The first chapter not finished yet (the last one when all are)."""
    data = load() if data is None else data
    for chapter in manifest.chapters:
        if not chapter_done(chapter, data):
            return chapter
    return manifest.chapters[-1]


def backup_dir(name: str) -> Path:
    """A new folder name under `.grader/backups/`, never one a backup already uses."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = PROGRESS_DIR / "backups" / f"{name}-{stamp}"
    n = 2
    while path.exists():  # two backups in one second
        path = PROGRESS_DIR / "backups" / f"{name}-{stamp}-{n}"
        n += 1
    return path
