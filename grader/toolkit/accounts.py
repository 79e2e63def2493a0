"""Users of a chapter 6 backend: registering, logging in, and tokens the grader signs itself.

The grader starts every chapter 6 backend with `SECRET_KEY` set to `SIGNING_KEY` (one with
`OTHER_KEY`, to prove that a key is what makes a token valid). Knowing the key, it can make
the tokens a careless backend would accept: expired ones, ones without `exp`, `alg: none`,
ones signed with another key (SPEC §2: HS256, `sub` = the user's id, `exp` required).
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from grader.toolkit.chat import Http
from grader.toolkit.expect import expect, fail, shorten

SIGNING_KEY = "grader-signing-key-4f8b2c7e9a1d3f5b6c8e0a2d4f6b8c0e"
OTHER_KEY = "another-signing-key-0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b"
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Account:
    """A registered user: what it registered with, its id, and a token once logged in."""

    username: str
    password: str
    id: str
    token: str = ""


def fresh_name(stem: str = "user") -> str:
    """A username nobody registered yet in this run: valid (SPEC §2) and unique."""
    return f"{stem}_{next(_numbers)}_{uuid.uuid4().hex[:8]}"


def register(http: Http, username: str | None = None, password: str | None = None) -> Account:
    """POST /users; fails unless it answers 201 {"id": <uuid>, "username": ...}."""
    username = username or fresh_name()
    password = password or f"pw-{uuid.uuid4().hex[:12]}"
    body = http.json(
        "POST", "/users", expect_status=201, json={"username": username, "password": password}
    )
    expect(
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and body["id"]
        and body.get("username") == username,
        'POST /users must answer 201 {"id": "<the user\'s id, a string>", "username": "<as sent>"}',
        expected={"id": "a string (a UUID, say)", "username": username},
        actual=shorten(body, 300),
    )
    return Account(username, password, str(body["id"]))


def log_in(http: Http, account: Account) -> Account:
    """POST /token with the account's form; fails unless it answers a bearer token."""
    form = {"username": account.username, "password": account.password}
    body = http.json("POST", "/token", data=form)
    expect(
        isinstance(body, dict)
        and isinstance(body.get("access_token"), str)
        and body["access_token"]
        and str(body.get("token_type", "")).lower() == "bearer",
        'POST /token must answer {"access_token": "<token>", "token_type": "bearer"}',
        expected={"access_token": "…", "token_type": "bearer"},
        actual=shorten(body, 300),
    )
    return Account(account.username, account.password, account.id, body["access_token"])


def new_account(http: Http, stem: str = "user") -> Account:
    """A user registered and logged in."""
    return log_in(http, register(http, fresh_name(stem)))


def sign(user_id: str, key: str = SIGNING_KEY, *, exp_in: float | None = 600, **extra: Any) -> str:
    """An HS256 token for `user_id` signed with `key`, expiring in `exp_in` seconds (negative:
    expired already; None: no `exp` at all)."""
    claims: dict[str, Any] = {"sub": user_id, "iat": int(time.time()), **extra}
    if exp_in is not None:
        claims["exp"] = int(time.time() + exp_in)
    return jwt.encode(claims, key, algorithm="HS256")


def unsigned(user_id: str) -> str:
    """An `alg: none` token: a valid-looking claim with no signature at all."""
    return jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, None, algorithm="none")


def expect_unauthorized(http: Http, method: str, path: str, why: str, **kw: Any) -> None:
    """`method path` must be a 401 with `WWW-Authenticate: Bearer`: `why` says what was wrong
    with the request's credentials, for the failure."""
    r = http.request(method, path, expect_status=None, **kw)
    if r.status_code == 401:
        challenge = r.headers.get("www-authenticate", "")
        expect(
            challenge.lower().startswith("bearer"),
            f"{method} {path} with {why} answered 401 without `WWW-Authenticate: Bearer`: "
            "a 401 names the scheme the client must use (FastAPI's OAuth2PasswordBearer adds it)",
            expected="WWW-Authenticate: Bearer",
            actual=f"WWW-Authenticate: {challenge or '(none)'}",
        )
        return
    if r.status_code < 300:
        fail(
            f"{method} {path} with {why} was served ({r.status_code}): every route but /health, "
            "/health/ready, POST /users and POST /token needs a valid token",
            expected="401",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    if r.status_code == 422:
        fail(
            f"{method} {path} with {why} answered 422: check the token before the body, so a "
            "request without a valid one is 401 whatever it holds (a dependency runs after "
            "FastAPI parsed the body; a middleware, or the token checked first, runs before)",
            expected="401",
            actual=f"422: {shorten(r.text, 200)}",
        )
    http.unexpected(r, 401)
