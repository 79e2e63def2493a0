"""Turns per second of chapter 4's solution on each database, against a bare app.

    .venv/bin/python benchmarks/chat_throughput.py                 # SQLite, Postgres, MySQL
    .venv/bin/python benchmarks/chat_throughput.py --db sqlite     # SQLite only
    .venv/bin/python benchmarks/chat_throughput.py --clients 8 --seconds 10
    .venv/bin/python benchmarks/chat_throughput.py --big-thread    # + head-of-line blocking
    .venv/bin/python benchmarks/chat_throughput.py --chapter DIR   # another copy of chapter 4

The baseline is a bare FastAPI app that answers `POST /chat` with the same offline assistant
and stores nothing, measured in the same run with the same clients: the ratio is what the
database costs, whatever the machine. Each client is a thread with its own keep-alive
connection, sending turns one after another; every 10 turns it starts a new thread (a
conversation), so histories stay short, as real ones mostly are. uvicorn runs one worker,
without an access log, for every app alike.

`--big-thread` adds the head-of-line case (issue 8, defect 6): 4 more clients chat on one thread
prefilled with 50,000 messages while the others chat on small threads; it prints the
small-thread turns per second with and without them.

Nothing is asserted: this is a measurement, not a test. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHAPTER = ROOT / "solutions" / "04-choosing-a-database"
TURNS_PER_THREAD = 10

BARE_APP = """
from uuid import uuid4

from fastapi import FastAPI
from pydantic import BaseModel

from assistant import respond

app = FastAPI()


class ChatRequest(BaseModel):
    prompt: str
    thread_id: str | None = None


@app.post("/chat")
def chat(body: ChatRequest) -> dict:
    user_message = {"role": "user", "parts": [{"text": body.prompt}]}
    turn = respond([user_message])
    return {"thread_id": body.thread_id or str(uuid4()), "messages": [user_message, *turn]}
"""


def write_bare_app(folder: Path) -> Path:
    """`folder` laid out like a chapter (backend/main.py) holding BARE_APP."""
    (folder / "backend").mkdir(parents=True)
    (folder / "backend" / "__init__.py").write_text("")
    (folder / "backend" / "main.py").write_text(BARE_APP)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One uvicorn process serving `app_dir`'s backend.main:app, stopped by its PID."""

    def __init__(self, app_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(self.port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
        pythonpath = os.pathsep.join([str(app_dir), str(ROOT)])
        self.proc = subprocess.Popen(
            cmd,
            cwd=app_dir,
            env={**os.environ, **env, "PYTHONPATH": pythonpath},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app in {app_dir} exited with {self.proc.returncode}")
            try:
                if httpx.post(f"{self.url}/chat", json={"prompt": "warm up"}).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the app in {app_dir} did not answer within 30 s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (all its threads)."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_clients(url: str, clients: int, seconds: float, thread_for: Callable[[int], str | None]):
    """Each client sends turns for `seconds`; returns (turns done, errors) per client."""
    stop = time.monotonic() + seconds
    done = [0] * clients
    errors = [0] * clients

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            thread_id = thread_for(n)
            turns = 0
            while time.monotonic() < stop:
                body = {"prompt": f"hello {turns}", "thread_id": thread_id}
                response = http.post("/chat", json=body)
                if response.status_code == 200:
                    done[n] += 1
                    turns += 1
                    if thread_for(n) is None:  # a small-thread client: a new one every 10
                        new = turns % TURNS_PER_THREAD == 0
                        thread_id = None if new else response.json()["thread_id"]
                else:
                    errors[n] += 1

    workers = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return done, errors


def throughput(server: Server, clients: int, seconds: float) -> tuple[float, float, int]:
    """Turns per second, the server's CPU milliseconds per turn, and the errors."""
    cpu = server.cpu_split()
    done, errors = run_clients(server.url, clients, seconds, lambda _n: None)
    after = server.cpu_split()
    if os.environ.get("THROUGHPUT_DEBUG"):
        print("user/sys s", after[0] - cpu[0], after[1] - cpu[1])
    cpu_ms = (sum(after) - sum(cpu)) * 1000 / max(sum(done), 1)
    return sum(done) / seconds, cpu_ms, sum(errors)


def prefill(db_path: Path, thread_id: str, count: int) -> None:
    """`count` messages on one thread, written straight into chapter 4's table."""
    with sqlite3.connect(db_path) as conn:
        now = "2026-01-01 00:00:00"
        rows = [
            (thread_id, "user" if i % 2 == 0 else "model", json.dumps([{"text": f"m{i}"}]), now)
            for i in range(count)
        ]
        conn.executemany(
            "INSERT INTO messages (thread_id, role, parts, created_at) VALUES (?, ?, ?, ?)", rows
        )


def head_of_line(chapter: Path, clients: int, seconds: float, work: Path) -> None:
    db_path = work / "big.db"
    server = Server(chapter, {"DATABASE_URL": f"sqlite:///{db_path}"})
    try:
        big = str(uuid.uuid4())
        prefill(db_path, big, 50_000)
        alone, _ = run_clients(server.url, clients, seconds, lambda _n: None)
        results: dict[str, tuple[list[int], list[int]]] = {}

        def small() -> None:
            results["small"] = run_clients(server.url, clients, seconds, lambda _n: None)

        def large() -> None:
            results["big"] = run_clients(server.url, 4, seconds, lambda _n: big)

        both = [threading.Thread(target=small), threading.Thread(target=large)]
        for t in both:
            t.start()
        for t in both:
            t.join()
        with_big, errors = results["small"]
        print(
            f"\nhead-of-line (SQLite): small-thread turns/s {sum(alone) / seconds:7.1f} alone, "
            f"{sum(with_big) / seconds:7.1f} beside 4 clients on a 50,000-message thread "
            f"({sum(results['big'][0]) / seconds:.1f} big-thread turns/s; "
            f"{sum(errors)} small-thread errors)"
        )
    finally:
        server.stop()


def database_urls(kinds: list[str], stack: list) -> dict[str, str]:
    urls = {}
    for kind in kinds:
        if kind == "sqlite":
            urls[kind] = f"sqlite:///{tempfile.mkdtemp(prefix='throughput-')}/messages.db"
            continue
        from grader.dbservers import binaries
        from grader.dbservers.start import start

        if not binaries.binaries_available(kind):
            print(f"{kind}: skipped, no server binaries on this machine")
            continue
        server = start(kind)
        stack.append(server)
        urls[kind] = server.create_database("throughput")
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgres", "mysql"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--big-thread", action="store_true")
    parser.add_argument(
        "--chapter", type=Path, default=CHAPTER, help="another copy of chapter 4 to measure"
    )
    args = parser.parse_args()
    chapter = args.chapter.resolve()
    kinds = args.db or ["sqlite", "postgres", "mysql"]
    print(f"{args.clients} clients, {args.seconds:g} s per run, load {os.getloadavg()[0]:.2f}")
    servers: list = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare_dir = write_bare_app(work / "bare")
        try:
            urls = database_urls(kinds, servers)
            rows = []
            bare = Server(bare_dir, {})
            try:
                baseline, cpu_ms, _ = throughput(bare, args.clients, args.seconds)
            finally:
                bare.stop()
            rows.append(("bare app (no database)", baseline, cpu_ms, 0))
            for kind, url in urls.items():
                app = Server(chapter, {"DATABASE_URL": url})
                try:
                    rate, cpu_ms, errors = throughput(app, args.clients, args.seconds)
                finally:
                    app.stop()
                rows.append((f"chapter 4 on {kind}", rate, cpu_ms, errors))
            print(f"\n{'':28} {'turns/s':>8}  {'× bare':>7}  {'server CPU/turn':>15}  errors")
            for name, rate, cpu_ms, errors in rows:
                print(
                    f"{name:28} {rate:8.1f}  {rate / baseline:6.2f}×  {cpu_ms:12.2f} ms  {errors}"
                )
            if args.big_thread:
                head_of_line(chapter, args.clients, args.seconds, work)
        finally:
            for server in servers:
                server.stop()
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
