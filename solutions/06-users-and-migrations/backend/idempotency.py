"""`Idempotency-Key`: a retried `POST /chat` gets the first answer again, not a second turn.

A client that sent a turn and got no answer (a timeout, a dropped connection, an instance that
died) cannot know whether the turn was stored. With a key it simply sends the same request
again with the same key:

- the first request with a key claims it (a row in `idempotency_keys`), runs the turn, and
  stores its answer in the turn's own transaction: turn and answer are stored together or
  not at all;
- a later request with the key and the same body gets that answer replayed (not recomputed),
  from any instance, and stores nothing;
- the key while its first request is still running gets 409; with another body, 422;
- a first request that failed releases its key, so a retry runs the turn; a claim whose
  instance died expires after LEASE_SECONDS and can then be taken over.

Keys live in the database, never in this process: every instance must see every key. From
chapter 6 a key is the user's: the same key sent by two users is two keys, so nobody can
replay another user's answer by guessing the key it was sent with.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from backend.db import Database
from backend.models import ChatRequest
from backend.tables import idempotency_keys

# How long a claim holds. A turn's database work gives up after about 6 s (backend/db.py), so
# a claim this old belongs to an instance that died, not to one still working.
LEASE_SECONDS = 30


@dataclass(frozen=True)
class Claim:
    """This attempt holds the key: it may run the turn, then `complete` or `release` it."""

    key_hash: str
    token: str


@dataclass(frozen=True)
class Replay:
    """The key's request was answered before: answer the same again."""

    status_code: int
    body: dict[str, Any]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_hash(body: ChatRequest) -> str:
    # The parsed body, so `"thread_id": null` and no thread_id at all are the same request.
    return sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True))


def claim(user_id: str, key: str, body: ChatRequest) -> Claim | Replay:
    """Claim the user's `key` for this request, or say what to answer instead (raises 409 or
    422)."""
    key_hash, asked = sha256(f"{user_id}:{key}"), request_hash(body)
    token = str(uuid4())
    try:
        with Database() as db:
            db.execute(
                insert(idempotency_keys).values(
                    key_hash=key_hash,
                    request_hash=asked,
                    claim=token,
                    lease_until=int(time.time()) + LEASE_SECONDS,
                )
            )
        return Claim(key_hash, token)
    except IntegrityError:
        pass  # the key was used before: what to do depends on its row
    with Database() as db:
        row = db.fetchone(select(idempotency_keys).where(idempotency_keys.c.key_hash == key_hash))
        if row is None:  # released between our INSERT and this read: the client may retry
            raise in_progress()
        if row["claim"] is not None:
            if row["lease_until"] > time.time():
                raise in_progress()
            # The instance that claimed it died mid-request (its turn was rolled back).
            taken = db.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.key_hash == key_hash)
                .where(idempotency_keys.c.claim == row["claim"])
                .values(
                    claim=token,
                    request_hash=asked,
                    lease_until=int(time.time()) + LEASE_SECONDS,
                )
            )
            if taken != 1:
                raise in_progress()
            return Claim(key_hash, token)
    if row["request_hash"] != asked:
        # A 422 in the shape of FastAPI's own, which the schema documents.
        error = {
            "type": "value_error",
            "loc": ("header", "idempotency-key"),
            "msg": "this Idempotency-Key was already used for another request: use a new key",
            "input": key,
        }
        raise RequestValidationError([error])
    return Replay(row["status_code"], row["response"])


def in_progress() -> HTTPException:
    return HTTPException(
        status_code=409,
        detail="a request with this Idempotency-Key is still running: retry in a moment",
        headers={"Retry-After": "1"},
    )


def complete(db: Database, held: Claim, status_code: int, body: dict[str, Any]) -> None:
    """Store the answer inside the turn's transaction, so both are stored or neither."""
    done = db.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.key_hash == held.key_hash)
        .where(idempotency_keys.c.claim == held.token)
        .values(claim=None, status_code=status_code, response=body)
    )
    if done != 1:
        raise in_progress()


def release(held: Claim) -> None:
    """The attempt failed and stored nothing: free the key so that a retry runs the turn."""
    try:
        with Database() as db:
            db.execute(
                delete(idempotency_keys)
                .where(idempotency_keys.c.key_hash == held.key_hash)
                .where(idempotency_keys.c.claim == held.token)
            )
    except SQLAlchemyError:
        pass  # the database is failing too: the lease frees the key instead
