"""Chapter 2's checks tell the classic mistakes apart, and accept a correct page of another shape.

Each mutant is the chapter 2 solution with one fault (tests/mutants.py): its milestone must fail
with a `why` that names the fault, the milestones depending on it must be skipped, and every
other milestone must pass (the demos 2.4 and 2.5 failing as designed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import SOLUTIONS, Edit, Mutant, caught, derive, grade

CHAPTER, SLUG = 2, "02-threads-in-memory"
MAIN, STORE, PAGE = "backend/main.py", "backend/store.py", "frontend/app.py"
ANSWER = "assistant's.\n    return ChatReply(thread_id=thread_id, messages=[user_message, *turn])"
ASK = "\n    turn = ask_assistant([*store.load(thread_id), user_message])"
LOAD = "    return list(THREADS.get(thread_id, []))"
APPEND = "    THREADS.setdefault(thread_id, []).extend(messages)"

MUTANTS = [
    Mutant(
        "answer-without-the-prompt",
        (
            Edit(
                MAIN,
                ANSWER,
                "assistant's.\n    return ChatReply(thread_id=thread_id, messages=turn)",
            ),
        ),
        fails="2.1",
        says=r"the user's message first, then the assistant's",
    ),
    Mutant(
        "a-new-thread-every-turn",
        (
            Edit(
                MAIN, "\n    thread_id = request.thread_id or uuid4()", "\n    thread_id = uuid4()"
            ),
        ),
        fails="2.1",
        says=r"POST /chat with a thread_id answered for another thread",
    ),
    Mutant(
        "one-list-for-everybody",
        (Edit(STORE, LOAD, "    return [m for thread in THREADS.values() for m in thread]"),),
        fails="2.2",
        says=r"holds another thread's message .*filtered by thread_id",
    ),
    Mutant(
        "append-replaces-the-thread",
        (Edit(STORE, APPEND, "    THREADS[thread_id] = list(messages)"),),
        fails="2.2",
        says=r"holds only the latest \d+ of the thread's \d+ messages: the earlier turns were lost",
    ),
    Mutant(
        "keys-of-two-kinds",  # written under the UUID, read under its string: never found
        (Edit(STORE, LOAD, "    return list(THREADS.get(str(thread_id), []))"),),
        fails="2.2",
        says=r"is empty although the thread has \d+ messages",
    ),
    Mutant(
        "assistant-without-the-history",
        (Edit(MAIN, ASK, "\n    turn = ask_assistant([user_message])"),),
        fails="2.2",
        says=r"did not name it: pass respond\(\) the thread's whole history",
    ),
    Mutant(
        "new-message-first",
        (Edit(MAIN, ASK, "\n    turn = ask_assistant([user_message, *store.load(thread_id)])"),),
        fails="2.2",
        says=r"did not name it: pass respond\(\) the thread's whole history, new message last",
    ),
    Mutant(
        "unknown-thread-is-404",
        (
            Edit(
                MAIN,
                "    return History(thread_id=thread_id, messages=store.load(thread_id))",
                "    if not store.load(thread_id):\n"
                '        raise HTTPException(status_code=404, detail="no such thread")\n'
                "    return History(thread_id=thread_id, messages=store.load(thread_id))",
            ),
        ),
        fails="2.2",
        says=r"a thread nobody has used answered 404: such a thread is an empty thread",
    ),
    Mutant(
        "page-forgets-its-thread",
        (
            Edit(
                PAGE,
                '        json={"prompt": prompt, "thread_id": st.session_state.thread_id},',
                '        json={"prompt": prompt, "thread_id": None},',
            ),
        ),
        fails="2.2",
        says=r"the page's second message started a new thread",
    ),
    Mutant(
        "new-chat-keeps-the-thread",
        (
            Edit(
                PAGE,
                "        st.session_state.thread_id = None\n        st.session_state.messages = []",
                "        st.session_state.messages = []",
            ),
        ),
        fails="2.2",
        says=r"after New chat the assistant still remembers the old thread",
    ),
    Mutant(
        "only-the-final-answer-stored",
        (
            Edit(
                MAIN,
                "\n    store.append(thread_id, [user_message, *turn])",
                "\n    store.append(thread_id, [user_message, turn[-1]])",
            ),
        ),
        fails="2.3",
        says=r"holds the prompt and the final answer but not the tool call and its response",
    ),
    Mutant(
        "page-hides-the-telemetry",
        (
            Edit(
                PAGE,
                '    elif "function_call" in part:',
                "    elif False:",
            ),
        ),
        fails="2.3",
        says=r"the page must show the roll_dice call, its response",
    ),
]


@pytest.mark.parametrize("mutant", [m.param() for m in MUTANTS])
def test_mutant_fails_its_milestone(mutant: Mutant, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path)


# A page that draws every message in its own bubble (tool telemetry included) is right too.
ONE_BUBBLE_EACH = Edit(
    PAGE,
    "    for name, group in itertools.groupby(messages, key=speaker):",
    "    for name, group in ((speaker(m), [m]) for m in messages):",
)


def test_one_bubble_per_message_passes(tmp_path: Path) -> None:
    target = derive(SOLUTIONS / SLUG, tmp_path / "one-bubble", [ONE_BUBBLE_EACH], "one-bubble")
    graded = grade(CHAPTER, target, tmp_path)
    assert graded.statuses == {
        "2.1": "passed",
        "2.2": "passed",
        "2.3": "passed",
        "2.4": "expected_failure",
        "2.5": "expected_failure",
    }, graded.output
