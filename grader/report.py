"""The check50-style report: one line per milestone, details under each failure, and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.manifest import Chapter, Manifest, Milestone
from grader.todos import find_todos

SYMBOLS = {
    "passed": "✓",
    "failed": "✗",
    "skipped": "–",
    "expected_failure": "◆",
    "unexpected_pass": "✗",
    "not_run": "·",
}
COLORS = {
    "passed": "32",
    "failed": "31",
    "skipped": "33",
    "expected_failure": "36",
    "unexpected_pass": "31",
    "not_run": "2",
}


@dataclass
class MilestoneResult:
    milestone: Milestone
    docs_url: str
    status: str = "pending"
    rationale: str = ""
    expected: Any = None
    actual: Any = None
    log: str = ""
    todo_locations: list[str] = field(default_factory=list)

    @classmethod
    def pending(cls, milestone: Milestone, manifest: Manifest) -> MilestoneResult:
        return cls(milestone, manifest.docs_link(milestone.docs))

    def finish(self, target: Path | None = None) -> None:
        """Settle the final state once every check of the milestone ran."""
        if self.status == "pending":
            self.status = "failed"
            self.rationale = "no check ran for this milestone (the grader's checks are incomplete)"
        if self.milestone.kind == "demo":
            if self.status == "failed":
                self.status = "expected_failure"
            elif self.status == "passed":
                self.status = "unexpected_pass"
                self.rationale = (
                    "this demo shows a limit of the chapter's design and should fail here; "
                    "it passed, so the code is not what the chapter describes"
                )
        if self.status == "failed" and target is not None:
            self.todo_locations = find_todos(target, self.milestone.todos)

    def as_dict(self) -> dict[str, Any]:
        m = self.milestone
        return {
            "id": m.id,
            "title": m.title,
            "kind": m.kind,
            "status": self.status,
            "rationale": self.rationale,
            "expected": self.expected,
            "actual": self.actual,
            "hint": m.hint,
            "lesson": m.lesson,
            "todos": self.todo_locations,
            "log": self.log,
            "docs": self.docs_url,
            "depends": list(m.depends),
        }


@dataclass
class Report:
    chapter: Chapter
    target: Path
    db: str
    milestones: list[MilestoneResult]

    @property
    def has_failures(self) -> bool:
        return any(r.status in ("failed", "unexpected_pass") for r in self.milestones)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.milestones:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "chapter": self.chapter.number,
            "slug": self.chapter.slug,
            "target": str(self.target),
            "db": self.db,
            "passed": not self.has_failures,
            "counts": self.counts(),
            "milestones": [r.as_dict() for r in self.milestones],
        }


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _field(label: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    lines = text.splitlines() or [""]
    out = [f"    {label + ':':<10}{lines[0]}"]
    out += [f"    {'':<10}{line}" for line in lines[1:12]]
    if len(lines) > 12:
        out.append(f"    {'':<10}… ({len(lines) - 12} more lines)")
    return out


def render(report: Report, color: bool = False) -> str:
    ch = report.chapter
    out = [
        _paint(f"Chapter {ch.number} · {ch.title}", "1", color),
        f"  checking {_shown(report.target)} on {report.db}",
        "",
    ]
    for r in report.milestones:
        m = r.milestone
        symbol = _paint(SYMBOLS.get(r.status, "?"), COLORS.get(r.status, "0"), color)
        label = f"{m.id} {'demo: ' if m.kind == 'demo' else ''}{m.title}"
        if r.status == "skipped":
            out.append(f"{symbol} {label} — {r.rationale}")
            continue
        if r.status == "not_run":
            out.append(f"{symbol} {label} — not run")
            continue
        out.append(f"{symbol} {label}")
        if r.status == "expected_failure":
            out.append(f"    as expected, this fails: {r.rationale}")
            out.append(f"    lesson:   {m.lesson}")
            continue
        if r.status not in ("failed", "unexpected_pass"):
            continue
        out += _field("why", r.rationale)
        if r.expected is not None:
            out += _field("expected", r.expected)
        if r.actual is not None:
            out += _field("actual", r.actual)
        for loc in r.todo_locations:
            out += _field("todo", loc)
        out += _field("hint", m.hint)
        if r.log.strip():
            out.append("    backend log (last lines):")
            out += [f"      | {line}" for line in r.log.splitlines()[-15:]]
        out += _field("docs", r.docs_url)
    counts = report.counts()
    exercises = [r for r in report.milestones if r.milestone.kind == "exercise"]
    passed = sum(r.status == "passed" for r in exercises)
    out.append("")
    summary = f"{passed} of {len(exercises)} milestones pass"
    if counts.get("expected_failure"):
        summary += f"; {counts['expected_failure']} demo(s) failed as expected"
    out.append(_paint(summary + ".", "1", color))
    first = next((r for r in report.milestones if r.status == "failed"), None)
    if first is not None:
        out.append(
            f"Next: fix {first.milestone.id} ({first.milestone.title}); "
            f"`grader hint {first.milestone.id}` repeats its hint."
        )
    elif not report.has_failures and not any(r.status == "skipped" for r in report.milestones):
        out.append(f"Chapter {ch.number} is done. `grader status` shows what comes next.")
    return "\n".join(out)
