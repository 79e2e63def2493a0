"""Chapter 5's checks catch the classic scale-out mistakes and say which one it is.

Each mutant is the chapter 5 solution with one fault (see tests/mutants.py); it must fail its
milestone with a `why` naming the fault, every milestone before it passing (the later ones
are not graded).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mutants import SOLUTIONS, Edit, Mutant, Overlay, caught, derive, grade, runs

CHAPTER, SLUG = 5, "05-scale-out"
MAIN, STORE, KEYS = "backend/main.py", "backend/store.py", "backend/idempotency.py"
DB = "backend/db.py"
SQLITE, POSTGRES, MYSQL = (
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.databases),
    pytest.param("mysql", marks=pytest.mark.databases),
)
LOCKED_TURN = "    with store.locked_thread(thread_id) as db:\n"
READ_IN_TURN = LOCKED_TURN + "        history = store.load_history(db, thread_id)\n"
STALE = r"(turns on one thread interleaved|lacked turns stored before them)"

MUTANTS = {
    "no-lock": Mutant(
        "no-lock",
        (Edit(MAIN, LOCKED_TURN, "    with Database() as db:\n"),),
        fails="5.2",
        says=STALE + r".*Two turns read the history at once",
    ),
    "read-before-lock": Mutant(
        "read-before-lock",
        (
            Edit(
                MAIN,
                READ_IN_TURN,
                "    with Database() as db:\n"
                "        history = store.load_history(db, thread_id)\n" + LOCKED_TURN,
            ),
        ),
        fails="5.2",
        says=STALE + r".*Two turns read the history at once",
    ),
    "turn-in-two-transactions": Mutant(  # the prompt first, "so it is never lost"
        "turn-in-two-transactions",
        (
            Edit(
                MAIN,
                READ_IN_TURN + "        new_messages = ask_assistant([*history, user_message])"
                "  # a 502 here stores nothing\n"
                "        reply = ChatReply(thread_id=thread_id, messages=[user_message, "
                "*new_messages])\n"
                "        store.append_messages(db, thread_id, [user_message, *new_messages])\n",
                READ_IN_TURN + "        store.append_messages(db, thread_id, [user_message])\n"
                "    new_messages = ask_assistant([*history, user_message])\n"
                "    reply = ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])\n"
                + LOCKED_TURN
                + "        store.append_messages(db, thread_id, new_messages)\n",
            ),
        ),
        fails="5.2",
        says=STALE + r".*(Two turns read the history at once|no message before these turns)",
    ),
    "process-lock": Mutant(
        "process-lock",
        (Overlay(STORE, "wrong/ch05-process-lock.py", replaces=("locked_thread",)),),
        fails="5.2",
        says=r"through one instance took turns.*lock in process memory \(threading.Lock\)",
    ),
    "lock-message-rows": Mutant(
        "lock-message-rows",
        (Overlay(STORE, "wrong/ch05-lock-message-rows.py", replaces=("lock_thread",)),),
        fails="5.2",
        says=STALE + r".*locks nothing when there are none",
    ),
    "sqlite-only-lock": Mutant(
        "sqlite-only-lock",
        (Overlay(STORE, "wrong/ch05-sqlite-only-lock.py", replaces=("lock_thread",)),),
        fails="5.2",
        says=STALE + r".*Two turns read the history at once",
    ),
    "replay-recomputes": Mutant(  # "the same question gets the same kind of answer"
        "replay-recomputes",
        (
            Edit(
                MAIN,
                '        headers = {"Idempotent-Replayed": "true"}\n'
                "        return JSONResponse(claimed.body, claimed.status_code, headers=headers)\n",
                '        user_message = {"role": "user", "parts": [{"text": body.prompt}]}\n'
                "        again = ask_assistant([user_message])\n"
                '        thread_id = claimed.body["thread_id"]\n'
                "        return ChatReply(thread_id=thread_id, messages=[user_message, *again])\n",
            ),
        ),
        fails="5.3",
        says=r"must get the first answer again, replayed from the database \(not computed again\)",
    ),
    "keys-in-a-dict": Mutant(
        "keys-in-a-dict",
        (Overlay(KEYS, "wrong/ch05-keys-in-a-dict.py", replaces=("claim", "complete", "release")),),
        fails="5.3",
        says=r"the retry stored its turn a second time.*keep keys in the database",
    ),
    "key-after-turn": Mutant(
        "key-after-turn",
        (
            Edit(
                MAIN,
                "        if claimed is not None:\n            idempotency.complete(",
                "    if claimed is not None:\n        idempotency.complete(",
            ),
            Overlay(KEYS, "wrong/ch05-key-after-turn.py", replaces=("claim", "complete")),
        ),
        fails="5.3",
        says=r"(checking for the key and then storing it is two steps|copies that found no key "
        r"all ran the turn, then collided storing the key)",
    ),
    "ready-without-database": Mutant(
        "ready-without-database",
        (
            Edit(
                MAIN,
                "await anyio.to_thread.run_sync(ping_database, abandon_on_cancel=True)",
                "await anyio.sleep(0)",
            ),
        ),
        fails="5.4",
        says=r"GET /health/ready answered 200 at once: readiness must ask the database",
    ),
    "ready-without-timeout": Mutant(
        "ready-without-timeout",
        (Edit(MAIN, "READY_TIMEOUT_SECONDS = 1\n", "READY_TIMEOUT_SECONDS = 30\n"),),
        fails="5.4",
        says=r"must answer 503 within about a second: give its database round trip a timeout",
    ),
    "no-deadline": Mutant(  # "Postgres has statement_timeout": not when it is frozen
        "no-deadline",
        (Edit(DB, '    if kind == "postgresql":\n        cut_after_deadline(engine)\n', ""),),
        fails="5.4",
        says=r"with the database frozen, a turn must get 503 within about 6 s.*deadline of "
        r"its own",
    ),
    "ready-keeps-a-connection": Mutant(  # "a probe should not borrow from the pool each time"
        "ready-keeps-a-connection",
        (
            Edit(
                MAIN,
                "def ping_database() -> None:\n    with Database() as db:\n        store.ping(db)\n",
                "_probe = []\n\n\ndef ping_database() -> None:\n    if not _probe:\n"
                "        _probe.append(engine.connect())\n"
                '    _probe[0].exec_driver_sql("SELECT 1")\n',
            ),
        ),
        fails="5.4",
        says=r"once the database answers again, /health/ready must say 200 by itself, without "
        r"a restart of the backend",
    ),
    "health-touches-database": Mutant(
        "health-touches-database",
        (
            Edit(
                MAIN,
                "async def health() -> dict[str, str]:\n",
                "def health() -> dict[str, str]:\n    ping_database()\n",
            ),
        ),
        fails="5.4",
        says=r"GET /health \(liveness\) must answer 200 at once: it must not touch the database",
    ),
    "exits-on-sigterm": Mutant(  # "shut down quickly": the turns in flight are cut off
        "exits-on-sigterm",
        (
            Edit(
                MAIN,
                "    yield\n    # Close the pool",
                "    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n    yield\n"
                "    # Close the pool",
            ),
            Edit(
                MAIN,
                "from collections.abc import AsyncIterator\n",
                "import os\nimport signal\nfrom collections.abc import AsyncIterator\n",
            ),
        ),
        fails="5.6",
        says=r"exited at once on SIGTERM, with a turn still in flight",
    ),
}

# One database per fault where the fault is the same on all three; two where they differ (a
# lock SQLite ignores, the servers' own locking).
RUNS = [
    ("no-lock", SQLITE),
    ("no-lock", MYSQL),
    ("read-before-lock", POSTGRES),
    ("process-lock", POSTGRES),
    ("lock-message-rows", POSTGRES),
    ("sqlite-only-lock", POSTGRES),
    ("keys-in-a-dict", SQLITE),
    ("replay-recomputes", SQLITE),
    ("key-after-turn", SQLITE),
    ("ready-without-database", POSTGRES),
    ("ready-without-timeout", POSTGRES),
    ("no-deadline", POSTGRES),
    ("ready-keeps-a-connection", MYSQL),
    ("health-touches-database", MYSQL),
    ("exits-on-sigterm", SQLITE),
]


@pytest.mark.parametrize(("mutant", "db"), runs(MUTANTS, RUNS))
def test_the_fault_fails_its_milestone(mutant: Mutant, db: str, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path, db)


def test_history_in_memory_fails_behind_nginx(tmp_path: Path) -> None:
    """The fault chapter 3 removed, made again: through nginx each instance sees only its own
    turns. (The later milestones fail on it too, so only 5.1's verdict is asserted.)"""
    changes = (
        Overlay(
            STORE,
            "wrong/ch05-history-in-memory.py",
            replaces=("append_messages", "load_history"),
        ),
    )
    target = derive(SOLUTIONS / SLUG, tmp_path / "history-in-memory", changes, "history-in-memory")
    graded = grade(CHAPTER, target, tmp_path, milestones=["5.1"])
    assert graded.statuses["5.1"] == "failed", graded.output
    assert re.search(r"did not see turns another instance stored", graded.why("5.1")), graded.why(
        "5.1"
    )


def test_storing_after_answering_loses_acknowledged_turns_when_killed(tmp_path: Path) -> None:
    """Answer 200, store a moment later: a SIGKILL in between loses turns the clients were told
    were stored. (Later turns then miss earlier ones, so 5.2 fails too: only 5.5's verdict is
    asserted.)"""
    changes = (Overlay(MAIN, "wrong/ch05-store-after-answer.py", replaces=("run_turn",)),)
    target = derive(SOLUTIONS / SLUG, tmp_path / "store-after-answer", changes, "late-store")
    graded = grade(CHAPTER, target, tmp_path, milestones=["5.5"])
    assert graded.statuses["5.5"] == "failed", graded.output
    why = graded.why("5.5")
    assert re.search(r"does not hold each acknowledged turn exactly once", why), why


@pytest.mark.parametrize("db", [SQLITE])
def test_a_turn_in_two_transactions_interleaves(db: str, tmp_path: Path) -> None:
    """The prompt stored first, the replies after: another turn gets in between (5.2). A SIGKILL
    between the two leaves a half turn, which 5.5 catches when the kill lands there, so 5.5 may
    fail as well: only 5.2's verdict is asserted."""
    mutant = MUTANTS["turn-in-two-transactions"]
    graded = grade(CHAPTER, mutant.build(SLUG, tmp_path), tmp_path, db, milestones=["5.2"])
    assert graded.statuses["5.2"] == "failed", graded.output
    assert re.search(mutant.says, graded.why("5.2"), re.DOTALL), graded.why("5.2")


SELECT_FOR_UPDATE = (Overlay(STORE, "right/ch05-select-for-update.py", replaces=("lock_thread",)),)
ADVISORY_LOCK = (Overlay(STORE, "right/ch05-advisory-lock.py", replaces=("lock_thread",)),)


@pytest.mark.parametrize(
    ("name", "changes", "db"),
    [
        pytest.param(
            "select-for-update",
            SELECT_FOR_UPDATE,
            *POSTGRES.values,
            id="sfu-postgres",
            marks=POSTGRES.marks,
        ),
        pytest.param(
            "select-for-update",
            SELECT_FOR_UPDATE,
            *MYSQL.values,
            id="sfu-mysql",
            marks=MYSQL.marks,
        ),
        pytest.param(
            "advisory-lock",
            ADVISORY_LOCK,
            *POSTGRES.values,
            id="advisory-postgres",
            marks=POSTGRES.marks,
        ),
    ],
)
def test_a_right_variant_passes(name: str, changes: tuple, db: str, tmp_path: Path) -> None:
    """Other right ways to serialize turns: the checks read only the messages table."""
    target = derive(SOLUTIONS / SLUG, tmp_path / name, changes, name)
    graded = grade(CHAPTER, target, tmp_path, db)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
