"""How long `grader check N --solution` takes, against this machine's cost of starting one backend.

    .venv/bin/python benchmarks/grader_speed.py          # every chapter with a solution
    .venv/bin/python benchmarks/grader_speed.py 1 3      # chapters 1 and 3
    .venv/bin/python benchmarks/grader_speed.py -n 5     # 5 repetitions instead of 3
    .venv/bin/python benchmarks/grader_speed.py --compare  # also without the fork server
    .venv/bin/python benchmarks/grader_speed.py --watch    # also `grader watch`'s re-check

Absolute seconds say more about the machine than about the grader, so the same run also
measures a baseline: `python -c "import fastapi, streamlit"` plus a bare `uvicorn` start of
chapter 1's solution until it answers /health, sampled 3 times before the checks and once more
after each round of them, so that a load that comes and goes weighs on both sides of a ratio.
Each chapter's median is printed as a multiple of that baseline. So is the time a learner
waits for the first failure of each chapter's starter (`grader check N` on a copy of
chapters/NN-slug: until its first `✗` line is printed). `--watch` adds the time from a save to
the end of `grader watch N`'s re-check. `--compare` adds the same checks
with `GRADER_FORKSERVER=0` (every backend a `python -m uvicorn` subprocess). The load average
before and after is printed: other jobs on the same cores skew every number. Nothing is
asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chapters_with_solutions() -> list[tuple[int, str]]:
    data = tomllib.loads((ROOT / "workbook.toml").read_text(encoding="utf-8"))
    return [
        (c["number"], c["slug"])
        for c in data["chapters"]
        if (ROOT / "solutions" / c["slug"] / "backend" / "main.py").is_file()
    ]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - start, proc.returncode


def until_first_failure(cmd: list[str]) -> tuple[float, float]:
    """Seconds until `cmd` prints its first `✗` line (inf if it never does), and until it ends."""
    start = time.perf_counter()
    first = float("inf")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if first == float("inf") and line.decode("utf-8", "replace").lstrip().startswith("✗"):
            first = time.perf_counter() - start
    proc.wait()
    return first, time.perf_counter() - start


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uvicorn_to_health(app_dir: Path, timeout: float = 60) -> float:
    """Seconds from spawning uvicorn to the first 200 from /health; the process is then stopped."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "backend.main:app", "--app-dir", str(app_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"uvicorn did not answer /health within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def watch_rechecks(number: int, solution: Path, repeats: int, tmp: Path) -> list[float]:
    """Seconds from a save to the end of `grader watch`'s re-check, on a copy of a solution.

    Each save comes a few seconds after the previous re-check, as a learner's would: the time
    `grader watch` has to get the next run ready.
    """
    copy = shutil.copytree(solution, tmp / f"watch-{number}")
    cmd = [sys.executable, "-m", "grader", "watch", str(number), "--target", str(copy)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x.decode()) for x in proc.stdout])
    reader.daemon = True
    reader.start()

    def until_summary(timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "milestones pass" not in lines.get(timeout=max(deadline - time.monotonic(), 0.1)):
            pass

    samples = []
    try:
        until_summary()
        for n in range(repeats):
            time.sleep(3)
            main_py = copy / "backend" / "main.py"
            main_py.write_text(main_py.read_text() + f"\n# save {n}\n")
            start = time.perf_counter()
            until_summary()
            samples.append(time.perf_counter() - start)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", type=int, nargs="*", help="default: every chapter solved")
    parser.add_argument("-n", "--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--compare", action="store_true", help="also run every check without the fork server"
    )
    parser.add_argument(
        "--watch", action="store_true", help="also time `grader watch`'s re-check after a save"
    )
    args = parser.parse_args(argv)

    known = dict(chapters_with_solutions())
    chosen = args.chapters or sorted(known)
    missing = [n for n in chosen if n not in known]
    if missing:
        parser.error(f"no solution for chapter(s) {missing}; solved: {sorted(known)}")
    if 1 not in known:
        parser.error("the baseline starts chapter 1's solution, which is missing")

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), {args.repeat} runs each")
    print(f"before: {load()}\n")
    variants = [("", None)]
    if args.compare:
        variants.append((" (no fork server)", {**os.environ, "GRADER_FORKSERVER": "0"}))
    checks = [
        (f"grader check {number} --solution{suffix}", number, env)
        for number in chosen
        for suffix, env in variants
    ]
    starters = {
        n: ROOT / "chapters" / known[n] for n in chosen if (ROOT / "chapters" / known[n]).is_dir()
    }

    # Round-robin: each round takes one sample of the baseline and of every check, so that a
    # load that comes and goes during the run weighs on both sides of each ratio alike.
    imports: list[float] = []
    starts: list[float] = []
    runs: dict[str, list[tuple[float, int]]] = {label: [] for label, _, _ in checks}
    starter_runs: dict[int, list[tuple[float, float]]] = {n: [] for n in starters}
    with tempfile.TemporaryDirectory(prefix="grader-speed-") as tmp:
        # Copies of the starters, so that checking them records no progress in .grader/.
        copies = {n: shutil.copytree(path, Path(tmp) / path.name) for n, path in starters.items()}
        for _ in range(max(args.repeat, 3)):
            imports.append(timed([sys.executable, "-c", "import fastapi, streamlit"])[0])
            starts.append(uvicorn_to_health(ROOT / "solutions" / known[1]))
        for _ in range(args.repeat):
            for label, number, env in checks:
                cmd = [sys.executable, "-m", "grader", "check", str(number), "--solution"]
                runs[label].append(timed(cmd, env))
            for number, copy in copies.items():
                cmd = [sys.executable, "-m", "grader", "check", str(number), "--target", str(copy)]
                starter_runs[number].append(until_first_failure(cmd))
            imports.append(timed([sys.executable, "-c", "import fastapi, streamlit"])[0])
            starts.append(uvicorn_to_health(ROOT / "solutions" / known[1]))
        watches = {
            number: watch_rechecks(
                number, ROOT / "solutions" / known[number], args.repeat, Path(tmp)
            )
            for number in (chosen if args.watch else [])
        }
    baseline = statistics.median(imports) + statistics.median(starts)

    rows: list[tuple[str, float, float, str, str]] = []
    rows.append(("import fastapi, streamlit", *summary(imports), "", ""))
    rows.append(("uvicorn ch1 → /health", *summary(starts), "", ""))
    rows.append(("baseline (sum of medians)", baseline, baseline, "1.00×", ""))
    for label, _, _ in checks:
        fastest, median = summary([seconds for seconds, _ in runs[label]])
        codes = {code for _, code in runs[label]}
        status = "pass" if codes == {0} else f"exit {sorted(codes)}"
        rows.append((label, fastest, median, f"{median / baseline:.2f}×", status))
    for number, runs_of_starter in starter_runs.items():
        firsts = [first for first, _ in runs_of_starter]
        ends = [end for _, end in runs_of_starter]
        status = "✗ shown" if all(f != float("inf") for f in firsts) else "no ✗ printed"
        for label, samples, note in (
            (f"starter {number}: first ✗ shown", firsts, status),
            (f"starter {number}: whole run", ends, ""),
        ):
            fastest, median = summary(samples)
            rows.append((label, fastest, median, f"{median / baseline:.2f}×", note))

    for number, samples in watches.items():
        fastest, median = summary(samples)
        label = f"grader watch {number}: save → re-checked"
        rows.append((label, fastest, median, f"{median / baseline:.2f}×", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'min s':>7}  {'median s':>8}  {'× baseline':>10}  result")
    print(f"{'-' * width}  {'-' * 7}  {'-' * 8}  {'-' * 10}  ------")
    for label, fastest, median, ratio, status in rows:
        print(f"{label:<{width}}  {fastest:7.2f}  {median:8.2f}  {ratio:>10}  {status}")
    print(f"\nafter: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
