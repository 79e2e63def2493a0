"""Chapter 3's checks tell the classic mistakes apart, and accept a correct solution of any shape.

Each mutant is the chapter 3 solution with one fault (see tests/mutants.py). Its milestone must
fail with a `why` that names the fault, the milestones depending on it must be skipped, and
every other milestone must pass. tests/fixtures/right/ch03-alternative is a correct chapter 3
written unlike the solution (a repository class, uuid.hex ids, another column order, named
parameters, explicit BEGIN IMMEDIATE, a page that never calls st.rerun): it must pass everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import RIGHT, Edit, Mutant, caught, grade

CHAPTER, SLUG = 3, "03-stateless-history"
STORE, PAGE = "backend/store.py", "frontend/app.py"

# The history kept in a module-level dict; the table is still created at startup.
# A module-level global goes just above the schema (an anchor that no tuning value moves).
SCHEMA_REGION = "# --8<-- [start:schema]\n"
DICT = Edit(STORE, SCHEMA_REGION, f"THREADS: dict = {{}}\n\n{SCHEMA_REGION}")
READ_DICT = Edit(
    STORE,
    '    return [{"role": role, "parts": json.loads(parts)} for role, parts in rows]',
    "    return list(THREADS.get(str(thread_id), []))",
)
ROWS = '    rows = [(str(thread_id), m["role"], json.dumps(m["parts"])) for m in messages]'
WRITE_DICT = "    THREADS.setdefault(str(thread_id), []).extend(messages)\n"

# The page keeps the turn POST /chat answered in st.session_state and draws from there.
FETCH = '    return backend("GET", f"/history/{thread_id}").json()["messages"]'
KEEP_TURN = Edit(
    PAGE,
    '    return body["thread_id"]',
    '    st.session_state.setdefault("messages", []).extend(body["messages"])\n'
    '    return body["thread_id"]',
)

MUTANTS = [
    Mutant(
        "history-in-a-dict",
        (DICT, READ_DICT, Edit(STORE, ROWS, f"{WRITE_DICT}    rows = []")),
        fails="3.1",
        says=r"POST /chat answered, but A has no rows in the messages table",
    ),
    Mutant(
        "history-read-from-a-dict",  # the rows are written, but a turn reads the dict
        (DICT, READ_DICT, Edit(STORE, ROWS, WRITE_DICT + ROWS)),
        fails="3.2",
        says=r"after the backend was restarted, GET /history is empty: .*kept in process memory",
    ),
    Mutant(
        "history-not-filtered-by-thread",
        (
            Edit(
                STORE,
                '"SELECT role, parts FROM messages WHERE thread_id = ? ORDER BY id",\n'
                "        (str(thread_id),),",
                '"SELECT role, parts FROM messages ORDER BY id",',
            ),
        ),
        fails="3.1",
        says=r"holds another thread's message .*: the history must be filtered by thread_id",
    ),
    Mutant(
        "history-newest-first",
        (Edit(STORE, 'WHERE thread_id = ? ORDER BY id"', 'WHERE thread_id = ? ORDER BY id DESC"'),),
        fails="3.1",
        says=r"GET /history of thread A is newest first",
    ),
    Mutant(
        "delete-without-where",
        (
            Edit(
                STORE,
                'db.execute("DELETE FROM messages WHERE thread_id = ?", (str(thread_id),))',
                'db.execute("DELETE FROM messages")',
            ),
        ),
        fails="3.5",
        says=r"DELETE /history/A also removed thread B's messages",
    ),
    Mutant(
        "page-never-reads-history",
        (Edit(PAGE, FETCH, '    return st.session_state.setdefault("messages", [])'), KEEP_TURN),
        fails="3.3",
        says=r"a new page session .* does not show the whole conversation.*GET /history/",
    ),
    Mutant(
        "page-reads-history-once",  # loads /history into st.session_state on a session's first run
        (
            Edit(
                PAGE,
                FETCH,
                '    if st.session_state.get("loaded") != thread_id:\n'
                "        st.session_state.loaded = thread_id\n"
                '        messages = backend("GET", f"/history/{thread_id}").json()["messages"]\n'
                "        st.session_state.messages = messages\n"
                "    return st.session_state.messages",
            ),
            KEEP_TURN,
        ),
        fails="3.3",
        says=r"did not show a turn another client stored.*instead of keeping messages in st\.session_state",
    ),
    Mutant(
        "create-table-twice",  # works once; the second start finds the table there
        (Edit(STORE, "CREATE TABLE IF NOT EXISTS messages (", "CREATE TABLE messages ("),),
        fails="3.2",
        says=r"exited with code \d+ before answering GET /health: it raised .*table messages already exists",
    ),
    Mutant(
        "no-index",
        (
            Edit(
                STORE,
                "CREATE INDEX IF NOT EXISTS messages_thread_id_id ON messages (thread_id, id);",
                "",
            ),
        ),
        fails="3.1",
        says=r"no index on \(thread_id, id\)",
    ),
    Mutant(
        "history-cached-per-process",  # read-through cache: right on one backend, stale on two
        (
            Edit(STORE, SCHEMA_REGION, f"CACHE: dict = {{}}\n\n{SCHEMA_REGION}"),
            Edit(
                STORE,
                '    rows = db.execute(\n        "SELECT role, parts FROM messages WHERE thread_id = ? ORDER BY id",',
                "    if str(thread_id) in CACHE:\n"
                "        return list(CACHE[str(thread_id)])\n"
                '    rows = db.execute(\n        "SELECT role, parts FROM messages WHERE thread_id = ? ORDER BY id",',
            ),
            Edit(
                STORE,
                '    return [{"role": role, "parts": json.loads(parts)} for role, parts in rows]',
                '    CACHE[str(thread_id)] = [{"role": r, "parts": json.loads(p)} for r, p in rows]\n'
                "    return list(CACHE[str(thread_id)])",
            ),
            Edit(STORE, ROWS, f"{ROWS}\n    CACHE.pop(str(thread_id), None)"),
            Edit(
                STORE,
                '    db.execute("DELETE FROM messages WHERE thread_id = ?", (str(thread_id),))',
                '    db.execute("DELETE FROM messages WHERE thread_id = ?", (str(thread_id),))\n'
                "    CACHE.pop(str(thread_id), None)",
            ),
        ),
        fails="3.4",
        says=r"does not see the turn .* just stored: history is kept in process memory",
    ),
    Mutant(
        "thread-id-kept-in-the-session",  # survives a rerun, not a refresh
        (
            Edit(
                PAGE,
                '    return st.query_params.get("thread_id")',
                '    return st.session_state.get("thread_id")',
            ),
            Edit(
                PAGE,
                '    st.query_params["thread_id"] = thread_id',
                "    st.session_state.thread_id = thread_id",
            ),
        ),
        fails="3.3",
        says=r"the page must keep the thread id in the URL",
    ),
    Mutant(
        "clear-button-forgets-the-backend",  # the page empties, the thread stays
        (Edit(PAGE, '    backend("DELETE", f"/history/{thread_id}")', "    pass"),),
        fails="3.5",
        says=r"the clear_history button did not clear the thread on the backend",
    ),
    Mutant(
        "toggle-hides-the-text-too",
        (Edit(PAGE, '    return "text" in part or show_telemetry', "    return show_telemetry"),),
        fails="3.6",
        says=r"off the page hid more than tool telemetry",
    ),
    Mutant(
        "toggle-does-nothing",
        (Edit(PAGE, '    return "text" in part or show_telemetry', "    return True"),),
        fails="3.6",
        says=r"off the page still shows the tool call or response",
    ),
    Mutant(
        "thread-id-as-any-string",
        (
            Edit(
                "backend/models.py",
                "    thread_id: UUID | None = None",
                "    thread_id: str | None = None",
            ),
        ),
        fails="3.7",
        says=r"a thread_id that is not a UUID answered (200|500), not 422: declare thread_id as `UUID \| None`",
    ),
]


@pytest.mark.parametrize("mutant", [m.param() for m in MUTANTS])
def test_the_fault_fails_its_milestone(mutant: Mutant, tmp_path: Path):
    caught(CHAPTER, SLUG, mutant, tmp_path)


def test_a_correct_solution_of_another_shape_passes(tmp_path: Path):
    graded = grade(CHAPTER, RIGHT / "ch03-alternative", tmp_path)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
    assert graded.returncode == 0, graded.output
