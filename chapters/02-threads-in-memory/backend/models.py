"""The message model: what a chat message looks like, in the API and in memory.

A message is `{"role": ..., "parts": [...]}` (the shape Gemini uses for content), and each part
holds exactly one key: `text`, `function_call` or `function_response`. Pydantic checks that
shape at every boundary: requests coming in, and the assistant's answers coming back.
"""

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    # An unknown key is a mistake, not something to ignore silently: it gets a 422.
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    text: str


class FunctionCall(Strict):
    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class FunctionCallPart(Strict):
    function_call: FunctionCall


class FunctionResponse(Strict):
    name: str = Field(min_length=1)
    response: dict[str, Any]


class FunctionResponsePart(Strict):
    function_response: FunctionResponse


# Each member requires its one key and forbids any other, so a part with no key, or with two,
# matches none of them and fails validation: "exactly one key" without a line of if/else.
Part = TextPart | FunctionCallPart | FunctionResponsePart


Role = Literal["user", "model", "tool"]


class Message(Strict):
    role: Role
    parts: list[Part] = Field(min_length=1)


class ChatRequest(Strict):
    # Bounds on input are part of the API: a blank or huge prompt is rejected with 422.
    prompt: str = Field(min_length=1, max_length=8000, pattern=r"\S")
    # A UUID or null; null (or leaving it out) starts a new thread. Anything else is a 422.
    thread_id: UUID | None = None


class ChatReply(Strict):
    thread_id: UUID
    messages: list[Message]  # what this turn added: the user's message, then the assistant's


class History(Strict):
    thread_id: UUID
    messages: list[Message]  # every message of the thread, oldest first
