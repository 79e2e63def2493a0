"""What happens to one thread when many turns arrive at once, on chapter 4's solution.

    .venv/bin/python benchmarks/same_thread.py                # SQLite, Postgres, MySQL
    .venv/bin/python benchmarks/same_thread.py --db postgres --clients 16 --turns 20

Two backend instances share one database; `--clients` clients each send `--turns` turns, all on
one thread, alternating between the instances. Every prompt asks "how many messages have I
sent?". Afterwards the thread is read back and audited:

- interleaved: a turn whose rows are not contiguous (another turn's rows sit between them);
- stale: a reply whose count is not the number of prompts stored up to its own, i.e. the
  assistant did not see a turn that was stored before this one (it read the history too early);
- lost: an acknowledged turn missing from the thread.

Chapter 4 does nothing to serialize turns on one thread; chapter 5 does. This prints what that
costs; the chapter 4 docs quote it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from chat_throughput import CHAPTER, Server, database_urls  # noqa: E402

COUNT_RE = re.compile(r"You have sent (\d+|one) message")


def run(urls: list[str], clients: int, turns: int) -> tuple[str, int]:
    thread_id = str(uuid.uuid4())
    acknowledged = 0
    lock = threading.Lock()

    def client(n: int) -> None:
        nonlocal acknowledged
        with httpx.Client(timeout=30) as http:
            for t in range(turns):
                body = {
                    "prompt": f"how many messages have I sent? ({n}.{t})",
                    "thread_id": thread_id,
                }
                if http.post(f"{urls[(n + t) % len(urls)]}/chat", json=body).status_code == 200:
                    with lock:
                        acknowledged += 1

    workers = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return thread_id, acknowledged


def audit(messages: list[dict]) -> dict[str, int]:
    interleaved = stale = 0
    prompts = 0
    for i, message in enumerate(messages):
        if message["role"] != "user":
            continue
        prompts += 1
        reply = messages[i + 1] if i + 1 < len(messages) else None
        if reply is None or reply["role"] == "user":
            interleaved += 1
            continue
        match = COUNT_RE.search(reply["parts"][0].get("text", ""))
        seen = 1 if match and match.group(1) == "one" else int(match.group(1)) if match else -1
        stale += seen != prompts
    return {"prompts": prompts, "interleaved": interleaved, "stale": stale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgres", "mysql"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--chapter", type=Path, default=CHAPTER, help="another copy of chapter 4")
    args = parser.parse_args()
    servers: list = []
    total = args.clients * args.turns
    print(f"{args.clients} clients × {args.turns} turns on one thread, through 2 instances")
    try:
        for kind, url in database_urls(args.db or ["sqlite", "postgres", "mysql"], servers).items():
            apps = [Server(args.chapter.resolve(), {"DATABASE_URL": url}) for _ in range(2)]
            try:
                thread_id, acknowledged = run([a.url for a in apps], args.clients, args.turns)
                history = httpx.get(f"{apps[0].url}/history/{thread_id}", timeout=30).json()
            finally:
                for app in apps:
                    app.stop()
            found = audit(history["messages"])
            lost = acknowledged - found["prompts"]
            print(
                f"{kind:8}: {acknowledged}/{total} acknowledged, {found['interleaved']} interleaved, "
                f"{found['stale']} stale replies, {lost} lost"
            )
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
