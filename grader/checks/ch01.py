"""Chapter 1 milestones: /health, /chat through the assistant, the page, /ping."""

from __future__ import annotations

from pathlib import Path

from grader.toolkit.chat import Http
from grader.toolkit.expect import expect
from grader.toolkit.milestone import milestone
from grader.toolkit.preload import in_background
from grader.toolkit.procs import Backend

DICE = "roll 2d6+1"
LORE = "tell me about the dragon"

# The page checks need Streamlit (a second to import): import it while the backend checks run.
in_background("grader.toolkit.page", "1.3")


def reply_to(api: Http, prompt: str) -> str:
    """POST /chat's `reply`, failing unless the answer is `{"reply": str}`."""
    body = api.json("POST", "/chat", json={"prompt": prompt})
    reply = body.get("reply") if isinstance(body, dict) else None
    expect(
        isinstance(reply, str) and reply.strip() != "",
        "POST /chat must answer a JSON object with the assistant's text as `reply`",
        expected={"reply": "You rolled 2d6+1: …"},
        actual=body,
    )
    return reply


@milestone("1.1")
def health_answers_ok(api: Http) -> None:
    """GET /health answers 200 {"status": "ok"}."""
    body = api.json("GET", "/health")
    expect(
        body == {"status": "ok"},
        'GET /health must answer exactly {"status": "ok"}',
        expected={"status": "ok"},
        actual=body,
    )


@milestone("1.2")
def chat_answers_through_the_assistant(api: Http) -> None:
    """POST /chat hands the prompt to the assistant and answers its text."""
    reply = reply_to(api, DICE)
    # The offline assistant's dice answer names the notation and a total; a text of the
    # backend's own would not.
    expect(
        DICE.removeprefix("roll ") in reply
        and any(ch.isdigit() for ch in reply.replace("2d6+1", "")),
        "the reply does not come from the assistant: pass the prompt to respond() and answer "
        "the text of the message it returns",
        expected="the assistant's text, e.g. 'You rolled 2d6+1: 3 + 5 + 1 = 9.'",
        actual=reply,
    )


@milestone("1.2")
def chat_rejects_bad_prompts(api: Http) -> None:
    """A missing, blank or over-long prompt gets 422; the limit itself is fine."""
    for what, body in (
        ("a blank prompt", {"prompt": "   "}),
        ("no prompt", {}),
        ("a prompt of 8,001 characters", {"prompt": "x" * 8001}),
    ):
        r = api.post("/chat", expect_status=None, json=body)
        expect(
            r.status_code == 422,
            f"POST /chat with {what} answered {r.status_code}; bad input must get 422",
            expected="422 with a JSON detail",
            actual=f"{r.status_code}: {r.text[:200]}",
        )
    reply_to(api, "x" * 8000)


@milestone("1.3")
def page_shows_the_reply(target: Path, shared_backend: Backend, api: Http) -> None:
    """The page sends the prompt to the backend and shows the prompt, then the reply."""
    from grader.toolkit.page import Page, bubble_listing, since_last_user

    # The offline assistant answers a prompt the same way every time: ask it first, directly.
    reply = reply_to(api, LORE)
    page = Page(target, shared_backend.url).send(LORE)
    bubbles = page.bubbles
    expect(
        any(b.name == "user" and LORE in b.text for b in bubbles),
        "the page does not show the prompt it sent in a st.chat_message('user')",
        expected=f"user: {LORE}",
        actual=bubble_listing(bubbles),
    )
    expect(
        reply.strip() in since_last_user(bubbles),
        "after the prompt, the page must show the assistant's reply in a "
        "st.chat_message('assistant')",
        expected=f"assistant: {reply}",
        actual=bubble_listing(bubbles),
    )


@milestone("1.4")
def ping_answers_pong(api: Http) -> None:
    """GET /ping answers {"ping": "pong"}."""
    body = api.json("GET", "/ping")
    expect(
        body == {"ping": "pong"},
        'GET /ping must answer {"ping": "pong"}',
        expected={"ping": "pong"},
        actual=body,
    )
