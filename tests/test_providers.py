"""The assistant's streaming, its test hooks, its errors and settings (offline: no SDK, no network).

The real SDKs against local protocol servers are in test_providers_openai.py and
test_providers_gemini.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import assistant
from assistant import ProviderConfigError, ProviderError, llm
from assistant.offline import MAX_HOOK_SLOW, OfflineProvider, read_hooks, words
from assistant.providers import PROVIDERS

PROMPTS = (
    "roll 2d6+1",
    "tell me about the dragon and the guild",  # two lore paragraphs: "\n\n" between them
    "hello",
    "what was my first message?",
    "  what?   is   this  ",
    "roll 1000d6",
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ASSISTANT_PROVIDER", "ASSISTANT_TEST_HOOKS", "ASSISTANT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSISTANT_STREAM_DELAY", "0")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def text(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if "text" in part)


def check_stream(items: list[Any]) -> list[dict[str, Any]]:
    """The stream contract of SPEC §3; returns the messages."""
    pieces: list[str] = []
    messages = []
    for item in items:
        if isinstance(item, str):
            assert item, "an empty piece"
            pieces.append(item)
            continue
        assert isinstance(item, dict)
        if item["role"] == "model" and any("text" in part for part in item["parts"]):
            assert "".join(pieces) == text(item)
        else:
            assert pieces == [], "pieces before a tool message"
        pieces = []
        messages.append(item)
    assert pieces == [], "pieces after the last message"
    return messages


# --- offline streaming ---------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_offline_stream_is_the_turn_of_respond(prompt: str) -> None:
    """respond_stream yields the messages respond gives, each model text after its pieces."""
    history = [user("first words"), {"role": "model", "parts": [{"text": "hi"}]}, user(prompt)]
    items = list(assistant.respond_stream(history))
    assert check_stream(items) == assistant.respond(history)


def test_offline_streams_word_by_word_keeping_whitespace() -> None:
    """Each piece is one word with its whitespace; the dice loop is call, response, then text."""
    items = list(assistant.respond_stream([user("roll 2d6+1")]))
    assert [m["role"] for m in items if isinstance(m, dict)] == ["model", "tool", "model"]
    assert isinstance(items[0], dict) and "function_call" in items[0]["parts"][0]
    assert isinstance(items[1], dict) and "function_response" in items[1]["parts"][0]
    pieces = [item for item in items if isinstance(item, str)]
    assert pieces[:2] == ["You ", "rolled "]
    assert all(len(piece.split()) == 1 for piece in pieces)
    lore = [
        i
        for i in assistant.respond_stream([user("the dragon and the guild")])
        if isinstance(i, str)
    ]
    assert any(piece.endswith("\n\n") for piece in lore)
    assert words("  a  b\n") == ["  a  ", "b\n"]
    assert words("   ") == ["   "]
    assert words("") == []


def test_stream_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASSISTANT_STREAM_DELAY seconds between pieces; 0 is allowed; nonsense is refused."""
    monkeypatch.setenv("ASSISTANT_STREAM_DELAY", "0.03")
    started = time.monotonic()
    items = list(assistant.respond_stream([user("hello")]))
    pieces = sum(isinstance(item, str) for item in items)
    assert pieces > 5
    assert time.monotonic() - started >= 0.03 * (pieces - 1) * 0.9
    monkeypatch.setenv("ASSISTANT_STREAM_DELAY", "0")
    started = time.monotonic()
    list(assistant.respond_stream([user("hello")]))
    assert time.monotonic() - started < 0.2
    for bad in ("soon", "-1", "nan", "99"):
        monkeypatch.setenv("ASSISTANT_STREAM_DELAY", bad)
        with pytest.raises(ProviderConfigError, match="ASSISTANT_STREAM_DELAY"):
            assistant.check_settings()


def test_stream_is_lazy_and_closable() -> None:
    """Nothing is computed before the first item; closing early is fine."""
    stream = assistant.respond_stream([user("hello")])
    assert isinstance(next(stream), str)
    stream.close()


def test_respond_stream_of_a_provider_that_cannot_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider with respond only streams each model text as one piece."""

    class Echo:
        def respond(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                {"role": "model", "parts": [{"function_call": {"name": "x", "args": {}}}]},
                {"role": "model", "parts": [{"text": "a "}, {"text": "b"}]},
            ]

    monkeypatch.setitem(PROVIDERS, "echo", Echo)
    monkeypatch.setenv("ASSISTANT_PROVIDER", "echo")
    items = list(assistant.respond_stream([user("x")]))
    assert items[1] == "a b"
    assert check_stream(items) == Echo().respond([])


def test_providers_are_built_once_per_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """respond reuses a built provider (SDK clients keep their connections); a changed
    setting builds a new one."""
    built = []

    def factory() -> OfflineProvider:
        built.append(1)
        return OfflineProvider()

    monkeypatch.setitem(PROVIDERS, "counted", factory)
    monkeypatch.setenv("ASSISTANT_PROVIDER", "counted")
    for _ in range(3):
        assistant.respond([user("hello")])
        list(assistant.respond_stream([user("hello")]))
    assert len(built) == 1
    monkeypatch.setenv("ASSISTANT_MODEL", "another")
    assistant.respond([user("hello")])
    assert len(built) == 2


# --- test hooks ----------------------------------------------------------------------------


def hooks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_TEST_HOOKS", "1")


def test_hooks_are_ordinary_text_without_the_switch() -> None:
    """Without ASSISTANT_TEST_HOOKS=1 a marker is text like any other."""
    prompt = "[test-hook:fail-after=0] [test-hook:slow=30] hello"
    started = time.monotonic()
    assert check_stream(list(assistant.respond_stream([user(prompt)])))
    assert assistant.respond([user("what was my first message?"), user(prompt)])
    reply = assistant.respond([user(prompt), user("what was my first message?")])
    assert prompt in text(reply[0])
    assert time.monotonic() - started < 1


def test_fail_after_zero_fails_before_any_item(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks_on(monkeypatch)
    for prompt in ("[test-hook:fail-after=0] hello", "roll 2d6 [test-hook:fail-after=0]"):
        stream = assistant.respond_stream([user(prompt)])
        with pytest.raises(ProviderError) as excinfo:
            next(stream)
        assert excinfo.value.status == 502
        assert "fail-after" in excinfo.value.detail


def test_fail_after_n_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly N pieces, then ProviderError(502); the text message never comes."""
    hooks_on(monkeypatch)
    for n in (1, 3):
        items: list[Any] = []
        with pytest.raises(ProviderError) as excinfo:
            items.extend(assistant.respond_stream([user(f"hello [test-hook:fail-after={n}]")]))
        assert excinfo.value.status == 502
        assert len(items) == n and all(isinstance(item, str) for item in items)
    # More pieces than the answer has: all of them, then the failure instead of the message.
    items = []
    with pytest.raises(ProviderError):
        items.extend(assistant.respond_stream([user("hi [test-hook:fail-after=999]")]))
    assert items and all(isinstance(item, str) for item in items)
    # A dice roll: the call and the response are messages, not pieces.
    items = []
    with pytest.raises(ProviderError):
        items.extend(assistant.respond_stream([user("roll 2d6 [test-hook:fail-after=1]")]))
    assert [type(item) for item in items] == [dict, dict, str]


def test_fail_after_in_respond_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks_on(monkeypatch)
    with pytest.raises(ProviderError) as excinfo:
        assistant.respond([user("roll 2d6 [test-hook:fail-after=4]")])
    assert excinfo.value.status == 502


def test_slow_waits_before_the_first_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """slow=S waits S seconds first; the marker is not part of what the game master reads."""
    hooks_on(monkeypatch)
    stream = assistant.respond_stream([user("[test-hook:slow=0.3] roll 2d6")])
    started = time.monotonic()
    first = next(stream)
    assert time.monotonic() - started >= 0.29
    rest = list(stream)
    assert check_stream([first, *rest])[0]["parts"][0]["function_call"]["args"]["count"] == 2
    started = time.monotonic()
    assert assistant.respond([user("[test-hook:slow=0.2] hello")])
    assert time.monotonic() - started >= 0.19


def test_hooks_are_read_from_the_latest_prompt_only(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks_on(monkeypatch)
    old = user("[test-hook:fail-after=0] first")
    history = [
        old,
        {"role": "model", "parts": [{"text": "ok"}]},
        user("what was my first message?"),
    ]
    reply = assistant.respond(history)
    assert "[test-hook:fail-after=0] first" in text(reply[0])  # quoted verbatim
    hooks, cleaned = read_hooks([user("x [test-hook:slow=9999]")])
    assert hooks.slow == MAX_HOOK_SLOW
    assert cleaned == [user("x")]
    assert read_hooks([user("plain")])[1] == [user("plain")]


# --- errors, settings, the history mapping -------------------------------------------------


def test_provider_error() -> None:
    error = ProviderError(503, "busy", retry_after=3)
    assert (error.status, error.detail, error.retry_after, str(error)) == (503, "busy", 3, "busy")
    assert ProviderError(504, "slow").retry_after is None
    with pytest.raises(ValueError):
        ProviderError(500, "not a provider status")


def test_check_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The startup check: the provider's name, or an error naming what to set."""
    assert assistant.check_settings() == "offline"
    monkeypatch.setenv("ASSISTANT_PROVIDER", "skynet")
    with pytest.raises(ProviderConfigError, match="ASSISTANT_PROVIDER"):
        assistant.check_settings()
    monkeypatch.setenv("ASSISTANT_PROVIDER", "offline")
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv("ASSISTANT_TIMEOUT", bad)
        with pytest.raises(ProviderConfigError, match="ASSISTANT_TIMEOUT"):
            assistant.check_settings()


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY")]
)
def test_a_missing_key_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, provider: str, variable: str
) -> None:
    monkeypatch.setenv("ASSISTANT_PROVIDER", provider)
    monkeypatch.setenv(variable, "  ")
    with pytest.raises(ProviderConfigError, match=variable):
        assistant.check_settings()
    with pytest.raises(ValueError, match=variable):
        assistant.respond([user("hello")])


def test_entries_pair_calls_with_responses() -> None:
    """A call without its response gets an error response; a response without a call goes;
    consecutive model messages merge; malformed messages are skipped."""
    call = {
        "role": "model",
        "parts": [{"function_call": {"name": "roll_dice", "args": {"count": 1}}}],
    }
    answer = {
        "role": "tool",
        "parts": [{"function_response": {"name": "roll_dice", "response": {"total": 4}}}],
    }
    history = [
        "junk",
        {"role": "user", "parts": "junk"},
        {"role": "tool", "parts": [{"function_response": {"name": "orphan", "response": {}}}]},
        user("a"),
        {"role": "model", "parts": [{"text": "Rolling."}]},
        call,
        user("b"),
        call,
        answer,
        {"role": "model", "parts": [{"text": "A 4."}]},
        {"role": "user", "parts": [{"text": ""}]},
    ]
    got = [(e.role, e.texts, e.calls, e.responses) for e in llm.entries(history)]
    assert got == [
        ("user", ["a"], [], []),
        ("model", ["Rolling."], [("roll_dice", {"count": 1})], []),
        ("tool", [], [], [("roll_dice", llm.MISSING_RESPONSE)]),
        ("user", ["b"], [], []),
        ("model", [], [("roll_dice", {"count": 1})], []),
        ("tool", [], [], [("roll_dice", {"total": 4})]),
        ("model", ["A 4."], [], []),
    ]


def test_retry_after_and_redaction() -> None:
    assert llm.retry_after_seconds("7") == 7
    assert llm.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert llm.retry_after_seconds("soon") is None
    assert llm.retry_after_seconds(None) is None
    assert "sk-" not in llm.short("Incorrect API key provided: sk-proj-abcd****wxyz.")
    assert llm.parse_arguments('{"count": 2}') == ({"count": 2}, None)
    assert llm.parse_arguments("")[1] is None
    assert llm.parse_arguments("{count: 2")[1] is not None
    assert llm.parse_arguments("[1]")[1] is not None
