"""Chapter 6: chapter 5's backend, with users, owned threads, paged reads and migrations.

Users register (`POST /users`) and log in (`POST /token`, OAuth2's password flow) for a signed
access token; every other route needs it (backend/auth.py). Each thread belongs to the user
who started it (`thread_id: null`), and to everyone else does not exist: another user's thread
is a 404 for every verb (backend/store.py). `GET /threads` lists the caller's threads a page at
a time, and `GET /history/{id}` pages a long thread. The schema is made by migrations
(`alembic upgrade head`), which the backend checks at startup instead of creating tables.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from assistant import respond
from backend import auth, errors, idempotency, store
from backend.db import Database, engine
from backend.models import (
    AccessToken,
    ChatReply,
    ChatRequest,
    ErrorDetail,
    History,
    Message,
    NewUser,
    ThreadPage,
    ThreadSummary,
    User,
)
from backend.paging import BadCursor
from backend.schema import expect_head
from backend.settings import DATABASE_URL, signing_key


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    signing_key()  # no SECRET_KEY: stop now, saying how to set one
    try:
        expect_head(engine)
    except sa_exc.DBAPIError as exc:
        where = DATABASE_URL.render_as_string(hide_password=True)
        raise RuntimeError(
            f"cannot reach the database {where}: {exc.orig}. Check DATABASE_URL: is the "
            "server running, does the database exist (CREATE DATABASE), are user and "
            "password right (special characters percent-encoded)?"
        ) from exc
    yield
    engine.dispose()


READY_TIMEOUT_SECONDS = 1

# The answers a route gives besides its success, for the OpenAPI schema that /docs shows and
# clients are generated from. Every one is {"detail": "..."}.
NOT_LOGGED_IN = {401: {"model": ErrorDetail, "description": "No valid access token"}}
NOT_YOURS = {404: {"model": ErrorDetail, "description": "No thread of yours has this id"}}

app = FastAPI(title="Make It Scale — chapter 6", lifespan=lifespan)
errors.install(app)
# Added last, so it runs first: no token, no further look at the request.
app.add_middleware(auth.RequireToken)


@app.exception_handler(NotImplementedError)
async def unfinished_todo(request: Request, exc: NotImplementedError) -> JSONResponse:
    return JSONResponse(status_code=501, content={"detail": f"{exc} is not done yet"})


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/health/ready")
async def ready() -> Any:
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            await anyio.to_thread.run_sync(ping_database, abandon_on_cancel=True)
    except (TimeoutError, sa_exc.SQLAlchemyError):
        return errors.unavailable("not ready: the database does not answer")
    return {"status": "ready"}


def ping_database() -> None:
    with Database() as db:
        store.ping(db)


@app.get("/ping", responses=NOT_LOGGED_IN)
def ping() -> dict[str, str]:
    return {"ping": "pong"}


# --8<-- [start:users]
@app.post(
    "/users",
    status_code=201,
    responses={409: {"model": ErrorDetail, "description": "The username is taken"}},
)
def register(body: NewUser) -> User:
    password_hash = auth.hash_password(body.password)  # slow on purpose: outside the transaction
    try:
        with Database() as db:
            user_id = store.add_user(db, body.username, password_hash)
    except sa_exc.IntegrityError:
        # The unique constraint decides, so two registrations of one name at once cannot
        # both win (a SELECT first would let them).
        raise HTTPException(409, f"the username {body.username!r} is taken") from None
    return User(id=user_id, username=body.username)


@app.post(
    "/token", responses={401: {"model": ErrorDetail, "description": "Wrong username or password"}}
)
def log_in(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> AccessToken:
    with Database() as db:
        user = store.find_user(db, form.username)
    if not auth.password_matches(form.password, user["password_hash"] if user else None):
        # One answer for an unknown user and a wrong password: which usernames exist is
        # nobody's business.
        raise HTTPException(
            401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    return AccessToken(access_token=auth.issue_token(user["id"]))


# --8<-- [end:users]


def ask_assistant(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assistant's new messages for this thread, checked against the message model."""
    answer = respond(history)
    try:
        checked = [Message.model_validate(message) for message in answer]
    except ValidationError as exc:
        raise HTTPException(
            status_code=502,
            detail=f"the assistant answered a malformed message: {exc.errors()[0]['msg']}",
        ) from exc
    return [message.model_dump() for message in checked]


@app.post(
    "/chat",
    response_model=ChatReply,
    responses={
        **NOT_LOGGED_IN,
        **NOT_YOURS,
        409: {"model": ErrorDetail, "description": "This Idempotency-Key's request is running"},
    },
)
def chat(
    body: ChatRequest,
    user_id: auth.CurrentUser,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> Any:
    if idempotency_key is None:
        return run_turn(user_id, body)
    claimed = idempotency.claim(user_id, idempotency_key, body)
    if isinstance(claimed, idempotency.Replay):
        headers = {"Idempotent-Replayed": "true"}
        return JSONResponse(claimed.body, claimed.status_code, headers=headers)
    try:
        return run_turn(user_id, body, claimed)
    except BaseException:
        idempotency.release(claimed)
        raise


# --8<-- [start:chat]
def run_turn(
    user_id: str, body: ChatRequest, claimed: idempotency.Claim | None = None
) -> ChatReply:
    user_message = {"role": "user", "parts": [{"text": body.prompt}]}
    # The caller's thread, locked (or a new one); someone else's is a 404 here.
    with store.turn_on(user_id, body.thread_id, body.prompt) as (db, thread_id):
        # The newest part of the thread, not all of it: a turn costs the same on message
        # 10 and on message 10,000.
        context = store.recent_context(db, thread_id)
        new_messages = ask_assistant([*context, user_message])
        reply = ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])
        store.append_messages(db, thread_id, [user_message, *new_messages])
        if claimed is not None:
            idempotency.complete(db, claimed, 200, reply.model_dump(mode="json"))
    return reply


# --8<-- [end:chat]


@app.get("/threads", responses=NOT_LOGGED_IN)
def list_threads(
    user_id: auth.CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ThreadPage:
    try:
        with Database() as db:
            page, next_cursor = store.thread_page(db, user_id, limit, cursor)
    except BadCursor as exc:
        # A 422 in the shape of FastAPI's own, which the schema documents.
        error = {
            "type": "value_error",
            "loc": ("query", "cursor"),
            "msg": str(exc),
            "input": cursor,
        }
        raise RequestValidationError([error]) from None
    threads = [
        ThreadSummary(
            thread_id=row["id"],
            title=row["title"],
            created_at=store.as_utc(row["created_at"]),
            updated_at=store.as_utc(row["updated_at"]),
        )
        for row in page
    ]
    return ThreadPage(threads=threads, next_cursor=next_cursor)


@app.get("/history/{thread_id}", responses={**NOT_LOGGED_IN, **NOT_YOURS})
def history(
    thread_id: UUID,
    user_id: auth.CurrentUser,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> History:
    with Database() as db:
        if not store.owns_thread(db, user_id, thread_id):
            raise store.not_found(thread_id)
        page, next_before = store.history_page(db, thread_id, before, limit)
    return History(thread_id=thread_id, messages=page, next_before=next_before)


@app.delete("/history/{thread_id}", status_code=204, responses={**NOT_LOGGED_IN, **NOT_YOURS})
def clear_history(thread_id: UUID, user_id: auth.CurrentUser) -> Response:
    with Database() as db:
        if not store.owns_thread(db, user_id, thread_id):
            raise store.not_found(thread_id)
        store.clear_thread(db, thread_id)
    return Response(status_code=204)
