"""The offline provider: a deterministic tabletop game master that needs no network.

It answers the last user message with, in order of precedence: a dice roll (through the
`roll_dice` tool), a memory skill that reads the conversation itself, lore, a greeting, or a
fallback. Everything it knows about the conversation comes from `history`, which is how a
grader can tell that a backend sent the whole thread.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assistant import dice, lore, settings
from assistant.errors import ProviderError
from assistant.messages import (
    Message,
    function_call_message,
    function_response_message,
    streamed_text,
    text_message,
    text_of,
    user_messages,
)

QUOTE_LIMIT = 80

_ROLL_RE = re.compile(r"\b(?:roll|rolls|rolling|throw|toss|dice)\b")
_FIRST_RE = re.compile(
    r"\bmy (?:very )?first (?:message|msg|question|prompt|words?)\b"
    r"|\bwhat did i (?:say|write|ask|type|send) first\b"
    r"|\bfirst thing i (?:said|wrote|asked|typed|sent)\b"
)
_PREVIOUS_RE = re.compile(
    r"\bmy (?:last|previous|prior) (?:message|msg|question|prompt)\b"
    r"|\bwhat did i (?:just )?(?:say|write|ask|type|send) (?:before|previously|earlier|last)\b"
)
_COUNT_RE = re.compile(
    r"\bhow many (?:messages|msgs|prompts|questions)(?: (?:have|did) i| i)\b"
    r"|\bcount my messages\b"
)
_GREETING_RE = re.compile(
    r"\b(?:hello|hi|hey|hiya|greetings|howdy|help|commands|what can you do|who are you)\b"
    r"|\bgood (?:morning|afternoon|evening)\b"
)
_LORE_OVERVIEW_RE = re.compile(r"\b(?:lore|world|setting|story)\b")
_WORD_RE = re.compile(r"\s*\S+\s*")

# Test hooks (only with ASSISTANT_TEST_HOOKS=1), read from the latest user message.
_HOOK_RE = re.compile(r"\[test-hook:(fail-after|slow)=(\d{1,6}(?:\.\d{1,6})?)\]")
MAX_HOOK_SLOW = 60.0


@dataclass(frozen=True)
class Hooks:
    """What the latest prompt's test hooks ask for: fail after N pieces, wait S seconds first."""

    fail_after: int | None = None
    slow: float = 0.0

    def failure(self) -> ProviderError:
        return ProviderError(
            502,
            f"the offline provider failed on purpose ([test-hook:fail-after={self.fail_after}])",
        )


def read_hooks(history: Sequence[Any]) -> tuple[Hooks, Sequence[Any]]:
    """The hooks of the latest user message, and the history with their markers removed.

    Without `ASSISTANT_TEST_HOOKS=1` there are none and the history is returned as it is, so a
    marker is ordinary text. `slow` is capped at MAX_HOOK_SLOW seconds; with several markers of
    one kind, the last counts.
    """
    if not settings.hooks_enabled():
        return Hooks(), history
    index = next((i for i in range(len(history) - 1, -1, -1) if _is_user(history[i])), None)
    if index is None:
        return Hooks(), history
    message = history[index]
    fail_after: int | None = None
    slow = 0.0
    parts = []
    original = message.get("parts")
    for part in original if isinstance(original, list | tuple) else []:
        text = part.get("text") if isinstance(part, Mapping) else None
        if not isinstance(text, str):
            parts.append(part)
            continue
        for kind, value in _HOOK_RE.findall(text):
            if kind == "fail-after":
                fail_after = int(float(value))
            else:
                slow = min(float(value), MAX_HOOK_SLOW)
        parts.append({**part, "text": " ".join(_HOOK_RE.sub(" ", text).split())})
    if fail_after is None and not slow:
        return Hooks(), history
    cleaned = [*history[:index], {**message, "parts": parts}, *history[index + 1 :]]
    return Hooks(fail_after, slow), cleaned


def _is_user(message: object) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "user"


def words(text: str) -> list[str]:
    """`text` cut into words, each with the whitespace around it: joined, they are `text`."""
    pieces = _WORD_RE.findall(text)
    return pieces if pieces else ([text] if text else [])


def capabilities() -> str:
    """One sentence on what the offline game master can do."""
    return (
        'I can roll dice (try "roll 2d6+1"), tell you about '
        f"{lore.topic_titles()}, and recall our conversation "
        '(ask "what was my first message?" or "how many messages have I sent?").'
    )


def normalize(text: str) -> str:
    """Lower-case, drop apostrophes, turn everything else but letters and digits into spaces."""
    text = text.lower().replace("'", "").replace("’", "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def seed_for(history: Sequence[object]) -> int:
    """A seed derived from the whole conversation, so the same thread rolls the same dice."""
    try:
        blob = json.dumps(history, sort_keys=True, default=repr, separators=(",", ":"))
    except (TypeError, ValueError):  # mixed-type keys or cycles in a malformed history
        blob = repr(history)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8", "replace")).digest(), "big")


def short_quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Whitespace collapsed and cut to `limit` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class OfflineProvider:
    """Rule-based game master; `respond` returns the new messages of the turn."""

    name = "offline"

    def respond(self, history: Sequence[Mapping[str, Any]]) -> list[Message]:
        hooks, history = read_hooks(history)
        if hooks.slow:
            time.sleep(hooks.slow)
        if hooks.fail_after is not None:
            raise hooks.failure()
        return self._answer(history)

    def respond_stream(self, history: Sequence[Mapping[str, Any]]) -> Iterator[str | Message]:
        """The turn of `respond`, each model text streamed word by word before its message.

        Pieces come `ASSISTANT_STREAM_DELAY` seconds apart; the tool call and the tool response
        of a dice roll are messages only. With the test hooks, `slow=S` waits S seconds before
        the first item and `fail-after=N` raises ProviderError(502) once N pieces are out (at
        the latest where the model text would be finished, so the turn never completes).
        """
        hooks, history = read_hooks(history)
        delay = settings.stream_delay()
        messages = self._answer(history)
        if hooks.slow:
            time.sleep(hooks.slow)
        if hooks.fail_after == 0:
            raise hooks.failure()
        sent = 0
        for message in messages:
            text = streamed_text(message)
            if text is not None:
                for piece in words(text):
                    if hooks.fail_after is not None and sent >= hooks.fail_after:
                        raise hooks.failure()
                    if sent and delay:
                        time.sleep(delay)
                    sent += 1
                    yield piece
                if hooks.fail_after is not None:
                    raise hooks.failure()
            yield message

    def _answer(self, history: Sequence[Mapping[str, Any]]) -> list[Message]:
        if not history:
            return [text_message("There is nothing to answer yet. " + capabilities())]
        users = user_messages(history)
        if not users:
            return [text_message(self._greeting())]
        texts = [text_of(m) for m in users]
        prompt = texts[-1]
        if not prompt.strip():
            return [text_message("Your message has no text I can answer. " + capabilities())]
        words = normalize(prompt)

        if _ROLL_RE.search(words):
            try:
                request = dice.parse_dice(prompt)
            except dice.DiceError:
                return [text_message(self._refusal(prompt))]
            if request is not None:
                return self._roll(request, history)
        if _FIRST_RE.search(words):
            return [text_message(self._quote("Your first message was", texts[0]))]
        if _PREVIOUS_RE.search(words):
            if len(texts) < 2:
                return [text_message("You have not sent any message before this one.")]
            return [text_message(self._quote("Your previous message was", texts[-2]))]
        if _COUNT_RE.search(words):
            count = _plural(len(users), "message")
            return [text_message(f"You have sent {count} in this conversation.")]
        topics = lore.find_lore(words)
        if topics:
            return [text_message("\n\n".join(topic.text for topic in topics))]
        if _LORE_OVERVIEW_RE.search(words):
            overview = f"This game is set in Saltmere. Ask me about {lore.topic_titles()}."
            return [text_message(overview)]
        if _GREETING_RE.search(words):
            return [text_message(self._greeting())]
        unknown = f'I don\'t know how to answer "{short_quote(prompt)}". '
        return [text_message(unknown + capabilities())]

    @staticmethod
    def _greeting() -> str:
        return "Hello, traveller! I'm the game master of Saltmere. " + capabilities()

    @staticmethod
    def _quote(lead: str, text: str) -> str:
        # Verbatim on purpose: black-box checks look for the exact text the user sent.
        return f'{lead}: "{text}"' if text.strip() else f"{lead} empty."

    @staticmethod
    def _refusal(prompt: str) -> str:
        match = dice.DICE_RE.search(prompt)
        asked = f" {short_quote(match.group(0), 40)}" if match else " that"
        return f'Sorry, I can\'t roll{asked}. {dice.LIMITS_TEXT}. Try something like "roll 2d6+1".'

    @staticmethod
    def _roll(request: dice.DiceRequest, history: Sequence[object]) -> list[Message]:
        rng = random.Random(seed_for(history))
        args = request.args()
        result = dice.roll_dice(**args, rng=rng)
        return [
            function_call_message(dice.TOOL["name"], args),
            function_response_message(dice.TOOL["name"], result),
            text_message(dice.describe_roll(request, result)),
        ]
