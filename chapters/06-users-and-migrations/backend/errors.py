"""How the backend answers when something goes wrong: always JSON `{"detail": ...}`, in words.

Given code, not this chapter's lesson. A client (the page, the grader, a script) can read every
error the same way, and no answer carries more than it should: not a stack trace, not a file
path, not the database's own error text (those go to the log, for whoever runs the backend),
and not a copy of a huge request.
"""

import json
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# uvicorn's own logger, so these lines land in the backend's log with uvicorn's.
log = logging.getLogger("uvicorn.error")

# A prompt is at most 8,000 characters; even 8,000 emoji sent as JSON escapes ("\ud83d\ude00",
# 12 bytes each) are ~96 KB. Anything bigger is refused before it is read into memory.
MAX_BODY_BYTES = 128 * 1024
# How much of a rejected input a 422 repeats back: enough to recognise it, never all of it.
EXCERPT_CHARS = 100
# What a 503 tells the client: try again in this many seconds.
RETRY_AFTER_SECONDS = "2"


class BodyLimit:
    """ASGI middleware: a body over MAX_BODY_BYTES is a 413, without reading it whole.

    A declared Content-Length is checked before anything is read; a body sent in chunks (no
    length) is counted as it arrives and refused at the first chunk past the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return await too_large()(scope, receive, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                # Raised inside the route's body reading: FastAPI answers an HTTPException.
                raise HTTPException(413, too_large_detail(), {"Connection": "close"})
            return message

        await self.app(scope, counting_receive, send)


def too_large_detail() -> str:
    return f"the request body is over {MAX_BODY_BYTES // 1024} KiB"


def too_large() -> JSONResponse:
    # Connection: close, because the rest of the body is never read.
    return JSONResponse({"detail": too_large_detail()}, 413, headers={"Connection": "close"})


def excerpt(value: Any) -> Any:
    """`value` as it is when short, else the first EXCERPT_CHARS characters of its text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else json.dumps(jsonable_encoder(value))
    return value if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def unavailable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": RETRY_AFTER_SECONDS})


# The server is down or unreachable, a connection broke, the pool had none to lend in time,
# SQLite stayed locked past its busy timeout, or the table is gone: the request can be retried
# later, which is what 503 says. The block's transaction was rolled back, so nothing half-done
# was stored. The client gets words; the driver's message (host, port, user...) goes to the log.
def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = getattr(exc, "orig", None) or exc
    if isinstance(exc, sa_exc.ProgrammingError) and not missing_table(reason):
        raise exc  # a mistake in the SQL, not an outage: a 500, from internal_error below
    log.warning("%s %s: database error: %s", request.method, request.url.path, reason)
    if missing_table(reason):
        # The database was recreated under a running backend. Only a migration makes tables
        # now (backend/schema.py says why), so say which command brings them back.
        return unavailable("the database has lost its tables: run `alembic upgrade head`")
    if "database is locked" in str(reason):
        return unavailable("the database is busy")
    return unavailable("the database is unavailable")


def missing_table(reason: BaseException) -> bool:
    # How each database says it: SQLite's text, Postgres' SQLSTATE, MySQL's error number.
    return (
        "no such table" in str(reason)
        or getattr(reason, "sqlstate", None) == "42P01"
        or reason.args[:1] == (1146,)
    )


def hidden(value: Any, error: dict[str, Any]) -> Any:
    """The input an error repeats, with every password replaced: a 422 for a short password
    must not hand the password to whoever reads the answer (or a log that keeps it)."""
    if "password" in error.get("loc", ()):
        return "(hidden)"
    if isinstance(value, dict):
        return {k: "(hidden)" if k == "password" else v for k, v in value.items()}
    return value


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    # FastAPI's own 422, with each error's input cut to an excerpt, and ASCII-escaped: an
    # input holding a lone surrogate ("\ud800") cannot be encoded as UTF-8.
    errors = [
        {**error, "input": excerpt(hidden(error.get("input"), error))} for error in exc.errors()
    ]
    body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI says 400 for a body its JSON parser gave up on (not UTF-8, nested too
        # deeply, a number too long to convert); like any other body that is not JSON, it is
        # a 422, in the shape of FastAPI's own 422s, which the OpenAPI schema documents.
        what = (
            "valid UTF-8" if isinstance(exc.__cause__, UnicodeDecodeError) else "JSON it can parse"
        )
        error = {"type": "json_invalid", "loc": ["body"], "msg": f"the request body is not {what}"}
        return JSONResponse({"detail": [error]}, 422)
    if exc.status_code == 405:
        # Starlette lists only the methods of the first route with this path (GET for
        # /history/{id}); Allow must name every method the path answers.
        methods = {
            method
            for route in request.app.routes
            if route.matches(request.scope)[0] != Match.NONE
            for method in getattr(route, "methods", None) or ()
        }
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Anything else is a bug. Starlette raises the exception again after this answer, so
    # uvicorn logs its traceback; the client only learns that it was not its fault.
    return JSONResponse({"detail": "internal error"}, 500)


def install(app: FastAPI) -> None:
    """Add the body limit and the error handlers to `app`."""
    app.add_middleware(BodyLimit)
    for error in (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.InterfaceError):
        app.add_exception_handler(error, database_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, database_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
