"""The shapes the API accepts and answers, checked by pydantic: chapter 3's, plus users,
tokens, thread lists and history pages.

A message is `{"role": ..., "parts": [...]}` and each part holds exactly one of `text`,
`function_call` or `function_response`. `extra="forbid"` turns an unknown field into a 422
instead of silently ignoring it, and it is also what makes "exactly one key per part" hold.
The same models check the assistant's answer before it is stored (`ask_assistant` in main.py).
"""

from datetime import datetime
from typing import Annotated, Any, Literal
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


class Message(Strict):
    role: Literal["user", "model", "tool"]
    parts: list[Part] = Field(min_length=1)


class ChatRequest(Strict):
    # A blank or huge prompt is rejected with 422 before it reaches the database.
    prompt: str = Field(min_length=1, max_length=8000, pattern=r"\S")
    # None starts a new thread; anything that is not a UUID is a 422.
    thread_id: UUID | None = None


class ChatReply(Strict):
    thread_id: UUID
    messages: list[Message]  # what this turn added: the user's message, then the assistant's


class StoredMessage(Message):
    id: int  # ascending within a thread: what `before` pages by


class History(Strict):
    thread_id: UUID
    messages: list[StoredMessage]  # the page (or the whole thread), oldest first
    # Where the next older page ends (its `before`), or None when this page is the oldest.
    next_before: int | None = None


class NewUser(Strict):
    username: Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    password: str = Field(min_length=8, max_length=128)


class User(Strict):
    id: UUID
    username: str


class AccessToken(Strict):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


class ThreadSummary(Strict):
    thread_id: UUID
    title: str
    created_at: datetime  # ISO 8601, in UTC
    updated_at: datetime


class ThreadPage(Strict):
    threads: list[ThreadSummary]  # newest updated_at first
    next_cursor: str | None  # pass it as `cursor` for the next page; None: no more


class ErrorDetail(BaseModel):
    """Every error answer: `{"detail": "what went wrong, in words"}` (backend/errors.py)."""

    detail: str
