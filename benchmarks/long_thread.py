"""What a turn and a history read cost as a thread grows: chapter 5 against chapter 6.

    .venv/bin/python benchmarks/long_thread.py                      # threads of 100 to 20,000
    .venv/bin/python benchmarks/long_thread.py --sizes 100 5000 --turns 10

Chapter 5 loads a thread's whole history on every turn and answers GET /history whole;
chapter 6 gives the assistant the newest `CONTEXT_MESSAGES` messages of the thread and pages
the history (`?limit=`). For each size, one thread is grown to that many messages by inserting
rows straight into the database (SQLite, one file per chapter and size), then the benchmark
times `--turns` turns on it and `--reads` history reads: chapter 5's whole history, chapter
6's whole history (still offered) and its newest page of 50. Each figure is the median, with
its ratio to the same measure on the smallest thread (`× first`): how the cost grows with the
thread. Both chapters run from their solutions, one uvicorn process each, measured in one run.

Nothing is asserted: this is a measurement, not a test. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from grader.toolkit.migrations import upgrade_head  # noqa: E402
from grader.toolkit.procs import Backend  # noqa: E402

CH5, CH6 = ROOT / "solutions" / "05-scale-out", ROOT / "solutions" / "06-users-and-migrations"
SECRET_KEY = "benchmark-signing-key-0123456789abcdef0123456789"
PAGE = 50
PARTS = '[{"text": "a message of a long thread, about as long as a short chat message is"}]'


def pad(url: str, thread_id: str, count: int) -> None:
    """Grow the thread to at least `count` messages with rows inserted directly."""
    engine = create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {"t": thread_id, "r": "user" if n % 2 == 0 else "model", "p": PARTS, "c": now}
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO messages (thread_id, role, parts, created_at) VALUES (:t, :r, :p, :c)"
            ),
            rows,
        )
    engine.dispose()


def median_ms(times: int, call: Callable[[], httpx.Response]) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        response = call()
        spent.append(time.perf_counter() - start)
        response.raise_for_status()
    return statistics.median(spent) * 1000


def measure(chapter: Path, size: int, work: Path, turns: int, reads: int) -> dict[str, float]:
    folder = work / f"{chapter.name[:2]}-{size}"
    folder.mkdir()
    url = f"sqlite:///{folder / 'messages.db'}"
    env = {"DATABASE_URL": url, "ASSISTANT_PROVIDER": "offline", "SECRET_KEY": SECRET_KEY}
    if chapter == CH6:
        upgrade_head(chapter, url)
    backend = Backend(chapter, folder, env=env, name=f"{chapter.name[:2]}-{size}").start()
    try:
        with httpx.Client(base_url=backend.url, timeout=60) as client:
            if chapter == CH6:
                name = f"bench_{uuid.uuid4().hex[:8]}"
                account = {"username": name, "password": "benchmark-password"}
                client.post("/users", json=account).raise_for_status()
                token = client.post("/token", data=account).json()["access_token"]
                client.headers["Authorization"] = f"Bearer {token}"
                first = client.post("/chat", json={"prompt": "hello", "thread_id": None})
                thread_id = first.json()["thread_id"]
            else:
                thread_id = str(uuid.uuid4())
                client.post("/chat", json={"prompt": "hello", "thread_id": thread_id})
            pad(url, thread_id, size)
            turn = {"prompt": "how many messages have I sent?", "thread_id": thread_id}
            figures = {
                "turn": median_ms(turns, lambda: client.post("/chat", json=turn)),
                "whole history": median_ms(reads, lambda: client.get(f"/history/{thread_id}")),
            }
            if chapter == CH6:
                newest = f"/history/{thread_id}?limit={PAGE}"
                figures[f"page of {PAGE}"] = median_ms(reads, lambda: client.get(newest))
            return figures
    finally:
        backend.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000, 20000])
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--reads", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="long-thread-") as tmp:
        results: dict[tuple[str, int], dict[str, float]] = {}
        for size in args.sizes:  # interleaved: both chapters see the same machine
            for chapter in (CH5, CH6):
                results[(chapter.name, size)] = measure(
                    chapter, size, Path(tmp), args.turns, args.reads
                )
    first = args.sizes[0]
    print(f"median ms per request on SQLite ({args.turns} turns, {args.reads} reads per cell)")
    print(f"{'chapter':<26}{'measure':<16}" + "".join(f"{f'{s:,} msgs':>22}" for s in args.sizes))
    for chapter in (CH5, CH6):
        for measure_name in results[(chapter.name, first)]:
            cells = []
            for size in args.sizes:
                value = results[(chapter.name, size)][measure_name]
                base = results[(chapter.name, first)][measure_name]
                cells.append(f"{value:>10.1f} ms {value / base:>7.1f}× ")
            print(f"{chapter.name:<26}{measure_name:<16}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
