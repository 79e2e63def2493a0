"""Who is asking: password hashes, signed access tokens, and the check before every route.

Passwords are stored as Argon2 hashes (pwdlib): salted, so two users with one password get
two hashes, and slow on purpose, so a stolen table cannot be tried against a dictionary at the
speed of a plain hash. Logging in gives an access token, a JWT signed with SECRET_KEY (HS256):
a claim "this is user `sub`, until `exp`" that any instance can check with the key alone,
without asking the database or another instance. That is what keeps the backend stateless,
and what it costs: a token cannot be taken back before it expires (docs: "What stateless
costs").

Every request but the public ones passes `RequireToken` first, before its body is even read:
without a valid token it is a 401, whatever else is wrong with it. Routes get the caller's id
from `CurrentUser`.
"""

import functools
from datetime import UTC, datetime, timedelta  # STARTER: noqa: F401 (TODO 6.1 uses them)
from typing import Annotated

import jwt  # STARTER: noqa: F401 (TODO 6.1 uses it)
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.settings import ACCESS_TOKEN_MINUTES, signing_key  # STARTER: noqa: F401 (TODO 6.1)

# Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 thread). Every login spends
# this on the backend's CPU: pwdlib's default (64 MiB, 3 passes, 4 threads) costs about 8 times
# as much, which a backend serving many logins on a few cores pays in latency. The encoded hash
# carries its salt and parameters, so hashes made with other costs still verify.
password_hash = PasswordHash((Argon2Hasher(memory_cost=19_456, time_cost=2, parallelism=1),))
ALGORITHM = "HS256"
# What anybody may call without a token: liveness, readiness, registering, logging in, and the
# API's own documentation (its schema says what the API is, not what anybody stored in it).
PUBLIC_PATHS = frozenset(
    {"/health", "/health/ready", "/users", "/token", "/docs", "/openapi.json", "/redoc"}
    | {"/docs/oauth2-redirect"}
)


def hash_password(password: str) -> str:
    """The password's Argon2 hash, with a new random salt: what the users table stores."""
    # TODO 6.1: hash it with password_hash (pwdlib). Never store the password itself, nor a
    # hash without a salt (sha256(password)): both give every password away with the table.
    # BEGIN SOLUTION
    return password_hash.hash(password)
    # END SOLUTION


@functools.cache
def dummy_hash() -> str:
    return password_hash.hash("a password nobody has")


def password_matches(password: str, stored: str | None) -> bool:
    """Whether `password` is the one `stored` was made from; `stored` None: no such user."""
    if stored is None:
        # Check a hash all the same, so that an unknown username takes as long to refuse as
        # a wrong password: the answer's timing must not tell which usernames exist.
        password_hash.verify(password, dummy_hash())
        return False
    return password_hash.verify(password, stored)


def issue_token(user_id: str) -> str:
    """A signed access token saying "user `user_id`", valid for ACCESS_TOKEN_MINUTES."""
    # TODO 6.1: jwt.encode a payload with "sub" (the user's id), "iat" (now) and "exp" (now
    # + ACCESS_TOKEN_MINUTES), signed with signing_key() using ALGORITHM.
    # BEGIN SOLUTION
    # --8<-- [start:issue-token]
    now = datetime.now(UTC)
    claims = {"sub": user_id, "iat": now, "exp": now + timedelta(minutes=ACCESS_TOKEN_MINUTES)}
    return jwt.encode(claims, signing_key(), algorithm=ALGORITHM)
    # --8<-- [end:issue-token]
    # END SOLUTION


def verified_user(token: str) -> str | None:
    """The user id a token vouches for, or None when it is not one this backend signed and
    still valid."""
    # TODO 6.1: jwt.decode the token with signing_key(), accepting only ALGORITHM and
    # requiring "exp" and "sub"; any jwt.InvalidTokenError (bad signature, expired, "alg":
    # "none", garbage) means None. PyJWT checks the signature and the expiry only when it is
    # given the key and the algorithms: never decode with verify_signature off.
    # BEGIN SOLUTION
    # --8<-- [start:verified-user]
    try:
        claims = jwt.decode(
            token, signing_key(), algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.InvalidTokenError:
        return None
    return claims["sub"]
    # --8<-- [end:verified-user]
    # END SOLUTION


def unauthorized(detail: str, error: str | None = None) -> JSONResponse:
    # RFC 6750: a 401 names the scheme it wants, and why a token sent was refused.
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return JSONResponse({"detail": detail}, 401, headers={"WWW-Authenticate": challenge})


# --8<-- [start:require-token]
class RequireToken:
    """ASGI middleware: a request to a non-public path needs a valid Bearer token.

    It runs before FastAPI reads the body, so a request without a valid token is a 401
    whatever its body holds (a dependency would run only after the body was parsed, and a
    malformed body would get a 422 first, telling a stranger about the API's rules).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        scheme, _, token = (Headers(scope=scope).get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            response = unauthorized("not logged in: send Authorization: Bearer <access token>")
            return await response(scope, receive, send)
        user_id = verified_user(token.strip())
        if user_id is None:
            response = unauthorized(
                "the access token is invalid or expired: log in again", "invalid_token"
            )
            return await response(scope, receive, send)
        scope.setdefault("state", {})["user_id"] = user_id
        await self.app(scope, receive, send)


# --8<-- [end:require-token]


# Declares the scheme in the OpenAPI schema, so /docs has an "Authorize" button that logs in
# through POST /token. The token itself was checked by RequireToken already.
bearer = OAuth2PasswordBearer(tokenUrl="token")


def current_user(request: Request, _token: Annotated[str, Depends(bearer)]) -> str:
    return request.state.user_id


CurrentUser = Annotated[str, Depends(current_user)]
