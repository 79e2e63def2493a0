"""`grader`: the learner's and the maintainer's command line."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from grader import REPO_ROOT, progress, starters
from grader.checking import run_checks
from grader.manifest import Chapter, Manifest, ManifestError, load

SYMBOLS = {"passed": "✓", "failed": "✗", "skipped": "–", "expected_failure": "◆"}


def _chapter(manifest: Manifest, number: int | None) -> Chapter:
    if number is None:
        return progress.current_chapter(manifest)
    try:
        return manifest.chapter(number)
    except KeyError as exc:
        raise SystemExit(f"grader: {exc.args[0]}") from None


def _target(chapter: Chapter, solution: bool, target: str | None) -> Path:
    if target:
        path = Path(target).resolve()
        if not (path / "backend" / "main.py").is_file():
            raise SystemExit(f"grader: {path} has no backend/main.py; is it a chapter folder?")
        return path
    return REPO_ROOT / ("solutions" if solution else "chapters") / chapter.slug


def cmd_status(manifest: Manifest, args: argparse.Namespace) -> int:
    data = progress.load()
    states = data.get("milestones", {})
    current = progress.current_chapter(manifest, data)
    width = max(len(f"{c.number}. {c.title}") for c in manifest.chapters)
    for chapter in manifest.chapters:
        done = sum(states.get(m.id) in ("passed", "expected_failure") for m in chapter.milestones)
        total = len(chapter.milestones)
        bar = "█" * round(10 * done / total) + "░" * (10 - round(10 * done / total))
        pointer = "→" if chapter is current else " "
        marks = " ".join(f"{SYMBOLS.get(states.get(m.id), '·')}{m.id}" for m in chapter.milestones)
        name = f"{chapter.number}. {chapter.title}"
        print(f"{pointer} {name:<{width}}  {bar} {done}/{total}  {marks}")
    print()
    if progress.chapter_done(current, data):
        print("Every chapter is done. Well played.")
    else:
        print(
            f"Next: chapter {current.number}. Read chapters/{current.slug}/README.md, then run "
            f"`grader check {current.number}` (or `grader watch {current.number}`)."
        )
    return 0


def cmd_check(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    target = _target(chapter, args.solution, args.target)
    if args.db not in chapter.databases:
        raise SystemExit(
            f"grader: chapter {chapter.number} runs on {', '.join(chapter.databases)}, "
            f"not {args.db}"
        )
    run = run_checks(
        chapter,
        target,
        db=args.db,
        json_path=Path(args.json).resolve() if args.json else None,
        require_all=args.require_all,
    )
    if run.report is None:
        print(f"grader: the checks did not produce a report (pytest exit code {run.returncode})")
        return run.returncode or 1
    if target == REPO_ROOT / "chapters" / chapter.slug:
        progress.record(run.report)
    return run.returncode


def cmd_hint(manifest: Manifest, args: argparse.Namespace) -> int:
    try:
        m = manifest.milestone(args.milestone)
    except (KeyError, ValueError):
        raise SystemExit(f"grader: no milestone {args.milestone!r}; try `grader status`") from None
    print(f"{m.id} {m.title}\n\nhint: {m.hint}\ndocs: {manifest.docs_link(m.docs)}")
    return 0


def cmd_reset(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    folder = REPO_ROOT / "chapters" / chapter.slug
    if not args.yes:
        answer = input(
            f"Restore chapters/{chapter.slug} to its starter? Your code is backed up first. [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing changed.")
            return 1
    backup = progress.backup_dir(chapter.slug)
    if folder.exists():
        starters.copy_tree(folder, backup)
        print(f"Backed up your code to {backup.relative_to(REPO_ROOT)}")
    starters.write(manifest, only=chapter.number)
    print(f"chapters/{chapter.slug} is back to its starter.")
    return 0


def cmd_solution(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    data = progress.load()
    if not progress.chapter_done(chapter, data) and not args.force:
        print(
            f"Chapter {chapter.number}'s solution opens once `grader check {chapter.number}` "
            "passes; working it out is the point. (`--force` shows it anyway.)"
        )
        return 1
    mine = REPO_ROOT / "chapters" / chapter.slug
    theirs = REPO_ROOT / "solutions" / chapter.slug
    print(f"The solution is in solutions/{chapter.slug}/. Differences from your code:\n")
    for path in sorted(theirs.rglob("*.py")):
        rel = path.relative_to(theirs)
        ours = mine / rel
        a = ours.read_text(encoding="utf-8").splitlines() if ours.exists() else []
        b = starters.clean_solution(path.read_text(encoding="utf-8")).splitlines()
        for line in difflib.unified_diff(a, b, f"yours/{rel}", f"solution/{rel}", lineterm=""):
            print(line)
    return 0


def cmd_starters(manifest: Manifest, args: argparse.Namespace) -> int:
    try:
        if args.check:
            drifts = starters.check(manifest)
            for d in drifts:
                print(f"{d.path}: {d.diff}")
            if drifts:
                print("chapters/ differs from what solutions/ generates: run `grader starters`.")
                return 1
            print("chapters/ is in sync with solutions/.")
            return 0
        touched = starters.write(manifest)
    except starters.StarterError as exc:
        raise SystemExit(f"grader: {exc}") from None
    print(f"regenerated chapters/ ({len(touched)} file(s) changed)")
    return 0


def cmd_watch(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.watch import watch

    chapter = _chapter(manifest, args.chapter)
    return watch(chapter, _target(chapter, False, args.target), poll=args.poll, db=args.db)


def cmd_run(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.runner import run_app

    chapter = _chapter(manifest, args.chapter)
    return run_app(chapter, _target(chapter, args.solution, args.target), args)


def cmd_verify(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.verify import verify

    return verify(manifest, databases=args.db, chapters=args.chapters, jobs=args.jobs)


def cmd_db(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.dbservers import db_command

    return db_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader", description="Check your workbook chapters, get hints, run the app."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="chapters, progress and what to do next")

    p = sub.add_parser("check", help="run a chapter's milestone checks")
    p.add_argument("chapter", type=int, nargs="?")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--solution", action="store_true", help="check solutions/ instead")
    where.add_argument("--target", help="check any folder laid out like a chapter")
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgres", "mysql"))
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--require-all", action="store_true", help="a check that cannot run fails")

    p = sub.add_parser("watch", help="re-check a chapter on every save")
    p.add_argument("chapter", type=int, nargs="?")
    p.add_argument("--target")
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgres", "mysql"))
    p.add_argument("--poll", action="store_true", help="poll for changes (WSL, network drives)")

    p = sub.add_parser("hint", help="the hint of one milestone")
    p.add_argument("milestone", help="e.g. 3.2")

    p = sub.add_parser("reset", help="restore a chapter's starter (keeps a backup)")
    p.add_argument("chapter", type=int)
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = sub.add_parser("solution", help="where the solution is, and a diff against your code")
    p.add_argument("chapter", type=int, nargs="?")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("run", help="start a chapter's backend and frontend")
    p.add_argument("chapter", type=int, nargs="?")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--solution", action="store_true")
    where.add_argument("--target")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgres", "mysql"))
    p.add_argument("--backend-port", type=int, default=8000)
    p.add_argument("--frontend-port", type=int, default=8501)

    p = sub.add_parser("db", help="start or stop a local Postgres or MariaDB server for `--db`")
    p.add_argument("action", choices=("up", "down", "status", "wait"))
    p.add_argument("kind", nargs="?", choices=("postgres", "mysql"))
    p.add_argument("--port", type=int, help="default 5433 (postgres) or 3307 (mysql)")
    p.add_argument("--purge", action="store_true", help="with down: also delete the data")
    p.add_argument("--url", help="with wait: the database to wait for (default: DATABASE_URL)")
    p.add_argument("--timeout", type=float, default=60, help="with wait: seconds (default 60)")

    p = sub.add_parser("verify", help="maintainers: solutions pass, starters fail, all in sync")
    p.add_argument("--db", action="append", choices=("sqlite", "postgres", "mysql"))
    p.add_argument("--chapter", dest="chapters", type=int, action="append")
    p.add_argument("--jobs", type=int, default=2, help="checks run at once")

    p = sub.add_parser("starters", help="regenerate chapters/ from solutions/")
    p.add_argument("--check", action="store_true", help="only report differences")
    return parser


COMMANDS = {
    "status": cmd_status,
    "check": cmd_check,
    "watch": cmd_watch,
    "hint": cmd_hint,
    "reset": cmd_reset,
    "solution": cmd_solution,
    "run": cmd_run,
    "db": cmd_db,
    "verify": cmd_verify,
    "starters": cmd_starters,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = load()
    except ManifestError as exc:
        print(f"grader: {exc}", file=sys.stderr)
        return 2
    command = COMMANDS[args.command or "status"]
    try:
        return command(manifest, args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `grader solution 3 | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
