"""Chapter 3: a chat backend that keeps no state of its own.

Every turn reads the thread from the database and writes the new messages back, in one
transaction. Nothing about a conversation stays in this process between requests, so it can
be restarted, killed or run as many copies as you like.
"""

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from assistant import respond
from backend import errors, store
from backend.models import ChatReply, ChatRequest, History, Message


# --8<-- [start:lifespan]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The table is created once at startup, not on every request.
    try:
        store.create_schema()
    except sqlite3.OperationalError as exc:
        raise RuntimeError(
            f"cannot set up the SQLite database {store.DATABASE_PATH!r}: {exc}. Check "
            "DATABASE_URL (the file's folder must exist and be writable) and the schema in "
            "backend/store.py"
        ) from exc
    yield


# --8<-- [end:lifespan]


app = FastAPI(title="Make It Scale — chapter 3", lifespan=lifespan)
# Every error answer is JSON, in words, and small (given code: see backend/errors.py).
errors.install(app)


@app.exception_handler(NotImplementedError)
async def unfinished_todo(request: Request, exc: NotImplementedError) -> JSONResponse:
    # An unfinished TODO answers 501 with its name, so the grader and the page can say which
    # one to do next instead of showing a stack trace.
    return JSONResponse(status_code=501, content={"detail": f"{exc} is not done yet"})


@app.get("/health")
async def health() -> dict[str, str]:
    # Liveness: async, so it answers on the event loop even when every worker thread is busy
    # (a sync route would wait for one), and it never touches the database.
    return {"status": "ok"}


@app.get("/ping")
def ping() -> dict[str, str]:
    return {"ping": "pong"}


# --8<-- [start:ask]
def ask_assistant(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assistant's new messages for this thread, checked against the message model."""
    answer = respond(history)
    try:
        # Chapter 2's rule, kept: the answer crosses a boundary, so it is checked before it is
        # stored. A malformed message in the table would break every later turn of the thread.
        checked = [Message.model_validate(message) for message in answer]
    except ValidationError as exc:
        raise HTTPException(
            status_code=502,
            detail=f"the assistant answered a malformed message: {exc.errors()[0]['msg']}",
        ) from exc
    return [message.model_dump() for message in checked]


# --8<-- [end:ask]


# TODO 3.1: POST /chat runs the whole turn in ONE transaction (store.transaction()).
# Store the user's message, load the whole thread from the database (TODO 3.2), ask the
# assistant with it (ask_assistant checks its answer), store the messages it returned; answer
# the thread id and the messages this turn added.
# BEGIN SOLUTION
# --8<-- [start:chat-route]
@app.post("/chat")
def chat(request: ChatRequest) -> ChatReply:
    thread_id = request.thread_id or uuid4()
    user_message = {"role": "user", "parts": [{"text": request.prompt}]}
    # One transaction: every row of the turn is stored, or (if anything fails) none is.
    with store.transaction() as db:
        store.append_messages(db, thread_id, [user_message])
        # The assistant sees the thread as the database has it, not as this process remembers it.
        history = store.load_history(db, thread_id)
        new_messages = ask_assistant(history)  # a 502 here rolls the whole turn back
        store.append_messages(db, thread_id, new_messages)
    return ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])


# --8<-- [end:chat-route]
# END SOLUTION
# BEGIN STARTER
# @app.post("/chat")
# def chat(request: ChatRequest) -> ChatReply:
#     thread_id = request.thread_id or uuid4()  # None asks for a new thread  # STARTER: noqa: F841 (TODO 3.1 uses it)
#     user_message = {"role": "user", "parts": [{"text": request.prompt}]}  # STARTER: noqa: F841 (TODO 3.1 uses it)
#     # with store.transaction() as db:
#     #     store the user message, load the history, ask_assistant(history), store the new messages
#     # return ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])
#     raise NotImplementedError("TODO 3.1")
# END STARTER


# --8<-- [start:history-route]
@app.get("/history/{thread_id}")
def history(thread_id: UUID) -> History:
    # A thread with no messages yet is simply empty: a thread is its messages.
    with store.transaction() as db:
        messages = store.load_history(db, thread_id)
    return History(thread_id=thread_id, messages=messages)


# --8<-- [end:history-route]


# TODO 3.5: DELETE /history/{thread_id} clears that thread and answers 204 No Content.
# Use store.delete_thread; other threads must be untouched.
# BEGIN SOLUTION
# --8<-- [start:delete-route]
@app.delete("/history/{thread_id}", status_code=204)
def clear_history(thread_id: UUID) -> Response:
    with store.transaction() as db:
        store.delete_thread(db, thread_id)
    return Response(status_code=204)


# --8<-- [end:delete-route]
# END SOLUTION
# BEGIN STARTER
# @app.delete("/history/{thread_id}", status_code=204)
# def clear_history(thread_id: UUID) -> Response:
#     raise NotImplementedError("TODO 3.5")
# END STARTER
