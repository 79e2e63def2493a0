"""The `openai` provider: the real `openai` SDK against a local chat-completions server.

No mocks: the SDK speaks HTTP to grader/toolkit/provider_servers.py on 127.0.0.1, which answers
with recorded shapes of OpenAI's API and records what the SDK sent.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

import assistant
from assistant import ProviderError
from assistant.llm import MAX_TOOL_ROUNDS
from assistant.persona import SYSTEM_INSTRUCTION
from grader.toolkit.provider_servers import (
    ProtocolServer,
    Reply,
    fake_openai,
    openai_error,
    openai_refusal,
    openai_stream_text,
    openai_stream_tool_call,
    openai_text,
    openai_tool_call,
)

try:
    importlib.import_module("openai")
except ImportError:  # pragma: no cover
    if os.environ.get("CI"):
        raise  # CI installs the dev extra: a missing SDK is a failure, not a skip
    pytest.skip(
        "the openai SDK is not installed (pip install -e '.[openai]')", allow_module_level=True
    )

from provider_turns import failure, model, user

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProtocolServer]:
    with ProtocolServer() as running:
        monkeypatch.setenv("ASSISTANT_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", running.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("ASSISTANT_TIMEOUT", "5")
        monkeypatch.delenv("ASSISTANT_MODEL", raising=False)
        yield running


def test_plain_answer(server: ProtocolServer) -> None:
    """A text answer; the request carries the key, the model, the persona and the dice tool."""
    server.script(openai_text("Welcome to Saltmere."))
    assert assistant.respond([user("hello")]) == [model("Welcome to Saltmere.")]
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == [
        {"role": "system", "content": SYSTEM_INSTRUCTION},
        {"role": "user", "content": "hello"},
    ]
    (tool,) = request.body["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "roll_dice"
    assert tool["function"]["parameters"]["required"] == ["count", "sides"]
    assert not request.streaming


def test_model_setting(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_MODEL", "llama3.2")
    server.script(openai_text("ok"))
    assistant.respond([user("hello")])
    assert server.requests[0].body["model"] == "llama3.2"


def test_tool_round(server: ProtocolServer) -> None:
    """The model calls roll_dice; the tool runs here; the model gets our result and answers."""
    server.script(
        openai_tool_call("roll_dice", {"count": 2, "sides": 6, "modifier": 1}, "call_abc"),
        openai_text("You rolled well."),
    )
    messages = assistant.respond([user("roll 2d6+1")])
    assert [m["role"] for m in messages] == ["model", "tool", "model"]
    call = messages[0]["parts"][0]["function_call"]
    assert call == {"name": "roll_dice", "args": {"count": 2, "sides": 6, "modifier": 1}}
    response = messages[1]["parts"][0]["function_response"]
    assert response["name"] == "roll_dice"
    result = response["response"]
    assert len(result["rolls"]) == 2 and result["total"] == sum(result["rolls"]) + 1
    assert messages[2] == model("You rolled well.")
    sent = server.requests[1].body["messages"]
    assert sent[1:] == [
        {"role": "user", "content": "roll 2d6+1"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "roll_dice",
                        "arguments": '{"count": 2, "sides": 6, "modifier": 1}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": json.dumps(result)},
    ]


def test_malformed_tool_calls_are_answered_with_errors(server: ProtocolServer) -> None:
    """Bad JSON arguments and an unknown tool become error responses the model reads."""
    server.script(
        openai_tool_call("roll_dice", '{"count": 2, "sides"', "call_1"),
        openai_tool_call("summon_dragon", {"size": "huge"}, "call_2"),
        openai_text("Sorry about that."),
    )
    messages = assistant.respond([user("roll")])
    assert [m["role"] for m in messages] == ["model", "tool", "model", "tool", "model"]
    assert messages[0]["parts"][0]["function_call"] == {"name": "roll_dice", "args": {}}
    assert "not valid JSON" in messages[1]["parts"][0]["function_response"]["response"]["error"]
    assert "Unknown tool" in messages[3]["parts"][0]["function_response"]["response"]["error"]
    second = server.requests[1].body["messages"]
    assert second[2]["tool_calls"][0]["function"]["arguments"] == "{}"
    last = server.requests[2].body["messages"]
    assert last[-1]["tool_call_id"] == "call_2" and "error" in json.loads(last[-1]["content"])


def test_too_many_tool_rounds(server: ProtocolServer) -> None:
    server.script(
        *[openai_tool_call("roll_dice", {"count": 1, "sides": 6})] * (MAX_TOOL_ROUNDS + 1)
    )
    error = failure([user("roll forever")])
    assert error.status == 502 and "too many tool rounds" in error.detail
    assert len(server.requests) == MAX_TOOL_ROUNDS + 1


def test_streaming_pieces_then_message(server: ProtocolServer) -> None:
    """SSE chunks become pieces; joined they equal the finished message's text."""
    pieces = ["The ", "Gilded ", "Eel ", "is ", "open."]
    server.script(openai_stream_text(pieces))
    items = list(assistant.respond_stream([user("where can I drink?")]))
    assert items == [*pieces, model("The Gilded Eel is open.")]
    assert server.requests[0].streaming


def test_streaming_tool_round(server: ProtocolServer) -> None:
    """A streamed call (arguments in pieces), our response, then the streamed answer."""
    server.script(
        openai_stream_tool_call("roll_dice", {"count": 1, "sides": 20}, "call_s"),
        openai_stream_text(["A ", "natural ", "twenty!"]),
    )
    items = list(assistant.respond_stream([user("roll a d20")]))
    assert items[0] == {
        "role": "model",
        "parts": [{"function_call": {"name": "roll_dice", "args": {"count": 1, "sides": 20}}}],
    }
    assert items[1]["role"] == "tool"
    assert items[2:] == ["A ", "natural ", "twenty!", model("A natural twenty!")]
    sent = server.requests[1].body["messages"]
    assert sent[2]["tool_calls"][0]["id"] == "call_s"
    assert sent[3] == {
        "role": "tool",
        "tool_call_id": "call_s",
        "content": json.dumps(items[1]["parts"][0]["function_response"]["response"]),
    }


def test_history_with_an_earlier_tool_round(server: ProtocolServer) -> None:
    """Our stored messages map onto chat completions with ids made from their position."""
    history = [
        user("roll 2d6"),
        {
            "role": "model",
            "parts": [{"function_call": {"name": "roll_dice", "args": {"count": 2, "sides": 6}}}],
        },
        {
            "role": "tool",
            "parts": [
                {
                    "function_response": {
                        "name": "roll_dice",
                        "response": {"rolls": [3, 4], "total": 7},
                    }
                }
            ],
        },
        model("You rolled 7."),
        user("what did I roll?"),
    ]
    server.script(openai_text("A 7."), openai_text("A 7."))
    assistant.respond(history)
    assistant.respond(history)
    first, second = (request.body["messages"] for request in server.requests)
    assert first == second  # stable ids for the same history
    assert first[1:] == [
        {"role": "user", "content": "roll 2d6"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1_0",
                    "type": "function",
                    "function": {"name": "roll_dice", "arguments": '{"count": 2, "sides": 6}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1_0", "content": '{"rolls": [3, 4], "total": 7}'},
        {"role": "assistant", "content": "You rolled 7."},
        {"role": "user", "content": "what did I roll?"},
    ]


def test_rate_limit(server: ProtocolServer) -> None:
    """429 → 503 with Retry-After, and the SDK does not retry on its own."""
    server.script(
        openai_error(
            429,
            "Rate limit reached for requests",
            "requests",
            "rate_limit_exceeded",
            {"Retry-After": "7"},
        )
    )
    error = failure([user("hello")])
    assert (error.status, error.retry_after) == (503, 7)
    assert "rate limit" in error.detail.lower() and "openai" in error.detail
    assert len(server.requests) == 1


def test_server_error(server: ProtocolServer) -> None:
    server.script(openai_error(500, "The server had an error", "server_error"))
    error = failure([user("hello")])
    assert error.status == 502 and "The server had an error" in error.detail
    assert len(server.requests) == 1


def test_bad_key(server: ProtocolServer) -> None:
    """401 → 502 naming the reason and the variable, never the key."""
    server.script(
        openai_error(401, f"Incorrect API key provided: {KEY[:8]}****cdef.", code="invalid_api_key")
    )
    error = failure([user("hello")])
    assert error.status == 502
    assert "invalid_api_key" in error.detail and "OPENAI_API_KEY" in error.detail
    assert KEY[:8] not in error.detail


def test_timeout(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that does not answer within ASSISTANT_TIMEOUT → 504, in about that time."""
    monkeypatch.setenv("ASSISTANT_TIMEOUT", "0.3")
    server.script(Reply(delay=5, body={}))
    started = time.monotonic()
    error = failure([user("hello")])
    assert error.status == 504 and "ASSISTANT_TIMEOUT" in error.detail
    assert time.monotonic() - started < 2
    assert len(server.requests) == 1


def test_timeout_mid_stream(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that stops sending → the pieces so far, then 504."""
    monkeypatch.setenv("ASSISTANT_TIMEOUT", "0.3")
    server.script(openai_stream_text(["Once ", "upon"], stall_after=2, stall=5))
    items: list[Any] = []
    with pytest.raises(ProviderError) as excinfo:
        items.extend(assistant.respond_stream([user("tell me a story")]))
    assert excinfo.value.status == 504
    assert items == ["Once "]


def test_refusal(server: ProtocolServer) -> None:
    server.script(openai_refusal("I can't help with that."))
    error = failure([user("something forbidden")])
    assert error.status == 502 and "refused" in error.detail


def test_content_filter_in_a_stream(server: ProtocolServer) -> None:
    events = [*openai_stream_text(["Hmm"]).events[:2], openai_stream_text([]).events[0]]
    events[-1] = {
        **events[-1],
        "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
    }
    server.script(Reply(events=[*events, "[DONE]"]))
    error = failure([user("something forbidden")], stream=True)
    assert error.status == 502 and "refused" in error.detail


def test_error_event_in_a_stream(server: ProtocolServer) -> None:
    server.script(Reply(events=[{"error": {"message": "overloaded", "type": "server_error"}}]))
    error = failure([user("hello")], stream=True)
    assert error.status == 502 and "overloaded" in error.detail


def test_closing_a_stream_stops_it(server: ProtocolServer) -> None:
    """A client that leaves mid-stream: closing the generator returns at once."""
    server.script(openai_stream_text(["a ", "b"], stall_after=2, stall=5))
    stream = assistant.respond_stream([user("hello")])
    assert next(stream) == "a "
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 1


def test_unreachable_server(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    error = failure([user("hello")])
    assert error.status == 502 and "could not be reached" in error.detail


def test_fake_game_master(server: ProtocolServer) -> None:
    """The responder the grader can run a backend against: a roll, then its total."""
    server.responder = fake_openai
    messages = assistant.respond([user("roll for me")])
    total = messages[1]["parts"][0]["function_response"]["response"]["total"]
    assert messages[2] == model(f"The dice show {total}.")
    items = list(assistant.respond_stream([user("hi there")]))
    assert items == ["You ", "said: ", "hi ", "there", model("You said: hi there")]


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant import openai_compat

    monkeypatch.setattr(openai_compat, "openai", None)
    with pytest.raises(assistant.ProviderConfigError, match=r"\[openai\]"):
        assistant.get_provider("openai")
