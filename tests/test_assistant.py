"""Unit tests for the shared chat engine in `assistant/` (offline provider, no network)."""

from __future__ import annotations

import copy
import json
import random
import re
import time
from typing import Any

import pytest

import assistant
from assistant import Provider, respond, tools
from assistant.dice import DiceError, DiceRequest, parse_dice, roll_dice
from assistant.offline import OfflineProvider
from assistant.providers import PROVIDERS, get_provider

PART_KEYS = {"text", "function_call", "function_response"}
LIMITS = ("1 to 100 dice", "2 to 1000 sides", "-1000 and +1000")


@pytest.fixture(autouse=True)
def _offline_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may export another provider; these tests are about the offline one.
    monkeypatch.delenv("ASSISTANT_PROVIDER", raising=False)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text}]}


def assert_shape(messages: list[dict[str, Any]]) -> None:
    """Every message obeys the contract and survives a JSON round trip."""
    assert isinstance(messages, list)
    assert messages
    assert json.loads(json.dumps(messages)) == messages
    for message in messages:
        assert set(message) == {"role", "parts"}
        assert message["role"] in {"user", "model", "tool"}
        assert isinstance(message["parts"], list)
        assert message["parts"]
        for part in message["parts"]:
            assert isinstance(part, dict)
            assert len(part) == 1
            (key,) = part
            assert key in PART_KEYS
            if key == "text":
                assert isinstance(part["text"], str)
                assert part["text"]
            elif key == "function_call":
                assert set(part[key]) == {"name", "args"}
                assert isinstance(part[key]["args"], dict)
            else:
                assert set(part[key]) == {"name", "response"}
                assert isinstance(part[key]["response"], dict)


def reply_text(history: list[Any]) -> str:
    """The single model text message a non-dice turn must produce."""
    messages = respond(history)
    assert_shape(messages)
    assert len(messages) == 1
    assert messages[0]["role"] == "model"
    return messages[0]["parts"][0]["text"]


def roll(history: list[Any]) -> tuple[dict, dict, str]:
    """The call args, tool response and text of a dice turn."""
    messages = respond(history)
    assert_shape(messages)
    assert [m["role"] for m in messages] == ["model", "tool", "model"]
    call = messages[0]["parts"][0]["function_call"]
    response = messages[1]["parts"][0]["function_response"]
    assert call["name"] == response["name"] == "roll_dice"
    return call["args"], response["response"], messages[2]["parts"][0]["text"]


# --- dice ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "args"),
    [
        ("roll dice 2d6+1", {"count": 2, "sides": 6, "modifier": 1}),
        ("roll 1d20", {"count": 1, "sides": 20, "modifier": 0}),
        ("roll 3d8-2", {"count": 3, "sides": 8, "modifier": -2}),
        ("Roll d6", {"count": 1, "sides": 6, "modifier": 0}),
        ("ROLL 4D10 + 3 please", {"count": 4, "sides": 10, "modifier": 3}),
        ("Could you roll 2d6 - 1 for me?", {"count": 2, "sides": 6, "modifier": -1}),
        ("roll 100d1000+1000", {"count": 100, "sides": 1000, "modifier": 1000}),
        ("roll 1d2-1000", {"count": 1, "sides": 2, "modifier": -1000}),
        ("roll 2d6.", {"count": 2, "sides": 6, "modifier": 0}),
    ],
)
def test_dice_roll_turn(prompt: str, args: dict[str, int]) -> None:
    call_args, result, text = roll([user(prompt)])
    assert call_args == args
    rolls = result["rolls"]
    assert len(rolls) == args["count"]
    assert all(1 <= r <= args["sides"] for r in rolls)
    assert result["modifier"] == args["modifier"]
    assert result["total"] == sum(rolls) + args["modifier"]
    assert text.endswith(f"= {result['total']}.")
    assert str(result["total"]) in text


def test_dice_text_format() -> None:
    _, result, text = roll([user("roll dice 2d6+1")])
    a, b = result["rolls"]
    assert text == f"You rolled 2d6+1: {a} + {b} + 1 = {a + b + 1}."
    _, result, text = roll([user("roll 3d8-2")])
    a, b, c = result["rolls"]
    assert text == f"You rolled 3d8-2: {a} + {b} + {c} - 2 = {a + b + c - 2}."
    _, result, text = roll([user("roll d20")])
    assert text == f"You rolled 1d20: {result['rolls'][0]} = {result['total']}."


def test_dice_rolls_are_pinned() -> None:
    # The seed is sha256(json.dumps(history, sort_keys=True)); changing it breaks black-box checks.
    _, result, text = roll([user("roll dice 2d6+1")])
    assert result == {"rolls": [4, 3], "modifier": 1, "total": 8}
    assert text == "You rolled 2d6+1: 4 + 3 + 1 = 8."


def test_dice_deterministic_for_same_history() -> None:
    history = [user("hi"), model("Hello!"), user("roll 10d20+3")]
    first = respond(history)
    assert respond(copy.deepcopy(history)) == first
    # Key order in the dicts must not matter either.
    reordered = [{"parts": m["parts"], "role": m["role"]} for m in history]
    assert respond(reordered) == first


def test_dice_differ_across_histories() -> None:
    results = {
        tuple(roll([user(f"message {i}"), user("roll 10d20")])[1]["rolls"]) for i in range(5)
    }
    assert len(results) > 1


@pytest.mark.parametrize(
    "prompt",
    [
        "roll 999999d6",
        "roll 101d6",
        "roll 0d6",
        "roll 2d1",
        "roll 2d0",
        "roll 1d1001",
        "roll 2d6+1001",
        "roll 2d6-1001",
        "roll 2d999999999999",
        "roll " + "9" * 5000 + "d6",
        "roll 1d6+" + "9" * 5000,
    ],
)
def test_dice_out_of_limits_is_refused(prompt: str) -> None:
    start = time.perf_counter()
    text = reply_text([user(prompt)])
    assert time.perf_counter() - start < 0.5
    assert text.startswith("Sorry, I can't roll")
    for limit in LIMITS:
        assert limit in text
    assert len(text) < 400  # a giant request is not echoed back in full


def test_huge_dice_request_returns_quickly() -> None:
    start = time.perf_counter()
    messages = respond([user("roll 999999d6")])
    assert time.perf_counter() - start < 0.1
    assert_shape(messages)
    assert len(messages) == 1
    assert "function_call" not in messages[0]["parts"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d6+1", DiceRequest(2, 6, 1)),
        ("d20", DiceRequest(1, 20, 0)),
        ("3D8 - 2", DiceRequest(3, 8, -2)),
        ("roll 1d6 and 2d8", DiceRequest(1, 6, 0)),
        ("dice", None),
        ("roll 1.5d6", None),
        ("no dice here", None),
        ("abc2d6", None),
        ("2d6x", None),
    ],
)
def test_parse_dice(text: str, expected: DiceRequest | None) -> None:
    assert parse_dice(text) == expected


def test_roll_without_notation_is_not_a_tool_call() -> None:
    text = reply_text([user("roll the dice")])
    assert "roll 2d6+1" in text  # the fallback suggests the notation


def test_roll_dice_function() -> None:
    result = roll_dice(3, 6, -1, rng=random.Random(7))
    assert result == roll_dice(3, 6, -1, rng=random.Random(7))
    assert result["total"] == sum(result["rolls"]) - 1
    assert len(roll_dice(1, 20)["rolls"]) == 1
    for bad in [(0, 6, 0), (101, 6, 0), (1, 1, 0), (1, 1001, 0), (1, 6, 1001), (True, 6, 0)]:
        with pytest.raises(DiceError, match="1 to 100 dice"):
            roll_dice(*bad)
    with pytest.raises(DiceError):
        roll_dice(2.0, 6)  # type: ignore[arg-type]


def test_tool_declaration_and_dispatch() -> None:
    (declaration,) = tools.TOOLS
    assert assistant.TOOLS is tools.TOOLS
    assert declaration["name"] == "roll_dice"
    assert declaration["description"]
    params = declaration["parameters"]
    assert params["type"] == "object"
    assert set(params["properties"]) == {"count", "sides", "modifier"}
    assert params["required"] == ["count", "sides"]
    json.dumps(declaration)

    result = tools.call_tool("roll_dice", {"count": 2, "sides": 6}, rng=random.Random(1))
    assert result["modifier"] == 0
    assert result["total"] == sum(result["rolls"])
    assert "error" in tools.call_tool("roll_dice", {"count": 0, "sides": 6})
    assert "error" in tools.call_tool("roll_dice", {"sides": 6})
    assert "error" in tools.call_tool("roll_dice", {"count": 1, "sides": 6, "bogus": 1})
    assert "error" in tools.call_tool("roll_dice", "not a dict")  # type: ignore[arg-type]
    assert "roll_dice" in tools.call_tool("nope", {})["error"]


# --- memory ----------------------------------------------------------------------------------


def long_history() -> list[dict[str, Any]]:
    """Four user messages with model replies and a dice tool exchange interleaved."""
    history: list[dict[str, Any]] = [user("hello there"), model("Hello!")]
    history.append(user("roll 2d6"))
    history.extend(respond(history))
    history += [user("tell me about the dragon"), model("Vessarine sleeps.")]
    history += [user("Who runs the guild?"), model("Odile Varr.")]
    return history


@pytest.mark.parametrize(
    "question",
    [
        "what was my first message?",
        "What was my first message",
        "WHAT WAS MY FIRST MESSAGE?!",
        "  what's my first message ...",
        "What did I say first?",
        "remind me: what was my very first message?",
        "what was my first-message?",
    ],
)
def test_first_message(question: str) -> None:
    text = reply_text([*long_history(), user(question)])
    assert text == 'Your first message was: "hello there"'


def test_first_message_when_it_is_the_only_one() -> None:
    text = reply_text([user("What was my first message?")])
    assert text == 'Your first message was: "What was my first message?"'


def test_first_message_is_quoted_verbatim() -> None:
    first = '  Hi, I\'m Zoë — call me "Z"!  '
    text = reply_text([user(first), model("Hey."), user("what was my first message?")])
    assert text == f'Your first message was: "{first}"'


def test_first_message_skips_leading_model_and_tool_messages() -> None:
    history = [
        model("Welcome!"),
        {"role": "tool", "parts": [{"function_response": {"name": "x", "response": {}}}]},
        user("first!"),
        user("what was my first message"),
    ]
    assert reply_text(history) == 'Your first message was: "first!"'


@pytest.mark.parametrize(
    "question",
    [
        "how many messages have I sent?",
        "How many messages did I send so far",
        "how many messages have i written",
    ],
)
def test_message_count(question: str) -> None:
    # Four user messages in long_history, plus the question itself.
    text = reply_text([*long_history(), user(question)])
    assert text == "You have sent 5 messages in this conversation."


def test_message_count_singular() -> None:
    text = reply_text([user("How many messages have I sent?")])
    assert text == "You have sent 1 message in this conversation."


@pytest.mark.parametrize(
    "question",
    ["what did I say before this?", "what was my last message?", "What was my previous message"],
)
def test_previous_message(question: str) -> None:
    text = reply_text([*long_history(), user(question)])
    assert text == 'Your previous message was: "Who runs the guild?"'


def test_previous_message_when_there_is_none() -> None:
    text = reply_text([user("what did I say before this?")])
    assert text == "You have not sent any message before this one."


def test_memory_reads_last_user_message_when_history_ends_with_model() -> None:
    history = [user("alpha"), user("how many messages have I sent?"), model("...")]
    assert reply_text(history) == "You have sent 2 messages in this conversation."


# --- lore, greeting, fallback ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("tell me about the dragon", "Vessarine"),
        ("Dragons?", "Vessarine"),
        ("who runs the guild?", "Odile Varr"),
        ("What is Saltmere like?", "port city"),
        ("Is there a tavern?", "Gilded Eel"),
    ],
)
def test_lore(prompt: str, needle: str) -> None:
    assert needle in reply_text([user(prompt)])


def test_lore_combines_topics_in_one_message() -> None:
    text = reply_text([user("does the guild fear the dragon?")])
    assert "Odile Varr" in text
    assert "Vessarine" in text


def test_lore_overview() -> None:
    assert "Saltmere" in reply_text([user("tell me the lore")])


@pytest.mark.parametrize("prompt", ["hello", "Hi!", "help", "What can you do?"])
def test_greeting_and_help(prompt: str) -> None:
    text = reply_text([user(prompt)])
    assert "roll 2d6+1" in text
    assert "what was my first message?" in text
    assert "dragon" in text


def test_fallback_quotes_the_prompt() -> None:
    text = reply_text([user("What is the airspeed of a swallow?")])
    assert '"What is the airspeed of a swallow?"' in text
    assert "roll 2d6+1" in text
    assert reply_text([user("What is the airspeed of a swallow?")]) == text


def test_fallback_truncates_long_prompt() -> None:
    prompt = "zebra " * 1400  # ~8000 characters
    start = time.perf_counter()
    text = reply_text([user(prompt)])
    assert time.perf_counter() - start < 0.5
    quoted = re.search(r'"([^"]*)"', text)
    assert quoted is not None
    assert len(quoted.group(1)) <= 80
    assert quoted.group(1).endswith("…")
    assert len(text) < 500


def test_long_prompt_with_dice_is_fast() -> None:
    prompt = "x" * 8000 + " roll 2d6 " + "9" * 8000
    start = time.perf_counter()
    args, _, _ = roll([user(prompt)])
    assert time.perf_counter() - start < 0.5
    assert args == {"count": 2, "sides": 6, "modifier": 0}


# --- robustness ------------------------------------------------------------------------------


def test_empty_history() -> None:
    assert reply_text([]).startswith("There is nothing to answer yet.")


def test_no_user_message_gives_greeting() -> None:
    assert reply_text([model("Welcome, traveller.")]).startswith("Hello, traveller!")


def test_history_ending_with_model_answers_last_user_message() -> None:
    text = reply_text([user("tell me about the dragon"), model("She sleeps.")])
    assert "Vessarine" in text


def test_malformed_entries_are_ignored() -> None:
    history: list[Any] = [
        None,
        42,
        "user",
        [],
        {},
        {"role": 7, "parts": [{"text": "role is not a string"}]},
        {"role": "narrator", "parts": [{"text": "unknown role"}]},
        {"role": "model"},
        {"role": "model", "parts": None},
        {"role": "user", "parts": "not a list"},
        {"parts": [{"text": "no role"}]},
        {
            "role": "user",
            "parts": [
                None,
                "text",
                {"text": 5},
                {"unknown": "x"},
                {"function_call": {"name": "roll_dice"}},
                {"function_response": "garbled"},
                {"text": "what was my first message?"},
            ],
        },
    ]
    before = copy.deepcopy(history)
    text = reply_text(history)
    # The part-less user message counts as a message but has no text to quote.
    assert text == "Your first message was empty."
    assert history == before


def test_non_text_parts_in_user_message_are_ignored() -> None:
    message = {
        "role": "user",
        "parts": [
            {"function_response": {"name": "roll_dice", "response": {"total": 3}}},
            {"text": "roll 1d20"},
            {"inline_data": {"mime_type": "image/png", "data": "AAAA"}},
        ],
    }
    args, _, _ = roll([message])
    assert args == {"count": 1, "sides": 20, "modifier": 0}


def test_multiple_text_parts_are_joined() -> None:
    message = {"role": "user", "parts": [{"text": "tell me"}, {"text": "about the dragon"}]}
    assert "Vessarine" in reply_text([message])


def test_user_message_without_text() -> None:
    message = {"role": "user", "parts": [{"inline_data": {"mime_type": "image/png"}}]}
    assert reply_text([message]).startswith("Your message has no text")


def test_unserializable_history_still_answers() -> None:
    history: list[Any] = [{"role": "user", "parts": [{"text": "roll 1d6"}], 1: object()}]
    args, _, _ = roll(history)
    assert args["sides"] == 6


@pytest.mark.parametrize(
    "prompt",
    ["roll dice 2d6+1", "what was my first message?", "hello", "who runs the guild?", "blah"],
)
def test_input_is_not_mutated_and_output_is_fresh(prompt: str) -> None:
    history = [user("hello there"), model("Hi"), user(prompt)]
    before = copy.deepcopy(history)
    first = respond(history)
    assert history == before
    first[0]["parts"].append({"text": "tampered"})
    assert respond(history) != first


def test_history_must_be_a_sequence() -> None:
    with pytest.raises(TypeError):
        respond(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        respond("hello")  # type: ignore[arg-type]


# --- providers -------------------------------------------------------------------------------


def test_explicit_offline_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_PROVIDER", "offline")
    assert reply_text([user("how many messages have I sent?")]) == (
        "You have sent 1 message in this conversation."
    )
    monkeypatch.setenv("ASSISTANT_PROVIDER", "  Offline ")
    assert isinstance(get_provider(), OfflineProvider)


def test_blank_provider_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_PROVIDER", "")
    assert isinstance(get_provider(), OfflineProvider)


def test_unknown_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_PROVIDER", "skynet")
    with pytest.raises(ValueError, match="ASSISTANT_PROVIDER") as excinfo:
        respond([user("hello")])
    message = str(excinfo.value)
    assert "skynet" in message
    for name in PROVIDERS:
        assert name in message


def test_provider_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_PROVIDER", "skynet")
    with pytest.raises(ValueError):
        respond([user("hello")])
    monkeypatch.setenv("ASSISTANT_PROVIDER", "offline")
    assert respond([user("hello")])


def test_registry_and_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(OfflineProvider(), Provider)

    class Echo:
        def respond(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"role": "model", "parts": [{"text": f"{len(history)} messages"}]}]

    monkeypatch.setitem(PROVIDERS, "echo", Echo)
    monkeypatch.setenv("ASSISTANT_PROVIDER", "echo")
    assert reply_text([user("a"), user("b")]) == "2 messages"
