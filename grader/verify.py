"""`grader dev verify`: the maintainer's proof that the workbook holds together.

The manifest loads, the starters are in sync with the solutions, every solution passes every
exercise milestone on every database its chapter supports (and fails its demos, as designed), and
every starter fails each milestone that needs one of its TODOs, naming the TODO.
"""

from __future__ import annotations

import os
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
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for job in pool.map(lambda j: _run(j, require_all), todo):
            ok = not job.problems
            failed += not ok
            label = f"chapter {job.chapter.number} {job.variant:<8} on {job.db:<8}"
            print(f"{'✓' if ok else '✗'} {label} ({job.seconds:.1f} s)")
            for w in job.warnings:
                print(f"    warning: {w}")
            for p in job.problems:
                print(f"    {p}")
            if not ok and job.run is not None:
                print("    --- the grader's report ---")
                print("\n".join(f"    {line}" for line in job.run.output.splitlines()))
    if failed:
        print(f"\n✗ verify: {failed} of {len(todo)} runs have problems")
        return 1
    print(f"\n✓ verify: {len(todo)} runs, all as designed")
    return 0
