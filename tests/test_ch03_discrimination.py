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
from mutants import RIGHT, Edit, Mutant, assert_caught, grade

CHAPTER, SLUG = 3, "03-stateless-history"
STORE, PAGE = "backend/store.py", "frontend/app.py"

# The history kept in a module-level dict; the table is still created at startup.
DICT = Edit(STORE, "BUSY_TIMEOUT_SECONDS = 10\n", "BUSY_TIMEOUT_SECONDS = 10\nTHREADS: dict = {}\n")
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
        says=r"POST /chat answered, but the thread has no rows in the messages table",
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
        says=r"returned another thread's messages: history is not filtered by thread_id",
    ),
    Mutant(
        "history-newest-first",
        (Edit(STORE, 'WHERE thread_id = ? ORDER BY id"', 'WHERE thread_id = ? ORDER BY id DESC"'),),
        fails="3.1",
        says=r"GET /history for thread A: messages come newest first",
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
]


@pytest.mark.parametrize("mutant", [m.param() for m in MUTANTS])
def test_the_fault_fails_its_milestone(mutant: Mutant, tmp_path: Path):
    assert_caught(grade(CHAPTER, mutant.build(SLUG, tmp_path), tmp_path), CHAPTER, mutant)


def test_a_correct_solution_of_another_shape_passes(tmp_path: Path):
    graded = grade(CHAPTER, RIGHT / "ch03-alternative", tmp_path)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
    assert graded.returncode == 0, graded.output
