"""`grader db up|down|status|wait`: the learner's own database server, from the command line.

(`grader db show THREAD_ID` is `grader.dbservers.show`.)
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from grader.dbservers import binaries, persistent
from grader.dbservers.errors import DatabaseUnavailable, describe, first_line
from grader.dbservers.urls import (
    ENV_URLS,
    KINDS,
    LABELS,
    LEARNER_PASSWORD,
    LEARNER_PORTS,
    PACKAGES,
    hide_password,
    learner_url,
)
from grader.toolkit.procs import port_open, wait_until


def wait_for(url: str, timeout: float) -> str | None:
    """Connect to `url` until it answers or `timeout` passes; None when it answered, else why not.

    For containers that start together: the backend waits for its database instead of failing
    its first `create_all` (a Postgres container answers its healthcheck before it serves TCP).
    """
    engine = create_engine(url, poolclass=NullPool)
    last = "no attempt"

    def answers() -> bool:
        nonlocal last
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            last = describe(exc)
            return False
        return True

    try:
        return None if wait_until(answers, timeout, interval=0.5) else last
    finally:
        engine.dispose()


def _wait(args: Any) -> int:
    url = args.url or os.environ.get("DATABASE_URL")
    if not url:
        print("grader: `grader db wait` needs a URL: set DATABASE_URL or pass --url")
        return 2
    try:
        make_url(url)
    except Exception as exc:
        print(f"grader: DATABASE_URL is not a database URL ({first_line(exc)})")
        return 2
    print(f"Waiting up to {args.timeout:.0f} s for {hide_password(url)} …", flush=True)
    problem = wait_for(url, args.timeout)
    if problem:
        print(f"grader: the database did not answer within {args.timeout:.0f} s (last: {problem})")
        return 1
    print("The database answers.")
    return 0


def _print_use(kind: str, url: str) -> None:
    print(
        f"\nUse it:\n"
        f"  export DATABASE_URL='{url}'\n"
        f"  grader run 4 --db {kind}          # or any chapter from 4 on\n"
        f"  {ENV_URLS[kind]}='{url}' grader check 4 --db {kind}\n"
        f"The password is {LEARNER_PASSWORD!r}; in the URL it is percent-encoded "
        f"(see the guide 'Choosing a database')."
    )


def _status(args: Any) -> int:
    for kind in [args.kind] if args.kind else list(KINDS):
        state = persistent.read_state(kind)
        if state:
            print(f"✓ {LABELS[kind]} runs (PID {state['pid']}, port {state['port']})")
            print(f"    DATABASE_URL='{state['url']}'")
        elif port_open(LEARNER_PORTS[kind]):
            print(
                f"? {LABELS[kind]}: not started by `grader db up`, but something listens on "
                f"port {LEARNER_PORTS[kind]} (docker compose?); try "
                f"DATABASE_URL='{learner_url(kind)}'"
            )
        else:
            where = "binaries found" if binaries.binaries_available(kind) else "no binaries here"
            print(f"· {LABELS[kind]} is not running ({where}): `grader db up {kind}`")
    return 0


def _down(args: Any) -> int:
    kind = args.kind
    home = persistent.home_of(kind)
    state = persistent.db_down(kind, purge=args.purge)
    if state:
        print(f"Stopped {LABELS[kind]} (PID {state['pid']}).")
    else:
        print(f"{LABELS[kind]} was not running (no live PID in {persistent.state_path(kind)}).")
    if args.purge:
        print(f"Deleted its data in {home}.")
    elif (home / "data").exists():
        print(f"Its data stays in {home}; `--purge` deletes it.")
    return 0


def _up(args: Any) -> int:
    kind = args.kind
    port = args.port or LEARNER_PORTS[kind]
    if not binaries.binaries_available(kind):
        print(
            f"No {LABELS[kind]} server binaries on this machine. Either install them\n"
            f"  sudo apt-get install {PACKAGES[kind]}      (Debian/Ubuntu; then run this again)\n"
            f"or, with Docker, start the workbook's compose database:\n"
            f"  docker compose --profile {kind} up -d {kind}"
        )
        _print_use(kind, learner_url(kind))
        return 1
    try:
        state, started = persistent.db_up(kind, port=port)
    except DatabaseUnavailable as exc:
        print(f"grader: {exc}")
        return 1
    verb = "Started" if started else "Already running:"
    print(
        f"{verb} {LABELS[kind]} on 127.0.0.1:{state['port']} (PID {state['pid']}).\n"
        f"  data: {state['data']}\n  log:  {state['log']}\n"
        f"Stop it with `grader db down {kind}`."
    )
    _print_use(kind, state["url"])
    return 0


def db_command(args: Any) -> int:
    """`grader db up|down|status [postgres|mysql] [--port N] [--purge]`, `grader db wait`."""
    if args.action == "wait":
        return _wait(args)
    if args.action == "status":
        return _status(args)
    if not args.kind:
        print(f"grader: say which server: `grader db {args.action} postgres` or `... mysql`")
        return 2
    return _down(args) if args.action == "down" else _up(args)
