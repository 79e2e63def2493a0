"""Chapter 1's checks tell the classic mistakes apart (see tests/mutants.py), and accept a page
that draws the reply another way."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import SOLUTIONS, Edit, Mutant, caught, derive, grade

CHAPTER, SLUG = 1, "01-baseline"
MAIN, PAGE = "backend/main.py", "frontend/app.py"
SHOW_REPLY = '        with st.chat_message("assistant"):\n            st.text(reply)'

MUTANTS = [
    Mutant(
        "health-says-OK",
        (Edit(MAIN, 'return {"status": "ok"}', 'return {"status": "OK"}'),),
        fails="1.1",
        says=r'GET /health must answer exactly \{"status": "ok"\}',
    ),
    Mutant(
        "reply-of-its-own",  # the backend answers without asking the assistant
        (
            Edit(
                MAIN,
                '    return ChatReply(reply="\\n\\n".join(texts))',
                '    return ChatReply(reply=f"You said: {request.prompt}")',
            ),
        ),
        fails="1.2",
        says=r"the reply does not come from the assistant",
    ),
    Mutant(
        "blank-prompts-accepted",
        (Edit(MAIN, ', pattern=r"\\S")', ")"),),
        fails="1.2",
        says=r"POST /chat with a blank prompt answered 200; bad input must get 422",
    ),
    Mutant(
        "reply-outside-a-chat-bubble",
        (Edit(PAGE, SHOW_REPLY, "        st.text(reply)"),),
        fails="1.3",
        says=r"after the prompt, the page must show the assistant's reply",
    ),
    Mutant(
        "prompt-not-shown",
        (
            Edit(
                PAGE,
                '    with st.chat_message("user"):\n        st.text(prompt)',
                "    pass",
            ),
            Edit(
                PAGE,
                '    st.session_state.messages.append(("user", prompt))\n',
                "",
            ),
        ),
        fails="1.3",
        says=r"the page does not show the prompt it sent",
    ),
]


@pytest.mark.parametrize("mutant", [m.param() for m in MUTANTS])
def test_mutant_fails_its_milestone(mutant: Mutant, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path)


def test_a_reply_drawn_with_st_write_passes(tmp_path: Path) -> None:
    """Right but different: the reply in its bubble with st.write, the prompt with st.markdown."""
    changes = [
        Edit(
            PAGE,
            SHOW_REPLY,
            '        with st.chat_message("assistant"):\n            st.write(reply)',
        ),
        Edit(
            PAGE,
            '    with st.chat_message("user"):\n        st.text(prompt)',
            '    with st.chat_message("user"):\n        st.markdown(prompt)',
        ),
    ]
    target = derive(SOLUTIONS / SLUG, tmp_path / "st-write", changes, "st-write")
    graded = grade(CHAPTER, target, tmp_path)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
