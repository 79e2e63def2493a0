"""A conversation a check wrote, and the proof that the assistant was given all of it.

The offline assistant answers "what was my first message?" and "how many messages have I sent?"
from the history a turn handed it, so its answers show whether the backend loaded the whole
thread from the database. Checks hand a `Conversation` to the checks that build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from grader.toolkit.chat import ChatApi, Message
from grader.toolkit.expect import expect


@dataclass(frozen=True)
class Conversation:
    """A thread a check wrote: its id and every message it holds, oldest first."""

    thread_id: str
    messages: list[Message]

    @property
    def first_prompt(self) -> str:
        return self.messages[0]["parts"][0]["text"]

    def plus(self, *more: list[Message]) -> Conversation:
        return Conversation(self.thread_id, [*self.messages, *(m for ms in more for m in ms)])


def user_texts(messages: list[Message]) -> list[str]:
    return [p["text"] for m in messages if m["role"] == "user" for p in m["parts"] if "text" in p]


def expect_remembers(chat: ChatApi, c: Conversation, after: str) -> Conversation:
    """The assistant quotes the thread's first prompt and counts its prompts: both prove the turn
    loaded the whole thread from the database. Returns the conversation, two turns longer."""
    quoted, asked = chat.ask_first_message(c.thread_id)
    expect(
        quoted == c.first_prompt,
        f"{after}, the assistant did not quote the thread's first message: each turn must load "
        "the whole thread from the database before calling respond()",
        expected=f'Your first message was: "{c.first_prompt}"',
        actual=asked.text,
    )
    prompts = len(user_texts(c.messages)) + 2  # the question above, and this one
    count, counted = chat.ask_count(c.thread_id)
    expect(
        count == prompts,
        f"{after}, the assistant counted {count} prompts in a thread of {prompts}: each turn "
        "must load the whole thread from the database",
        expected=f"You have sent {prompts} messages in this conversation.",
        actual=counted.text,
    )
    return c.plus(asked.messages, counted.messages)
