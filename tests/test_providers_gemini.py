"""The `gemini` provider: the real `google-genai` SDK against a local Gemini REST server.

No mocks: the SDK speaks HTTP (generateContent, streamGenerateContent?alt=sse) to
grader/toolkit/provider_servers.py on 127.0.0.1, which answers with recorded shapes of the
Gemini API and records what the SDK sent.
"""

from __future__ import annotations

import importlib
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
    fake_gemini,
    gemini_error,
    gemini_function_call,
    gemini_refusal,
    gemini_stream_function_call,
    gemini_stream_text,
    gemini_text,
)

try:
    importlib.import_module("google.genai")
except ImportError:  # pragma: no cover
    if os.environ.get("CI"):
        raise  # CI installs the dev extra: a missing SDK is a failure, not a skip
    pytest.skip(
        "the google-genai SDK is not installed (pip install -e '.[gemini]')",
        allow_module_level=True,
    )

from provider_turns import failure, model, user

KEY = "AIzaTest0123456789"
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProtocolServer]:
    with ProtocolServer() as running:
        monkeypatch.setenv("ASSISTANT_PROVIDER", "gemini")
        monkeypatch.setenv("GEMINI_BASE_URL", running.url)
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
        monkeypatch.setenv("ASSISTANT_TIMEOUT", "5")
        monkeypatch.delenv("ASSISTANT_MODEL", raising=False)
        yield running


def declared_parameters(declaration: dict[str, Any]) -> dict[str, Any]:
    # The SDK sends the JSON schema under its snake_case name (the API reads both spellings).
    return declaration.get("parametersJsonSchema") or declaration["parameters_json_schema"]


def test_plain_answer(server: ProtocolServer) -> None:
    """A text answer; the request carries the key, the persona as system instruction, the tool."""
    server.script(gemini_text("Welcome to Saltmere."))
    assert assistant.respond([user("hello")]) == [model("Welcome to Saltmere.")]
    (request,) = server.requests
    assert request.path == GENERATE
    assert request.headers["x-goog-api-key"] == KEY
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert request.body["systemInstruction"]["parts"] == [{"text": SYSTEM_INSTRUCTION}]
    (tool,) = request.body["tools"]
    (declaration,) = tool["functionDeclarations"]
    assert declaration["name"] == "roll_dice"
    assert declared_parameters(declaration)["required"] == ["count", "sides"]


def test_model_setting(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_MODEL", "gemini-2.5-pro")
    server.script(gemini_text("ok"))
    assistant.respond([user("hello")])
    assert server.requests[0].path == "/v1beta/models/gemini-2.5-pro:generateContent"


def test_tool_round(server: ProtocolServer) -> None:
    """The model calls roll_dice; our function response goes back as a user content."""
    server.script(
        gemini_function_call("roll_dice", {"count": 3, "sides": 8, "modifier": -2}),
        gemini_text("The dice have spoken."),
    )
    messages = assistant.respond([user("roll 3d8-2")])
    assert [m["role"] for m in messages] == ["model", "tool", "model"]
    assert messages[0]["parts"][0]["function_call"] == {
        "name": "roll_dice",
        "args": {"count": 3, "sides": 8, "modifier": -2},
    }
    result = messages[1]["parts"][0]["function_response"]["response"]
    assert len(result["rolls"]) == 3 and result["total"] == sum(result["rolls"]) - 2
    assert messages[2] == model("The dice have spoken.")
    contents = server.requests[1].body["contents"]
    assert contents[1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "roll_dice",
                        "args": {"count": 3, "sides": 8, "modifier": -2},
                    }
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "roll_dice", "response": result}}],
        },
    ]


def test_unknown_tool_is_answered_with_an_error(server: ProtocolServer) -> None:
    server.script(gemini_function_call("summon_dragon", {}), gemini_text("Never mind."))
    messages = assistant.respond([user("summon")])
    assert "Unknown tool" in messages[1]["parts"][0]["function_response"]["response"]["error"]
    sent = server.requests[1].body["contents"][-1]["parts"][0]["functionResponse"]
    assert sent["name"] == "summon_dragon" and "error" in sent["response"]


def test_too_many_tool_rounds(server: ProtocolServer) -> None:
    server.script(
        *[gemini_function_call("roll_dice", {"count": 1, "sides": 6})] * (MAX_TOOL_ROUNDS + 1)
    )
    error = failure([user("roll forever")])
    assert error.status == 502 and "too many tool rounds" in error.detail
    assert len(server.requests) == MAX_TOOL_ROUNDS + 1


def test_streaming_pieces_then_message(server: ProtocolServer) -> None:
    pieces = ["Vessarine ", "sleeps ", "beyond ", "the harbor."]
    server.script(gemini_stream_text(pieces))
    items = list(assistant.respond_stream([user("where is the dragon?")]))
    assert items == [*pieces, model("Vessarine sleeps beyond the harbor.")]
    assert server.requests[0].path == STREAM and server.requests[0].query == "alt=sse"


def test_streaming_tool_round(server: ProtocolServer) -> None:
    server.script(
        gemini_stream_function_call("roll_dice", {"count": 1, "sides": 20}),
        gemini_stream_text(["Critical ", "hit!"]),
    )
    items = list(assistant.respond_stream([user("roll a d20")]))
    assert items[0]["parts"][0]["function_call"] == {
        "name": "roll_dice",
        "args": {"count": 1, "sides": 20},
    }
    assert items[1]["role"] == "tool"
    assert items[2:] == ["Critical ", "hit!", model("Critical hit!")]
    response = server.requests[1].body["contents"][-1]
    assert response["role"] == "user"
    assert (
        response["parts"][0]["functionResponse"]["response"]
        == items[1]["parts"][0]["function_response"]["response"]
    )


def test_history_with_an_earlier_tool_round(server: ProtocolServer) -> None:
    """Our stored messages are Gemini contents; tool messages become user function responses."""
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
    server.script(gemini_text("A 7."))
    assistant.respond(history)
    assert server.requests[0].body["contents"] == [
        {"role": "user", "parts": [{"text": "roll 2d6"}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "roll_dice", "args": {"count": 2, "sides": 6}}}],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "roll_dice",
                        "response": {"rolls": [3, 4], "total": 7},
                    }
                }
            ],
        },
        {"role": "model", "parts": [{"text": "You rolled 7."}]},
        {"role": "user", "parts": [{"text": "what did I roll?"}]},
    ]


def test_rate_limit_with_retry_after(server: ProtocolServer) -> None:
    server.script(
        gemini_error(
            429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", headers={"Retry-After": "7"}
        )
    )
    error = failure([user("hello")])
    assert (error.status, error.retry_after) == (503, 7)
    assert "rate limiting" in error.detail and "RESOURCE_EXHAUSTED" in error.detail
    assert len(server.requests) == 1  # the SDK's retries are off


def test_rate_limit_with_retry_info(server: ProtocolServer) -> None:
    """Gemini says when to retry in the body (google.rpc.RetryInfo) rather than a header."""
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}
    server.script(gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", [retry_info]))
    assert failure([user("hello")]).retry_after == 17


def test_server_error(server: ProtocolServer) -> None:
    server.script(gemini_error(500, "INTERNAL", "An internal error has occurred."))
    error = failure([user("hello")])
    assert error.status == 502 and "INTERNAL" in error.detail
    assert len(server.requests) == 1


def test_overloaded_is_503(server: ProtocolServer) -> None:
    server.script(gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
    error = failure([user("hello")])
    assert error.status == 503 and "overloaded" in error.detail


@pytest.mark.parametrize(
    "reply",
    [
        gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        ),
    ],
    ids=["401", "400-API_KEY_INVALID"],
)
def test_bad_key(server: ProtocolServer, reply: Reply) -> None:
    server.script(reply)
    error = failure([user("hello")])
    assert error.status == 502
    assert "rejected the API key" in error.detail and "GEMINI_API_KEY" in error.detail
    assert KEY not in error.detail


def test_timeout(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_TIMEOUT", "0.3")
    server.script(Reply(delay=5, body={}))
    started = time.monotonic()
    error = failure([user("hello")])
    assert error.status == 504 and "ASSISTANT_TIMEOUT" in error.detail
    assert time.monotonic() - started < 2
    assert len(server.requests) == 1


def test_timeout_mid_stream(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_TIMEOUT", "0.3")
    server.script(gemini_stream_text(["Once ", "upon ", "a time"], stall_after=1, stall=5))
    items: list[Any] = []
    with pytest.raises(ProviderError) as excinfo:
        items.extend(assistant.respond_stream([user("tell me a story")]))
    assert excinfo.value.status == 504
    assert items == ["Once "]


def test_safety_refusal(server: ProtocolServer) -> None:
    server.script(gemini_refusal("SAFETY"))
    error = failure([user("something forbidden")])
    assert error.status == 502 and "refused" in error.detail and "SAFETY" in error.detail


def test_blocked_prompt(server: ProtocolServer) -> None:
    server.script(Reply(body={"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))
    error = failure([user("something forbidden")])
    assert error.status == 502 and "refused" in error.detail


def test_refusal_mid_stream(server: ProtocolServer) -> None:
    """Pieces already sent, then the last chunk says SAFETY: the turn fails (nothing to store)."""
    reply = gemini_stream_text(["It ", "was "])
    reply.events[-1]["candidates"][0]["finishReason"] = "SAFETY"
    server.script(reply)
    items: list[Any] = []
    with pytest.raises(ProviderError) as excinfo:
        items.extend(assistant.respond_stream([user("tell me")]))
    assert excinfo.value.status == 502 and "refused" in excinfo.value.detail
    assert items == ["It ", "was "]


def test_empty_candidate(server: ProtocolServer) -> None:
    server.script(
        Reply(
            body={
                "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP"}]
            }
        )
    )
    error = failure([user("hello")])
    assert error.status == 502 and "empty" in error.detail


def test_closing_a_stream_stops_it(server: ProtocolServer) -> None:
    server.script(gemini_stream_text(["a ", "b"], stall_after=1, stall=5))
    stream = assistant.respond_stream([user("hello")])
    assert next(stream) == "a "
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 1


def test_fake_game_master(server: ProtocolServer) -> None:
    server.responder = fake_gemini
    messages = assistant.respond([user("roll for me")])
    total = messages[1]["parts"][0]["function_response"]["response"]["total"]
    assert messages[2] == model(f"The dice show {total}.")
    items = list(assistant.respond_stream([user("hi there")]))
    assert items == ["You ", "said: ", "hi ", "there", model("You said: hi there")]


def test_thoughts_and_signatures(server: ProtocolServer) -> None:
    """Thought parts are not the answer; within the turn the model's parts go back as they
    came, thought signature included (Gemini 3 rejects a function call without it)."""
    call = {
        "functionCall": {"name": "roll_dice", "args": {"count": 1, "sides": 6}},
        "thoughtSignature": "c2lnbmF0dXJl",
    }
    thinking = {"text": "The player wants a roll.", "thought": True}
    server.script(
        Reply(events=[{"candidates": [{"content": {"role": "model", "parts": [thinking, call]}}]}]),
        gemini_stream_text(["Rolled."]),
    )
    items = list(assistant.respond_stream([user("roll a d6")]))
    assert [type(item) for item in items] == [dict, dict, str, dict]
    assert items[0]["parts"] == [
        {"function_call": {"name": "roll_dice", "args": {"count": 1, "sides": 6}}}
    ]
    sent = server.requests[1].body["contents"][1]
    assert sent["role"] == "model"
    assert sent["parts"][1]["thoughtSignature"] == "c2lnbmF0dXJl"


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant import gemini

    monkeypatch.setattr(gemini, "genai", None)
    with pytest.raises(assistant.ProviderConfigError, match=r"\[gemini\]"):
        assistant.get_provider("gemini")
