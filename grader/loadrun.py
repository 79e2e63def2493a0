"""`grader load N`: many users chatting at once with a chapter's instances, then an audit.

Starts K instances of the chapter's backend on a fresh database (a file for SQLite, a throwaway
server for Postgres and MySQL, as `grader check` does) behind nginx when K > 1, lets Locust's
users chat for S seconds (`grader.toolkit.load`), prints throughput, latency and errors, then
reads back every thread the run wrote and names what went wrong (`grader.toolkit.audit`). With
`--url` it loads a deployment that is already running (compose, Kubernetes) instead, and reads
the threads back through its API. The exit status is 1 when the audit finds an integrity fault.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from grader import REPO_ROOT
from grader.manifest import Chapter
from grader.toolkit.audit import HistoryOf, api_history, audit, db_history, write_report
from grader.toolkit.balancer import HOW_TO_GET, Balancer, BalancerUnavailable, nginx_binary
from grader.toolkit.dbview import DbView
from grader.toolkit.expect import CheckFailed
from grader.toolkit.load import LoadError, LoadPlan, run_load
from grader.toolkit.procs import Backend, BackendError, start_all, stop_all

# Chapter 5 is where a client may resend a turn without storing it twice.
KEYS_FROM_CHAPTER = 5
DATABASE_LABELS = {"sqlite": "SQLite", "postgres": "Postgres", "mysql": "MySQL (MariaDB)"}


class Refused(Exception):
    """What the learner asked for cannot run; the message says what to do instead."""


def plan_from(args: argparse.Namespace, chapter: Chapter) -> LoadPlan:
    for value, flag in ((args.users, "--users"), (args.instances, "--instances")):
        if value < 1:
            raise Refused(f"{flag} must be 1 or more")
    if not 0 < args.seconds <= 600:
        raise Refused("--seconds must be more than 0 and at most 600")
    if args.shared_threads < 0:
        raise Refused("--shared-threads must be 0 (every user on threads of its own) or more")
    keys = chapter.number >= KEYS_FROM_CHAPTER
    return LoadPlan(
        users=args.users,
        seconds=args.seconds,
        max_turns=args.max_turns,
        shared_threads=args.shared_threads,
        idempotency_keys=keys,
        # Without keys a resent turn may be stored twice: only retry when the API makes it safe.
        retries=1 if keys else 0,
    )


@contextmanager
def instances(
    chapter_dir: Path, kind: str, count: int, work: Path
) -> Iterator[tuple[str, HistoryOf, str]]:
    """`count` backends on a fresh database, behind nginx if more than one: (the URL to load,
    how to read a thread back from the database, a line saying what runs)."""
    if count > 1 and nginx_binary() is None:
        raise Refused(f"--instances {count}: {HOW_TO_GET}")
    from grader.databases import Databases
    from grader.dbservers.errors import DatabaseUnavailable

    with ExitStack() as stack:
        databases = Databases(kind, work / "databases", require=True)
        (work / "databases").mkdir()
        stack.callback(databases.close)
        try:
            url = databases.fresh_url()
        except DatabaseUnavailable as exc:
            raise Refused(str(exc)) from None
        backends = [
            Backend(
                chapter_dir,
                work / f"instance-{n}",
                # The audit reads the offline assistant's count of the prompts it was given.
                env={"DATABASE_URL": url, "ASSISTANT_PROVIDER": "offline"},
                name=f"instance-{n}",
            )
            for n in range(1, count + 1)
        ]
        stack.callback(stop_all, backends)
        try:
            start_all(backends)
        except BackendError as exc:
            raise Refused(f"the backend did not start: {exc}\n{exc.log}") from None
        fresh = "a fresh file" if kind == "sqlite" else "a fresh database on a throwaway server"
        where = f"{DATABASE_LABELS[kind]} ({fresh})"
        if count == 1:
            yield backends[0].url, db_history(DbView(url)), f"1 instance on {where}"
            return
        balancer = Balancer([b.port for b in backends], work / "nginx", "grader load")
        try:
            balancer.start()
        except BalancerUnavailable as exc:
            raise Refused(str(exc)) from None
        stack.callback(balancer.stop)
        yield balancer.url, db_history(DbView(url)), f"{count} instances behind nginx on {where}"


def _shown(path: Path) -> str:
    """A chapter folder as the learner knows it: relative to the workbook when inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_command(chapter: Chapter, target: Path, args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args, chapter)
    except Refused as exc:
        print(f"grader: {exc}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="grader-load-"))
    try:
        with ExitStack() as stack:
            if args.url:
                base = args.url.rstrip("/")
                front, history_of, what = base, api_history(base), f"the deployment at {base}"
            else:
                front, history_of, what = stack.enter_context(
                    instances(target, args.db, args.instances, work)
                )
            source = base if args.url else _shown(target)
            print(
                f"Load run: chapter {chapter.number} from {source}, "
                f"{what}: {plan.users} users for {plan.seconds:g} s …",
                flush=True,
            )
            result = run_load(front, plan, work / "load")
            print(result.summary(), flush=True)
            print("Reading back every thread the run wrote …", flush=True)
            audited = audit(result, history_of)
        print(audited.summary())
        if args.json:
            print(f"Report (JSON): {write_report(Path(args.json), result, audited)}")
        return 0 if audited.ok else 1
    except Refused as exc:
        print(f"grader: {exc}")
        return 2
    except CheckFailed as exc:  # the threads could not be read back
        print(f"grader: {exc.rationale}" + (f"\n  {exc.actual}" if exc.actual else ""))
        return 1
    except LoadError as exc:
        print(f"grader: {exc} (the grader's own fault, not your code's):\n{exc.log}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
