"""`grader dev verify`: the maintainer's proof that the workbook holds together.

The manifest loads, the starters are in sync with the solutions, every solution passes every
exercise milestone on every database its chapter supports (and fails its demos, as designed), and
every starter fails each milestone that needs one of its TODOs, naming the TODO.

On a terminal, Rich shows the runs going (chapter, variant, database, elapsed time) while the
result lines scroll above them; anywhere else (CI logs, pipes) it prints the same lines plain, one
per finished run, with no control codes.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grader import REPO_ROOT, starters
from grader.checking import CheckRun, run_checks
from grader.manifest import Chapter, Manifest


@dataclass
class Job:
    chapter: Chapter
    db: str
    variant: str  # "solution" or "starter"
    run: CheckRun | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _judge_solution(job: Job, results: dict[str, dict[str, Any]]) -> None:
    for m in job.chapter.milestones:
        status = results[m.id]["status"]
        want = "expected_failure" if m.kind == "demo" else "passed"
        if status == "skipped" and not results[m.id]["blocked_by"]:
            job.warnings.append(f"{m.id} skipped: {results[m.id]['rationale']}")
        elif status != want:
            job.problems.append(
                f"{m.id} is {status}, expected {want}: {results[m.id]['rationale']}"
            )


def _judge_starter(job: Job, results: dict[str, dict[str, Any]]) -> None:
    for m in job.chapter.milestones:
        r = results[m.id]
        if m.kind == "demo":
            continue
        if m.todos:
            if r["status"] == "failed":
                if not r["todos"]:
                    job.problems.append(
                        f"{m.id} fails but its TODO {m.todos} is not in the starter"
                    )
            elif not (r["status"] == "skipped" and r["blocked_by"]):
                job.problems.append(
                    f"{m.id} needs TODO {', '.join(m.todos)} but the starter got {r['status']}"
                )
        elif r["status"] != "passed":
            job.problems.append(
                f"{m.id} has no TODO, so the starter must pass it; it is {r['status']}: "
                f"{r['rationale']}"
            )


def _run(job: Job, require_all: bool) -> Job:
    start = time.monotonic()
    target = (
        REPO_ROOT / ("solutions" if job.variant == "solution" else "chapters") / job.chapter.slug
    )
    job.run = run_checks(job.chapter, target, db=job.db, require_all=require_all, capture=True)
    job.seconds = time.monotonic() - start
    if job.run.report is None:
        job.problems.append(f"no report (exit {job.run.returncode})")
        return job
    results = {m["id"]: m for m in job.run.report["milestones"]}
    (_judge_solution if job.variant == "solution" else _judge_starter)(job, results)
    if job.variant == "solution" and job.run.returncode != 0 and not job.problems:
        job.problems.append(f"the check exited {job.run.returncode}")
    if job.variant == "starter" and job.run.returncode == 0:
        job.problems.append("the starter's check exited 0; it must fail")
    return job


def _label(job: Job) -> str:
    return f"chapter {job.chapter.number} {job.variant:<8} on {job.db:<8}"


class _Plain:
    """Where the result lines go when stdout is not a terminal: plain `print`, nothing live."""

    def __enter__(self) -> _Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, job: Job) -> None:
        pass

    def finished(self, job: Job) -> None:
        pass

    def print(self, line: str) -> None:
        print(line, flush=True)


class _Live(_Plain):
    """On a terminal: one live row per running run and one for the whole verify (Rich)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(markup=False, emoji=False, highlight=False)
        # transient: the rows vanish at the end, leaving exactly the plain lines above them
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.total, self.done = total, 0
        self.overall = self.progress.add_task(self._summary(), total=None)
        self.rows: dict[int, Any] = {}

    def _summary(self) -> str:
        return f"verify: {self.done} of {self.total} runs finished"

    def __enter__(self) -> _Live:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def started(self, job: Job) -> None:
        self.rows[id(job)] = self.progress.add_task(_label(job).rstrip(), total=None)

    def finished(self, job: Job) -> None:
        self.progress.remove_task(self.rows.pop(id(job)))
        self.done += 1
        self.progress.update(self.overall, description=self._summary())
        self.progress.refresh()  # before its line is printed under rows that are out of date

    def print(self, line: str) -> None:
        from rich.text import Text

        text = Text(line)
        if line[:1] in ("✓", "✗"):
            text.stylize("green" if line[0] == "✓" else "red", 0, 1)
        self.console.print(text, soft_wrap=True)


def _on_terminal() -> bool:
    try:
        return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


def verify(
    manifest: Manifest,
    databases: list[str] | None = None,
    chapters: list[int] | None = None,
    jobs: int = 2,
) -> int:
    print(f"✓ workbook.toml: {len(manifest.chapters)} chapters")

    def concerns(path: str, numbers: list[int]) -> bool:
        return any(f"/{manifest.chapter(n).slug}/" in f"/{path}" for n in numbers)

    every = [c.number for c in manifest.chapters]
    # With --chapter: that chapter's drifts, and those of no chapter (the manifest, the record).
    drifts = [
        d
        for d in starters.check(manifest)
        if not chapters or concerns(d.path, chapters) or not concerns(d.path, every)
    ]
    if drifts:
        for d in drifts:
            print(f"✗ {d.path}: {d.diff}")
        print("✗ starters are out of sync with solutions/: run `grader dev starters`")
        return 1
    print("✓ chapters/ is in sync with solutions/")
    require_all = bool(os.environ.get("CI"))
    todo = [
        Job(chapter, db, variant)
        for chapter in manifest.chapters
        if not chapters or chapter.number in chapters
        for db in chapter.databases
        if not databases or db in databases
        for variant in ("solution", "starter")
    ]
    failed = 0
    out = _Live(len(todo)) if _on_terminal() else _Plain()
    with out, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:

        def run(job: Job) -> Job:
            out.started(job)
            try:
                return _run(job, require_all)
            finally:
                out.finished(job)

        # In the order of `todo`, each as soon as it and those before it have finished.
        for job in pool.map(run, todo):
            ok = not job.problems
            failed += not ok
            out.print(f"{'✓' if ok else '✗'} {_label(job)} ({job.seconds:.1f} s)")
            for w in job.warnings:
                out.print(f"    warning: {w}")
            for p in job.problems:
                out.print(f"    {p}")
            if not ok and job.run is not None:
                out.print("    --- the grader's report ---")
                for line in job.run.output.splitlines():
                    out.print(f"    {line}")
    if failed:
        print(f"\n✗ verify: {failed} of {len(todo)} runs have problems")
        return 1
    print(f"\n✓ verify: {len(todo)} runs, all as designed")
    return 0
