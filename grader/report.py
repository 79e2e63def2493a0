"""The check50-style report: one line per milestone, details under each failure, and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from grader import REPO_ROOT
from grader.manifest import Chapter, Manifest, Milestone
from grader.todos import find_todos


class Status(StrEnum):
    """What became of one milestone. `error` means the grader broke, not the learner's code."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPECTED_FAILURE = "expected_failure"
    UNEXPECTED_PASS = "unexpected_pass"
    ERROR = "error"
    NOT_RUN = "not_run"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def color(self) -> str:
        return _COLORS[self]

    @property
    def is_problem(self) -> bool:
        """Whether this status makes the check exit non-zero."""
        return self in (Status.FAILED, Status.UNEXPECTED_PASS, Status.ERROR)


_SYMBOLS = {
    Status.PENDING: "?",
    Status.PASSED: "✓",
    Status.FAILED: "✗",
    Status.SKIPPED: "–",
    Status.EXPECTED_FAILURE: "◆",
    Status.UNEXPECTED_PASS: "✗",
    Status.ERROR: "!",
    Status.NOT_RUN: "·",
}
_COLORS = {
    Status.PENDING: "0",
    Status.PASSED: "32",
    Status.FAILED: "31",
    Status.SKIPPED: "33",
    Status.EXPECTED_FAILURE: "36",
    Status.UNEXPECTED_PASS: "31",
    Status.ERROR: "35",
    Status.NOT_RUN: "2",
}


@dataclass
class MilestoneResult:
    milestone: Milestone
    docs_url: str
    status: Status = Status.PENDING
    rationale: str = ""
    expected: Any = None
    actual: Any = None
    log: str = ""
    steps: list[str] = field(default_factory=list)
    blocked_by: dict[str, Any] | None = None
    traceback: str = ""  # the grader's own, for maintainers, when status is ERROR
    todo_locations: list[str] = field(default_factory=list)

    @classmethod
    def pending(cls, milestone: Milestone, manifest: Manifest) -> MilestoneResult:
        return cls(milestone, manifest.docs_link(milestone.docs))

    def finish(self, target: Path | None = None) -> None:
        """Settle the final state once every check of the milestone ran."""
        if self.status == Status.PENDING:
            self.status = Status.ERROR
            self.rationale = "no check ran for this milestone (the grader's checks are incomplete)"
        if self.milestone.kind == "demo":
            if self.status == Status.FAILED:
                self.status = Status.EXPECTED_FAILURE
            elif self.status == Status.PASSED:
                self.status = Status.UNEXPECTED_PASS
                self.rationale = (
                    "this demo shows a limit of the chapter's design and should fail here; "
                    "it passed, so the code is not what the chapter describes"
                )
        if self.status == Status.FAILED and target is not None:
            self.todo_locations = find_todos(target, self.milestone.todos)

    def as_dict(self) -> dict[str, Any]:
        m = self.milestone
        return {
            "id": m.id,
            "title": m.title,
            "kind": m.kind,
            "status": str(self.status),
            "rationale": self.rationale,
            "expected": self.expected,
            "actual": self.actual,
            "nudge": m.nudge,
            "lesson": m.lesson,
            "todos": self.todo_locations,
            "log": self.log,
            "steps": self.steps,
            "blocked_by": self.blocked_by,
            "traceback": self.traceback,
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
        return any(r.status.is_problem for r in self.milestones)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.milestones:
            counts[str(r.status)] = counts.get(str(r.status), 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": 2,
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


def _field(label: str, value: Any, max_lines: int = 12) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    lines = text.splitlines() or [""]
    out = [f"    {label + ':':<10}{lines[0]}"]
    out += [f"    {'':<10}{line}" for line in lines[1:max_lines]]
    if len(lines) > max_lines:
        out.append(f"    {'':<10}… ({len(lines) - max_lines} more lines)")
    return out


def _failure(r: MilestoneResult) -> list[str]:
    m = r.milestone
    out = _field("why", r.rationale)
    if r.expected is not None:
        out += _field("expected", r.expected)
    if r.actual is not None:
        out += _field("actual", r.actual)
    for loc in r.todo_locations:
        out += _field("todo", loc)
    if m.nudge:
        out += _field("nudge", m.nudge)
    out += _field("more", f"`grader hint {m.id}` shows a code-level hint")
    if r.steps:
        out.append("    what the grader did:")
        out += [f"      {line}" for line in r.steps[-20:]]
    if r.log.strip():
        out.append("    backend log (last lines):")
        out += [f"      | {line}" for line in r.log.splitlines()[-15:]]
    out += _field("docs", r.docs_url)
    return out


def _error(r: MilestoneResult) -> list[str]:
    out = _field("error", r.rationale)
    out.append("    This is a fault in the grader, not in your code. Please report it with the")
    out.append("    lines below (`grader check --json FILE` writes them all).")
    out += [f"      ! {line}" for line in r.traceback.splitlines()[-12:]]
    return out


def render_header(report: Report, color: bool = False) -> list[str]:
    ch = report.chapter
    return [
        _paint(f"Chapter {ch.number} · {ch.title}", "1", color),
        f"  checking {_shown(report.target)} on {report.db}",
        "",
    ]


def render_milestone(r: MilestoneResult, color: bool = False) -> list[str]:
    """One milestone's lines, once it is settled (`finish()`ed)."""
    m = r.milestone
    symbol = _paint(r.status.symbol, r.status.color, color)
    label = f"{m.id} {'demo: ' if m.kind == 'demo' else ''}{m.title}"
    if r.status == Status.SKIPPED:
        out = [f"{symbol} {label} — {r.rationale}"]
    elif r.status == Status.NOT_RUN:
        out = [f"{symbol} {label} — not run"]
    else:
        out = [f"{symbol} {label}"]
    if r.status == Status.EXPECTED_FAILURE:
        out.append(f"    as expected, this fails: {r.rationale}")
        out.append(f"    lesson:   {m.lesson}")
    elif r.status in (Status.FAILED, Status.UNEXPECTED_PASS):
        out += _failure(r)
    elif r.status == Status.ERROR:
        out += _error(r)
    return out


def render_summary(report: Report, color: bool = False) -> list[str]:
    """The closing lines: what passed, and what to do next."""
    ch = report.chapter
    counts = report.counts()
    exercises = [r for r in report.milestones if r.milestone.kind == "exercise"]
    passed = sum(r.status == Status.PASSED for r in exercises)
    out = [""]
    checked = [r for r in exercises if r.status != Status.NOT_RUN]
    summary = f"{passed} of {len(exercises)} milestones pass"
    if len(checked) < len(exercises):
        summary = f"{passed} of the {len(checked)} milestones checked pass"
    if counts.get(Status.EXPECTED_FAILURE):
        summary += f"; {counts[Status.EXPECTED_FAILURE]} demo(s) failed as expected"
    if counts.get(Status.ERROR):
        summary += f"; the grader broke on {counts[Status.ERROR]}"
    out.append(_paint(summary + ".", "1", color))
    first = next((r for r in report.milestones if r.status == Status.FAILED), None)
    if first is not None:
        out.append(
            f"Next: fix {first.milestone.id} ({first.milestone.title}); "
            f"`grader hint {first.milestone.id}` if you are stuck."
        )
    elif any(r.status == Status.NOT_RUN for r in report.milestones):
        out.append(
            f"Only some milestones were checked: `grader check {ch.number}` checks them all."
        )
    elif not report.has_failures and not any(r.status == Status.SKIPPED for r in report.milestones):
        others = [db for db in ch.databases if db != report.db]
        if others:
            out.append(
                f"Chapter {ch.number} passes on {report.db}. It is done when it passes on "
                f"{' and '.join(others)} too: `grader check {ch.number} --db {others[0]}`."
            )
        else:
            out.append(f"Chapter {ch.number} is done. `grader status` shows what comes next.")
    return out


def render(report: Report, color: bool = False) -> str:
    """The whole report; the plugin prints the same lines piece by piece as checks finish."""
    lines = render_header(report, color)
    for r in report.milestones:
        lines += render_milestone(r, color)
    return "\n".join(lines + render_summary(report, color))
