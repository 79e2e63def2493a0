"""Turns per second of chapter 5's solution with 1, 2 and 4 instances, against a bare app.

    .venv/bin/python benchmarks/scale_out.py                          # SQLite and Postgres
    .venv/bin/python benchmarks/scale_out.py --db sqlite --instances 1 2
    .venv/bin/python benchmarks/scale_out.py --users 16 --seconds 8
    .venv/bin/python benchmarks/scale_out.py --one-thread             # + every user on one thread
    .venv/bin/python benchmarks/scale_out.py --chapter DIR            # another copy of chapter 5

Every setup runs N instances of `uvicorn backend.main:app` (one worker, no access log, as in
chat_throughput.py), behind the grader's nginx (`grader.toolkit.balancer`) when N > 1, and the
grader's Locust load generator (`grader.toolkit.load`) sends `--users` users chatting for
`--seconds`, each user on threads of its own (a new one every 5 turns). The setups:

- the bare app of chat_throughput.py: `POST /chat` answered by the same offline assistant,
  nothing stored;
- chapter 5 on SQLite: one file in WAL mode shared by all N instances;
- chapter 5 on Postgres: a throwaway server (grader.dbservers), one database for all N.

All of them are measured in the same run, interleaved (for each N: bare, then each database),
so that the ratios hold whatever the machine: `× bare` is chapter 5 at N instances ÷ the bare
app at N instances (what the database and the per-thread lock cost), `× 1 inst.` is a setup at N
÷ the same setup at 1 (what scaling out gained). With `--one-thread` every user's turns go to one
shared thread as well, where chapter 5's lock makes them take turns.

Nothing is asserted: this is a measurement, not a test. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from chat_throughput import Server, database_urls, write_bare_app  # noqa: E402

from grader.toolkit.balancer import HOW_TO_GET, Balancer, nginx_binary  # noqa: E402
from grader.toolkit.load import LoadPlan, LoadResult, run_load  # noqa: E402
from grader.toolkit.procs import children, descendants  # noqa: E402

CHAPTER = ROOT / "solutions" / "05-scale-out"
BARE = "bare app (no database)"
# The load generator's own bound on top of --seconds: no run sends more turns than this a second.
MAX_TURNS_PER_SECOND = 10_000


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes `pids` have used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(eq=False)
class Row:
    setup: str
    instances: int
    shared_thread: bool
    result: LoadResult
    cpu_ms: dict[str, float]  # CPU milliseconds per answered turn: app, nginx, db

    @property
    def rate(self) -> float:
        return self.result.throughput


class Setup:
    """One app (bare, or chapter 5 on one database): its instances, started once, all kept."""

    def __init__(
        self, name: str, app_dir: Path, env: dict[str, str], db_pid: int | None = None
    ) -> None:
        self.name = name
        self.app_dir = app_dir
        self.env = env
        self.db_pid = db_pid
        self.servers: list[Server] = []

    def start(self, count: int) -> None:
        """`count` instances: the first alone (it creates the tables), then the rest at once."""
        self.servers.append(Server(self.app_dir, self.env))
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(count - 1, 1)) as pool:
            futures = [pool.submit(Server, self.app_dir, self.env) for _ in range(count - 1)]
            for future in futures:
                try:
                    self.servers.append(future.result())
                except Exception as exc:  # the others are kept, so that stop() stops them
                    failure = failure or exc
        if failure is not None:
            raise failure

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def measure(self, n: int, plan: LoadPlan, work: Path) -> tuple[LoadResult, dict[str, float]]:
        """A load run against the first `n` instances, through nginx when there are several."""
        servers = self.servers[:n]
        label = f"{self.name.split(' (')[0].replace(' ', '-')}-{n}" + (
            "-one-thread" if plan.shared_threads else ""
        )
        balancer = None
        try:
            target = servers[0].url
            if n > 1:
                folder = work / f"nginx-{label}"
                balancer = Balancer([s.port for s in servers], folder, "scale_out.py").start()
                target = balancer.url
            nginx = balancer.proc.pid if balancer and balancer.proc else None
            meters: dict[str, Callable[[], float]] = {
                "app": lambda: sum(s.cpu_seconds() for s in servers),
                "nginx": lambda: cpu_seconds([nginx, *children(nginx)]) if nginx else 0.0,
                "db": lambda: cpu_seconds(descendants(self.db_pid)) if self.db_pid else 0.0,
            }
            before = {part: meter() for part, meter in meters.items()}
            result = run_load(target, plan, work / f"load-{label}")
            turns = max(result.turns, 1)
            cpu_ms = {
                part: (meter() - before[part]) * 1000 / turns for part, meter in meters.items()
            }
        finally:
            if balancer is not None:
                balancer.stop()
        return result, cpu_ms


def journal_mode(url: str) -> str:
    """The SQLite file's journal mode, as the instances left it (`wal` is persistent)."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def print_table(rows: list[Row]) -> None:
    names = {r: r.setup + (", one thread" if r.shared_thread else "") for r in rows}
    width = max(len(name) for name in names.values())
    head = f"{'':{width}} {'inst.':>5} {'turns/s':>8} {'× bare':>7} {'× 1 inst.':>9}"
    head += f" {'p50 ms':>7} {'p95 ms':>7}  {'CPU ms/turn app/nginx/db':>24}  errors"
    print(f"\n{head}")
    bare = {r.instances: r.rate for r in rows if r.setup == BARE}
    alone = {(r.setup, r.shared_thread): r.rate for r in rows if r.instances == 1}
    order = {name: i for i, name in enumerate(dict.fromkeys(r.setup for r in rows))}
    for r in sorted(rows, key=lambda r: (r.shared_thread, order[r.setup], r.instances)):
        ratio_bare = f"{r.rate / bare[r.instances]:6.2f}×" if bare.get(r.instances) else "-"
        one = alone.get((r.setup, r.shared_thread))
        ratio_one = f"{r.rate / one:8.2f}×" if one else "-"
        lat = r.result.latency()
        cpu = "/".join(f"{r.cpu_ms[p]:.1f}" for p in ("app", "nginx", "db"))
        errors = r.result.errors()
        shown = ", ".join(f"{n} × {k}" for k, n in sorted(errors.items())) or "0"
        print(
            f"{names[r]:{width}} {r.instances:5} {r.rate:8.1f} {ratio_bare:>7} {ratio_one:>9}"
            f" {ms(lat.p50):>7} {ms(lat.p95):>7}  {cpu:>24}  {shown}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--instances", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--one-thread", action="store_true", help="also: every user's turns on one shared thread"
    )
    parser.add_argument(
        "--chapter", type=Path, default=CHAPTER, help="another copy of chapter 5 to measure"
    )
    args = parser.parse_args()
    if not set(args.db) <= {"sqlite", "postgres", "mysql"}:
        parser.error("--db takes sqlite, postgres, mysql")
    counts = sorted(set(args.instances))
    if not counts or counts[0] < 1:
        parser.error("--instances takes counts of 1 or more")
    if counts[-1] > 1 and nginx_binary() is None:
        sys.exit(f"more than one instance: {HOW_TO_GET}")
    chapter = args.chapter.resolve()
    print(
        f"{args.users} users, {args.seconds:g} s per run, instances {counts}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    plan = LoadPlan(
        users=args.users,
        seconds=args.seconds,
        max_turns=int(args.seconds * MAX_TURNS_PER_SECOND),
    )
    shared = replace(plan, shared_threads=1)
    db_servers: list = []
    setups: list[Setup] = []
    rows: list[Row] = []
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        work = Path(tmp)
        bare_dir = write_bare_app(work / "bare")
        try:
            urls = database_urls(args.db, db_servers)
            setups.append(Setup(BARE, bare_dir, {}))
            for kind, url in urls.items():
                db_pid = next((s.pid for s in db_servers if s.kind == kind), None)
                setups.append(Setup(f"chapter 5 on {kind}", chapter, {"DATABASE_URL": url}, db_pid))
            started = time.monotonic()
            for setup in setups:
                setup.start(counts[-1])
            print(
                f"started {sum(len(s.servers) for s in setups)} instances "
                f"in {time.monotonic() - started:.1f} s"
            )
            for n in counts:
                for setup in setups:
                    result, cpu_ms = setup.measure(n, plan, work)
                    rows.append(Row(setup.name, n, False, result, cpu_ms))
                    print(f"  {setup.name}, {n}: {result.throughput:.1f} turns/s", flush=True)
            if args.one_thread:
                for n in counts:
                    for setup in setups[1:]:
                        result, cpu_ms = setup.measure(n, shared, work)
                        rows.append(Row(setup.name, n, True, result, cpu_ms))
                        print(f"  {setup.name}, {n}, one thread: {result.throughput:.1f} turns/s")
            print_table(rows)
            if "sqlite" in urls:
                print(
                    f"\nSQLite file shared by the instances: journal_mode={journal_mode(urls['sqlite'])}"
                )
        finally:
            for setup in setups:
                setup.stop()
            for server in db_servers:
                server.stop()
            if "sqlite" in urls:  # database_urls made a folder of its own for the file
                shutil.rmtree(Path(urls["sqlite"].removeprefix("sqlite:///")).parent)
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
