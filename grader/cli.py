"""`grader`: the learner's and the maintainer's command line."""

from __future__ import annotations

import argparse
import difflib
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from grader import REPO_ROOT, progress, starters
from grader.checking import run_checks
from grader.manifest import DATABASE_KINDS, Chapter, Manifest, ManifestError, load
from grader.report import Status


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


def _mark(statuses: list[str | None]) -> str:
    """One mark for several results: done only when all are, else the worst of them."""
    if all(s in progress.DONE for s in statuses):
        return Status(str(statuses[0])).symbol
    worst = ("error", "failed", "unexpected_pass", "skipped")
    return next((Status(s).symbol for s in worst if s in statuses), Status.NOT_RUN.symbol)


def _next_step(current: Chapter, data: dict[str, Any]) -> str:
    passed = [db for db in current.databases if progress.done_on(current, db, data)]
    if not passed:
        return (
            f"Next: chapter {current.number}. Read chapters/{current.slug}/README.md, then run "
            f"`grader check {current.number}` (or `grader watch {current.number}`)."
        )
    missing = [db for db in current.databases if db not in passed]
    first = missing[0]
    if first == "sqlite":
        command = f"`grader check {current.number}`"
    else:
        command = (
            f"`grader check {current.number} --db {first}` (`grader db up {first}` starts a server)"
        )
    return (
        f"Next: chapter {current.number} passes on {', '.join(passed)}; it is done once it "
        f"passes on {' and '.join(missing)} too: {command}."
    )


def cmd_status(manifest: Manifest, args: argparse.Namespace) -> int:
    data = progress.load()
    current = progress.current_chapter(manifest, data)
    width = max(len(f"{c.number}. {c.title}") for c in manifest.chapters)
    for chapter in manifest.chapters:
        # A chapter on several databases is done once every milestone passes on every one.
        results = {m.id: progress.results(m.id, chapter, data) for m in chapter.milestones}
        done = sum(
            results[m.id].get(db) in progress.DONE
            for m in chapter.milestones
            for db in chapter.databases
        )
        total = len(chapter.milestones) * len(chapter.databases)
        bar = "█" * round(10 * done / total) + "░" * (10 - round(10 * done / total))
        pointer = "→" if chapter is current else " "
        marks = " ".join(
            f"{_mark([results[m.id].get(db) for db in chapter.databases])}{m.id}"
            for m in chapter.milestones
        )
        if len(chapter.databases) > 1:
            marks += "   " + "  ".join(
                f"{db} {_mark([results[m.id].get(db) for m in chapter.milestones])}"
                for db in chapter.databases
            )
        name = f"{chapter.number}. {chapter.title}"
        print(f"{pointer} {name:<{width}}  {bar} {done}/{total}  {marks}")
    print()
    if all(progress.chapter_done(c, data) for c in manifest.chapters):
        print("Every chapter is done. Well played.")
    else:
        print(_next_step(current, data))
    return 0


def cmd_check(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    target = _target(chapter, args.solution, args.target)
    if args.db not in chapter.databases:
        raise SystemExit(
            f"grader: chapter {chapter.number} runs on {', '.join(chapter.databases)}, "
            f"not {args.db}"
        )
    known = {m.id for m in chapter.milestones}
    if strangers := [m for m in args.milestone if m not in known]:
        raise SystemExit(
            f"grader: chapter {chapter.number} has no milestone {', '.join(strangers)}; its "
            f"milestones are {', '.join(sorted(known))}"
        )
    run = run_checks(
        chapter,
        target,
        db=args.db,
        json_path=Path(args.json).resolve() if args.json else None,
        require_all=args.require_all,
        extra=[f"--milestone={m}" for m in args.milestone],
    )
    if run.report is None:
        print(f"grader: the checks did not produce a report (pytest exit code {run.returncode})")
        return run.returncode or 1
    if target == REPO_ROOT / "chapters" / chapter.slug:
        progress.record(run.report, chapter.databases)
    return run.returncode


def cmd_hint(manifest: Manifest, args: argparse.Namespace) -> int:
    try:
        m = manifest.milestone(args.milestone)
    except (KeyError, ValueError):
        raise SystemExit(f"grader: no milestone {args.milestone!r}; try `grader status`") from None
    print(f"{m.id} {m.title}\n\nhint: {m.hint}\ndocs: {manifest.docs_link(m.docs)}")
    return 0


def _shown(path: Path) -> str:
    """`path` as a shell argument that works from here: relative when under the current folder."""
    here = Path.cwd()
    return shlex.quote(str(path.relative_to(here) if path.is_relative_to(here) else path))


def cmd_reset(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    folder = REPO_ROOT / "chapters" / chapter.slug
    if not args.yes:
        if sys.stdin is None or not sys.stdin.isatty():
            print(
                f"grader: there is no terminal to ask whether to reset chapter {chapter.number}, "
                f"so nothing changed. To reset it anyway (your code is backed up first): "
                f"grader reset {chapter.number} --yes",
                file=sys.stderr,
            )
            return 2
        try:
            answer = input(
                f"Restore chapters/{chapter.slug} to its starter? "
                "Your code is backed up first. [y/N] "
            )
        except EOFError:  # Ctrl-D at the question
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing changed.")
            return 1
    backup = progress.backup_dir(chapter.slug)
    if folder.exists():
        starters.copy_tree(folder, backup)
        print(f"Backed up your code to {backup.relative_to(REPO_ROOT)}")
    starters.write(manifest, only=chapter.number)
    # The old results describe code that is gone: the chapter starts over in `grader status`.
    progress.forget(chapter)
    print(f"chapters/{chapter.slug} is back to its starter.")
    print("Its results in `grader status` are cleared: they described the code you had.")
    if backup.exists():
        print(f"To get your code back: cp -r {_shown(backup)}/. {_shown(folder)}/")
    return 0


def cmd_solution(manifest: Manifest, args: argparse.Namespace) -> int:
    chapter = _chapter(manifest, args.chapter)
    data = progress.load()
    if not progress.chapter_done(chapter, data) and not args.force:
        where = f" on {', '.join(chapter.databases)}" if len(chapter.databases) > 1 else ""
        print(
            f"Chapter {chapter.number}'s solution opens once `grader check {chapter.number}` "
            f"passes{where}; working it out is the point. (`--force` shows it anyway.)"
        )
        return 1
    mine = REPO_ROOT / "chapters" / chapter.slug
    theirs = REPO_ROOT / "solutions" / chapter.slug
    diff: list[str] = []
    for path in sorted(theirs.rglob("*.py")):
        rel = path.relative_to(theirs)
        ours = mine / rel
        a = ours.read_text(encoding="utf-8").splitlines() if ours.exists() else []
        b = starters.clean_solution(path.read_text(encoding="utf-8")).splitlines()
        diff += difflib.unified_diff(a, b, f"yours/{rel}", f"solution/{rel}", lineterm="")
    if not diff:
        print(
            f"The solution is in solutions/{chapter.slug}/. Your code is the same as the solution."
        )
        return 0
    print(f"The solution is in solutions/{chapter.slug}/. Differences from your code:\n")
    print("\n".join(diff))
    return 0


def _check_starters(manifest: Manifest) -> int:
    drifts = starters.check(manifest)
    for d in drifts:
        print(f"{d.path}: {d.diff}")
    if drifts:
        print(
            "chapters/ is not what solutions/ generates (TODO ids must also match workbook.toml): "
            "fix solutions/ or workbook.toml, then run `grader dev starters`."
        )
        return 1
    print("chapters/ is in sync with solutions/.")
    return 0


def cmd_dev_starters(manifest: Manifest, args: argparse.Namespace) -> int:
    try:
        if args.check:
            return _check_starters(manifest)
        edited = starters.edited(manifest)
        if edited and not args.force:
            print("grader: these files of chapters/ hold edits (they are not what was generated):")
            for path in edited:
                print(f"  {path.relative_to(REPO_ROOT)}")
            print(
                "Nothing changed. `grader dev starters --force` backs them up under "
                ".grader/backups/, then regenerates."
            )
            return 1
        if edited:
            backup = progress.backup_dir("starters")
            for path in edited:
                dest = backup / path.relative_to(REPO_ROOT / "chapters")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            print(f"Backed up {len(edited)} edited file(s) to {backup.relative_to(REPO_ROOT)}/")
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


def cmd_load(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.loadrun import load_command

    chapter = _chapter(manifest, args.chapter)
    return load_command(chapter, _target(chapter, args.solution, args.target), args)


def cmd_dev_verify(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.verify import verify

    return verify(manifest, databases=args.db, chapters=args.chapters, jobs=args.jobs)


def cmd_dev_new(manifest: Manifest, args: argparse.Namespace) -> int:
    from grader.scaffold import ScaffoldError, new_chapter

    try:
        written = new_chapter(manifest, args.number, args.slug)
    except (ScaffoldError, starters.StarterError) as exc:
        raise SystemExit(f"grader: {exc}") from None
    print(f"Scaffolded chapter {args.number}:")
    for path in written:
        print(f"  {path.relative_to(REPO_ROOT)}")
    print(
        f"Next: write its milestones in workbook.toml, its exercises (TODO {args.number}.1 is a "
        f"placeholder) in solutions/, its checks in grader/checks/ch{args.number:02d}.py and its "
        "page in docs/chapters/; then `grader dev starters` and `grader dev verify`."
    )
    return 0


def cmd_dev(manifest: Manifest, args: argparse.Namespace) -> int:
    return DEV_COMMANDS[args.dev_command](manifest, args)


def cmd_db(manifest: Manifest, args: argparse.Namespace) -> int:
    if args.action == "show":
        from grader.dbservers.show import show_command

        folder = REPO_ROOT / "chapters" / _chapter(manifest, args.chapter).slug
        return show_command(args.thread_id, db=args.db, chapter_dir=folder, url=args.url)
    from grader.dbservers.cli import db_command

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
    p.add_argument("--db", default="sqlite", choices=DATABASE_KINDS)
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--require-all", action="store_true", help="a check that cannot run fails")
    p.add_argument(
        "--milestone",
        action="append",
        default=[],
        metavar="N.K",
        help="only this milestone and those it depends on (repeatable)",
    )

    p = sub.add_parser("watch", help="re-check a chapter on every save")
    p.add_argument("chapter", type=int, nargs="?")
    p.add_argument("--target")
    p.add_argument("--db", default="sqlite", choices=DATABASE_KINDS)
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
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="start this many backends behind nginx, which listens on --backend-port",
    )
    p.add_argument("--db", default="sqlite", choices=DATABASE_KINDS)
    p.add_argument("--backend-port", type=int, default=8000)
    p.add_argument("--frontend-port", type=int, default=8501)

    p = sub.add_parser(
        "load", help="many users chatting at once, then an audit of every thread they wrote"
    )
    p.add_argument("chapter", type=int, nargs="?")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--solution", action="store_true")
    where.add_argument("--target")
    where.add_argument("--url", help="load a deployment already running there instead")
    p.add_argument("--users", type=int, default=20, help="simulated users chatting at once")
    p.add_argument("--seconds", type=float, default=10, help="how long the load lasts")
    p.add_argument("--instances", type=int, default=1, help="backends, behind nginx if > 1")
    p.add_argument("--db", default="sqlite", choices=DATABASE_KINDS)
    p.add_argument(
        "--shared-threads",
        type=int,
        default=0,
        help="send every user's turns to this many threads (0: each user its own threads)",
    )
    p.add_argument("--max-turns", type=int, default=50_000, help="stop after this many turns")
    p.add_argument("--json", help="write the run and its audit as JSON to this file")

    db = sub.add_parser(
        "db", help="a local Postgres or MariaDB server for `--db`; a thread's rows as stored"
    )
    dbsub = db.add_subparsers(dest="action", metavar="{up,down,status,wait,show}", required=True)
    servers = ("postgres", "mysql")
    p = dbsub.add_parser("up", help="start a local server (Debian/Ubuntu binaries)")
    p.add_argument("kind", nargs="?", choices=servers)
    p.add_argument("--port", type=int, help="default 5433 (postgres) or 3307 (mysql)")
    p = dbsub.add_parser("down", help="stop the server `grader db up` started")
    p.add_argument("kind", nargs="?", choices=servers)
    p.add_argument("--purge", action="store_true", help="also delete its data")
    p = dbsub.add_parser("status", help="which servers run, and their DATABASE_URL")
    p.add_argument("kind", nargs="?", choices=servers)
    p = dbsub.add_parser("wait", help="wait until a database answers (for containers)")
    p.add_argument("--url", help="the database to wait for (default: DATABASE_URL)")
    p.add_argument("--timeout", type=float, default=60, help="seconds (default 60)")
    p = dbsub.add_parser("show", help="a thread's rows as the database holds them")
    p.add_argument("thread_id", help="the thread's id (a UUID)")
    p.add_argument(
        "--db", default="sqlite", choices=DATABASE_KINDS, help="the database of `grader run --db`"
    )
    p.add_argument("--url", help="read this database instead (a SQLAlchemy URL)")
    p.add_argument("--chapter", type=int, help="whose SQLite file (default: your current chapter)")

    dev = sub.add_parser("dev", help="maintainers: regenerate starters, verify, add a chapter")
    devsub = dev.add_subparsers(dest="dev_command", metavar="{starters,verify,new}", required=True)
    p = devsub.add_parser("starters", help="regenerate chapters/ from solutions/")
    p.add_argument(
        "--check", action="store_true", help="only report differences and TODO mismatches"
    )
    p.add_argument("--force", action="store_true", help="back up edited files, then overwrite them")

    p = devsub.add_parser("verify", help="solutions pass, starters fail, all in sync")
    p.add_argument("--db", action="append", choices=DATABASE_KINDS)
    p.add_argument("--chapter", dest="chapters", type=int, action="append")
    p.add_argument("--jobs", type=int, default=2, help="checks run at once")

    p = devsub.add_parser("new", help="scaffold the next chapter")
    p.add_argument("number", type=int)
    p.add_argument("slug", help="e.g. scale-out (the folder becomes NN-scale-out)")
    return parser


COMMANDS = {
    "status": cmd_status,
    "check": cmd_check,
    "watch": cmd_watch,
    "hint": cmd_hint,
    "reset": cmd_reset,
    "solution": cmd_solution,
    "run": cmd_run,
    "load": cmd_load,
    "db": cmd_db,
    "dev": cmd_dev,
}
DEV_COMMANDS = {"starters": cmd_dev_starters, "verify": cmd_dev_verify, "new": cmd_dev_new}


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
