"""Chapter 1 milestones: /health, /chat through the assistant, the page, /ping."""

import pytest

from grader.check import expect, fail
from grader.frontend import open_page, rendered_messages, send


@pytest.mark.milestone("1.1")
def test_health(api):
    body = api.json("GET", "/health")
    expect(
        body == {"status": "ok"},
        'GET /health must answer exactly {"status": "ok"}',
        expected={"status": "ok"},
        actual=body,
    )


@pytest.mark.milestone("1.2")
def test_chat_answers_through_the_assistant(api):
    body = api.json("POST", "/chat", json={"prompt": "roll 2d6+1"})
    reply = body.get("reply") if isinstance(body, dict) else None
    expect(
        isinstance(reply, str),
        "POST /chat must answer a JSON object with a string `reply`",
        expected={"reply": "You rolled 2d6+1: …"},
        actual=body,
    )
    # The offline assistant's dice answer names the total; any reply of its own would not.
    expect(
        "2d6+1" in reply and any(ch.isdigit() for ch in reply.replace("2d6+1", "")),
        "the reply does not come from the assistant's dice roll",
        expected="the assistant's text, e.g. 'You rolled 2d6+1: 3 + 5 + 1 = 9.'",
        actual=reply,
    )


@pytest.mark.milestone("1.2")
def test_chat_rejects_a_blank_prompt(api):
    for bad in ({"prompt": "   "}, {}, {"prompt": "x" * 8001}):
        r = api.post("/chat", expect_status=None, json=bad)
        expect(
            r.status_code == 422,
            "POST /chat must reject a missing, blank or over-long prompt with 422",
            expected=f"422 for {str(bad)[:40]}",
            actual=f"{r.status_code}: {r.text[:200]}",
        )


@pytest.mark.milestone("1.3")
def test_page_shows_the_reply(target, shared_backend):
    at = open_page(target, shared_backend.url)
    at = send(at, shared_backend.url, "tell me about the dragon")
    if at.error:
        fail("the page shows an error after sending a message", actual=at.error[0].value)
    messages = rendered_messages(at)
    roles = [name for name, _ in messages]
    expect(
        roles[-2:] == ["user", "assistant"],
        "after sending a message the page must show it, then the assistant's reply",
        expected=["user", "assistant"],
        actual=messages,
    )
    expect(
        messages[-1][1].strip() != "",
        "the assistant's chat message on the page is empty",
        actual=messages,
    )


@pytest.mark.milestone("1.4")
def test_ping(api):
    body = api.json("GET", "/ping")
    expect(
        body == {"ping": "pong"},
        'GET /ping must answer {"ping": "pong"}',
        expected={"ping": "pong"},
        actual=body,
    )
