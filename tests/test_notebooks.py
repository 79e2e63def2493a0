"""The notebooks in notebooks/ run top to bottom in a fresh kernel, and show what they promise.

Each notebook is executed with nbclient in this interpreter's own ipykernel (the venv's; a
kernelspec installed elsewhere on the machine is ignored), with notebooks/ as the working
directory, as Jupyter opened there would run it. The committed files carry no outputs, so their
diffs stay reviewable. (Its own module: importing nbformat and nbclient is slow.)
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "03-inspect-history.ipynb",
    "04-one-query-three-dialects.ipynb",
    "05-load-test.ipynb",
    "06-migration-and-query-plans.ipynb",
]
# Per cell; the slowest cell starts a throwaway Postgres and a MariaDB server.
CELL_TIMEOUT = int(os.environ.get("GRADER_NOTEBOOK_CELL_TIMEOUT", "240"))
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.xdist_group("notebooks")  # one worker executes each notebook once


def _execute(name: str) -> nbformat.NotebookNode:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # No kernel folders: jupyter_client then falls back to the native "python3" kernel, which
    # is ipykernel run by this very interpreter, never a python3 kernelspec found on the machine.
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    assert km.kernel_spec is not None and km.kernel_spec.argv[0] == sys.executable, km.kernel_spec
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name}: a cell failed:\n{exc}", pytrace=False)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, f"{name}: {errors}"
    return nb


def _output(nb: nbformat.NotebookNode, tag: str) -> str:
    """The text the one cell tagged `tag` printed or returned."""
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    text = []
    for out in cells[0].outputs:
        if out.output_type == "stream" and out.name == "stdout":
            text.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            text.append(out.data.get("text/plain", ""))
    return "".join(text)


def _by_dialect(text: str) -> dict[str, str]:
    """Split "-- sqlite / -- postgres / -- mysql" sections of a cell's output."""
    pieces = re.split(r"^-- (sqlite|postgres|mysql)\n", text, flags=re.MULTILINE)
    sections = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    assert list(sections) == ["sqlite", "postgres", "mysql"], text
    return {name: " ".join(sql.split()) for name, sql in sections.items()}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").is_file() and ") Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.fixture(scope="module")
def notebook_03() -> nbformat.NotebookNode:
    return _execute("03-inspect-history.ipynb")


@pytest.fixture(scope="module")
def notebook_04() -> nbformat.NotebookNode:
    return _execute("04-one-query-three-dialects.ipynb")


@pytest.fixture(scope="module")
def notebook_05() -> Iterator[nbformat.NotebookNode]:
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits this process's environment
        env.setenv("LOAD_SECONDS", "1")
        env.setenv("LOAD_USERS", "8")
        yield _execute("05-load-test.ipynb")


@pytest.fixture(scope="module")
def notebook_06() -> nbformat.NotebookNode:
    return _execute("06-migration-and-query-plans.ipynb")


def _sections(text: str, heading: str) -> dict[tuple[str, ...], str]:
    """The `heading` (a regex with groups) sections of a cell's output, each up to its verdict
    line (✓ or ✗), keyed by the heading's groups."""
    pieces = re.split(f"^== {heading}\n", text, flags=re.MULTILINE)
    width = re.compile(heading).groups + 1
    sections = {}
    for i in range(1, len(pieces), width):
        body = pieces[i + width - 1]
        verdict = re.search(r"^   [✓✗].*$", body, flags=re.MULTILINE)
        assert verdict, body
        sections[tuple(pieces[i : i + width - 1])] = body[: verdict.end()]
    return sections


def _images(nb: nbformat.NotebookNode, tag: str) -> int:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    return sum("image/png" in out.get("data", {}) for c in cells for out in c.outputs)


def test_the_notebooks_are_committed_without_outputs() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == EXPECTED, f"notebooks/ holds {found}; update EXPECTED and add checks"
    for name in found:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", name
        dirty = [
            i
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        assert not dirty, (
            f"{name}: cells {dirty} hold outputs or execution counts; clear them before "
            "committing (Jupyter: Edit > Clear Outputs of All Cells) so diffs stay reviewable"
        )


def test_notebook_03_inspects_the_history_in_messages_db(notebook_03) -> None:
    chat = _output(notebook_03, "chat")
    assert "function_call: {'name': 'roll_dice'" in chat, chat
    assert 'Your first message was: "tell me about the dragon"' in chat, chat

    rows = _output(notebook_03, "rows").splitlines()
    assert rows[0].split()[:5] == ["id", "thread", "role", "parts", "created_at"], rows[0]
    assert len(rows) == 2 + 14, "five turns in two threads store 14 messages"

    decoded = _output(notebook_03, "decoded")
    assert '"function_call": {"name": "roll_dice", "args": {"count": 2' in decoded, decoded
    assert '"function_response": {"name": "roll_dice"' in decoded, decoded

    per_thread = _output(notebook_03, "per-thread")
    counts = sorted(int(line.split()[1]) for line in per_thread.splitlines()[2:4])
    assert counts == [6, 8], per_thread
    assert "GET /history serves exactly these rows" in per_thread, per_thread

    plan = _output(notebook_03, "plan")
    assert "SEARCH messages USING INDEX messages_thread_id_id (thread_id=?)" in plan, plan
    assert "TEMP B-TREE" not in plan.splitlines()[0], plan

    stopped = re.search(r"stopped the backend \(PID (\d+)\)", _output(notebook_03, "stop"))
    assert stopped, "the last cell stops the backend it started"
    assert _gone(int(stopped.group(1))), f"backend PID {stopped.group(1)} is still running"


@pytest.mark.databases
def test_notebook_04_compiles_one_query_for_three_dialects_and_runs_it(notebook_04) -> None:
    insert = _by_dialect(_output(notebook_04, "insert"))
    assert "VALUES (?, ?, ?)" in insert["sqlite"], insert
    assert "%(parts)s::JSON" in insert["postgres"], insert
    assert "RETURNING messages.id" in insert["postgres"], insert
    assert (
        "(thread_id, `role`, parts) VALUES (%(thread_id)s, %(role)s, %(parts)s)" in insert["mysql"]
    )
    assert "🎲" not in "".join(s.split("-- params:")[0] for s in insert.values()), (
        "values travel as parameters, never inside the SQL"
    )

    select = _by_dialect(_output(notebook_04, "select"))
    assert "WHERE messages.thread_id = ? ORDER BY messages.id" in select["sqlite"], select
    assert "= %(thread_id_1)s::VARCHAR ORDER BY messages.id" in select["postgres"], select
    assert "= %(thread_id_1)s ORDER BY messages.id" in select["mysql"], select
    assert len(set(select.values())) == 3, "each dialect writes its own SQL"

    delete = _by_dialect(_output(notebook_04, "delete"))
    assert all(sql.startswith("DELETE FROM messages WHERE") for sql in delete.values()), delete

    ddl = _by_dialect(_output(notebook_04, "ddl"))
    assert "PRIMARY KEY AUTOINCREMENT" in ddl["sqlite"], ddl
    assert "id SERIAL NOT NULL" in ddl["postgres"], ddl
    assert "TIMESTAMP WITH TIME ZONE" in ddl["postgres"], ddl
    assert "AUTO_INCREMENT" in ddl["mysql"], ddl
    for sql in ddl.values():
        assert "parts JSON NOT NULL" in sql, ddl
        assert "CREATE INDEX messages_thread_id_id ON messages (thread_id, id)" in sql, ddl

    run = _output(notebook_04, "run")
    ran_on = re.search(r"^Ran on: (.*)$", run, flags=re.MULTILINE)
    assert ran_on, run
    kinds = [k.strip() for k in ran_on.group(1).split(",") if k.strip()]
    assert kinds[0] == "sqlite", run
    for kind in kinds:
        assert f"✓ {kind} (" in run, run
    if IN_CI:
        missing = {"postgres", "mysql"} - set(kinds)
        assert not missing, f"CI must run notebook 04 on Postgres and MariaDB too:\n{run}"

    stop = _output(notebook_04, "stop")
    for pid in re.findall(r"started a throwaway .* server, PID (\d+)", run):
        assert f"(PID {pid})" in stop, stop
        assert _gone(int(pid)), f"database server PID {pid} is still running"


def test_notebook_05_plots_load_runs_and_their_audits(notebook_05) -> None:
    run = _output(notebook_05, "run")
    for where in ("1 instance on SQLite", "2 instances behind nginx", "4 instances behind nginx"):
        assert where in run, run
    assert len(re.findall(r"throughput [\d.]+ turns/s; latency p50 \d+ ms", run)) == 3, run
    assert run.count("audited 8 threads") == 3 and run.count("no integrity faults") == 3, run

    over_time = _output(notebook_05, "over-time").splitlines()
    assert over_time[0].split() == [
        *("second", "turns", "errors"),
        *("p50", "ms", "p95", "ms", "p99", "ms"),
    ]
    assert len(over_time) >= 2, over_time
    assert _images(notebook_05, "over-time") == 1, "the latency and throughput plot"

    scaling = _output(notebook_05, "scaling")
    rows = [line.split() for line in scaling.splitlines() if re.match(r"\s+[124] ", line)]
    assert [r[0] for r in rows] == ["1", "2", "4"], scaling
    assert all(float(r[1]) > 0 and r[-1] == "ok" for r in rows), scaling
    assert _images(notebook_05, "scaling") == 1, "the throughput plot"

    audit = _output(notebook_05, "audit").splitlines()
    assert len(audit) == 3 and all(line.endswith("no integrity faults") for line in audit), audit


@pytest.mark.databases
def test_notebook_06_migrates_a_chapter_4_database_and_shows_the_plans(notebook_06) -> None:
    before = _output(notebook_06, "before")
    assert before.splitlines()[0].startswith("messages(id INTEGER, thread_id"), before
    assert "threads(" not in before and "users(" not in before, "chapter 4 has only messages"
    counted = re.search(r"^(\d+) messages in 3 threads:$", before, flags=re.MULTILINE)
    assert counted, before
    n = int(counted.group(1))
    assert n == 15, before

    upgrade = _output(notebook_06, "upgrade")
    assert "alembic upgrade head" in upgrade, upgrade
    for step in (" -> 0001", "0001 -> 0002", "0002 -> 0003", "0003 -> 0004"):
        assert f"Running upgrade {step}," in upgrade, upgrade

    after = _output(notebook_06, "after")
    assert "alembic_version: 0004" in after, after
    assert "users(id VARCHAR(36), username VARCHAR(64), password_hash" in after, after
    assert "user 'legacy', password hash $argon2" in after, after
    assert re.search(
        r"^threads\(id \S+, turns \S+, user_id \S+, title \S+, created_at \S+, "
        r"updated_at \S+\)$",
        after,
        flags=re.MULTILINE,
    ), after
    assert "index threads_user_id_updated_at_id (user_id, updated_at, id)" in after, after
    listed = re.findall(r"^  \w{8}…  owner=legacy  .* '(.*)'$", after, flags=re.MULTILINE)
    assert listed == ["roll 2d6", "Ysolde of Saltmere here, asking about th", "Привет, мастер 🐉"]
    assert f"messages: {n} before, {n} after, every one unchanged and in order" in after, after

    batch = _output(notebook_06, "batch")
    assert "user_id VARCHAR(36) NOT NULL" in batch, batch
    assert "CONSTRAINT threads_user_id_fkey FOREIGN KEY(user_id) REFERENCES users (id)" in batch

    roundtrip = _output(notebook_06, "roundtrip")
    down, up = roundtrip.split("alembic upgrade head")
    assert "Running downgrade 0001 -> ," in down, roundtrip
    assert "\nthreads(id VARCHAR(36), turns INTEGER)\n" in down, "0003's columns are gone"
    assert "users(" not in down and "index messages_thread_id_id (thread_id, id)" in down, down
    assert "Running upgrade 0003 -> 0004," in up, roundtrip
    assert "threads upgraded again: 3, the same ids, owner, titles and dates" in up, up
    assert (
        f"messages before / after upgrade / at base / upgraded again: {n} / {n} / {n} / {n}, "
        "none changed"
    ) in up, up

    plans_text = _output(notebook_06, "plans")
    ran_on = re.search(r"^Ran on: (.*)$", plans_text, flags=re.MULTILINE)
    assert ran_on, plans_text
    kinds = [k.strip() for k in ran_on.group(1).split(",") if k.strip()]
    assert kinds[0] == "sqlite", plans_text
    if IN_CI:
        missing = {"postgres", "mysql"} - set(kinds)
        assert not missing, f"CI must run notebook 06 on Postgres and MariaDB too:\n{plans_text}"
    plans = _sections(plans_text, r"(sqlite|postgres|mysql): (thread list|history page) at (\d+)")
    assert set(plans) == {
        (kind, query, rev)
        for kind in kinds
        for query in ("thread list", "history page")
        for rev in ("0003", "0004")
    }, sorted(plans)
    pieces = re.split(r"^-- (sqlite|postgres|mysql) \(", plans_text, flags=re.MULTILINE)
    per_kind = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    assert list(per_kind) == kinds, plans_text
    sorts = {"sqlite": "USE TEMP B-TREE FOR ORDER BY", "postgres": "Sort Key:", "mysql": "filesort"}
    for kind in kinds:
        assert f"all {n} messages kept" in per_kind[kind], per_kind[kind]
        unindexed = plans[kind, "thread list", "0003"]
        assert sorts[kind] in unindexed and "   ✗ " in unindexed, unindexed
        assert "threads_user_id_updated_at_id" not in unindexed, unindexed
        indexed = plans[kind, "thread list", "0004"]
        assert "threads_user_id_updated_at_id" in indexed and "   ✓ " in indexed, indexed
        assert sorts[kind] not in indexed, indexed
        for rev in ("0003", "0004"):  # chapter 4 made this index already
            page = plans[kind, "history page", rev]
            assert "messages_thread_id_id" in page and "   ✓ " in page, page

    seqscan = _output(notebook_06, "seqscan")
    if "postgres" in kinds:
        shown = _sections(seqscan, r"(.*)")
        assert len(shown) == 3, seqscan
        forced, tiny, filled = shown.values()
        assert "Backward using threads_user_id_updated_at_id" in forced, forced
        assert "Seq Scan on threads" in tiny and "Sort" in tiny, (
            "the markdown says Postgres scans and sorts a table of three rows when left to "
            f"itself:\n{tiny}"
        )
        assert "Backward using threads_user_id_updated_at_id" in filled and "   ✓ " in filled
    else:
        assert seqscan.startswith("skipped: no Postgres server"), seqscan

    stop = _output(notebook_06, "stop")
    pids = [int(pid) for pid in re.findall(r"stopped the throwaway .* server \(PID (\d+)\)", stop)]
    borrowed = stop.count("dropped this notebook's database on ")
    assert len(pids) + borrowed == len(kinds) - 1, f"one server let go per server used:\n{stop}"
    for pid in pids:
        assert _gone(pid), f"database server PID {pid} is still running"
    removed = re.search(r"^removed (\S+)$", stop, flags=re.MULTILINE)
    assert removed and not Path(removed.group(1)).exists(), "the temporary folder is removed"
    assert "nothing left running" in stop, stop
