"""Chapter 5: chapter 4's backend, made safe to run as many instances on one database.

Three things change. Turns on one thread take turns: each runs in one transaction that holds
the thread's lock (store.locked_thread), on every instance and every database. A client may
send `Idempotency-Key` so that a retry gets the first answer again instead of storing the turn
twice (backend/idempotency.py). And `GET /health/ready` says whether this instance should get
traffic at all: whether its database answers.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from uuid import UUID, uuid4

import anyio  # noqa: F401 (TODO 5.4 uses it)
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from assistant import respond
from backend import errors, idempotency, store
from backend.db import Database, engine
from backend.models import ChatReply, ChatRequest, History, Message
from backend.settings import DATABASE_URL
from backend.tables import create_tables


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The tables are created once at startup, not on every request.
    try:
        create_tables(engine)
    except sa_exc.DBAPIError as exc:
        where = DATABASE_URL.render_as_string(hide_password=True)
        raise RuntimeError(
            f"cannot prepare the database {where}: {exc.orig}. Check DATABASE_URL: is the "
            "server running, does the database exist (CREATE DATABASE), are user and "
            "password right (special characters percent-encoded)?"
        ) from exc
    yield
    # Close the pool's connections on shutdown instead of leaving the server to notice.
    engine.dispose()


# How long readiness waits for the database before it says 503.
READY_TIMEOUT_SECONDS = 1

app = FastAPI(title="Make It Scale — chapter 5", lifespan=lifespan)
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


@app.get("/health/ready")
async def ready() -> Any:
    # Readiness: may this instance get traffic? Only if its database answers, and soon. A load
    # balancer or Kubernetes stops sending requests to an instance that says 503 here, and
    # sends them again once it says 200; liveness (/health) stays 200 meanwhile, so nobody
    # restarts an instance whose only problem is the database.
    # TODO 5.4: run ping_database in a worker thread (it blocks) and give it
    # READY_TIMEOUT_SECONDS: 200 {"status": "ready"} if it answered, errors.unavailable(...)
    # if it failed or took longer. anyio.to_thread.run_sync(..., abandon_on_cancel=True)
    # inside anyio.fail_after(...) stops waiting for a thread that is stuck.
    raise NotImplementedError("TODO 5.4")


def ping_database() -> None:
    with Database() as db:
        store.ping(db)


@app.get("/ping")
def ping() -> dict[str, str]:
    return {"ping": "pong"}


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


@app.post("/chat", response_model=ChatReply)
def chat(
    body: ChatRequest,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> Any:
    if idempotency_key is None:
        return run_turn(body)
    claimed = idempotency.claim(idempotency_key, body)
    if isinstance(claimed, idempotency.Replay):
        # Stripe's convention: say that this is the first answer again.
        headers = {"Idempotent-Replayed": "true"}
        return JSONResponse(claimed.body, claimed.status_code, headers=headers)
    try:
        return run_turn(body, claimed)
    except BaseException:
        # Whatever failed, the turn's transaction was rolled back: nothing was stored, so a
        # retry with this key must run the turn, not find the key taken.
        idempotency.release(claimed)
        raise


def run_turn(body: ChatRequest, claimed: idempotency.Claim | None = None) -> ChatReply:
    thread_id = body.thread_id or uuid4()
    user_message = {"role": "user", "parts": [{"text": body.prompt}]}
    # One transaction for the whole turn, holding the thread's lock: a second turn on this
    # thread, on any instance, waits here until this one is committed, then reads a history
    # that includes it. Holding a lock while the assistant answers is fine for the offline
    # assistant, which answers at once; a real model takes seconds (the docs say what then).
    with store.locked_thread(thread_id) as db:
        history = store.load_history(db, thread_id)
        new_messages = ask_assistant([*history, user_message])  # a 502 here stores nothing
        reply = ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])
        store.append_messages(db, thread_id, [user_message, *new_messages])
        if claimed is not None:
            idempotency.complete(db, claimed, 200, reply.model_dump(mode="json"))
    return reply


@app.get("/history/{thread_id}")
def history(thread_id: UUID) -> History:
    # A thread with no messages yet is simply empty: a thread is its messages.
    with Database() as db:
        messages = store.load_history(db, thread_id)
    return History(thread_id=thread_id, messages=messages)


@app.delete("/history/{thread_id}", status_code=204)
def clear_history(thread_id: UUID) -> Response:
    with Database() as db:
        store.delete_thread(db, thread_id)
    return Response(status_code=204)
