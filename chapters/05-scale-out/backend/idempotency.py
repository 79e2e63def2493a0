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

Keys live in the database, never in this process: every instance must see every key.
"""

import hashlib
import json
import time  # noqa: F401 (TODO 5.3 uses it)
from dataclasses import dataclass
from typing import Any
from uuid import uuid4  # noqa: F401 (TODO 5.3 uses it)

from fastapi import HTTPException
from sqlalchemy import delete, insert, select, update  # noqa: F401 (TODO 5.3 uses them)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError  # noqa: F401 (TODO 5.3)

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


def claim(key: str, body: ChatRequest) -> Claim | Replay:
    """Claim `key` for this request, or say what to answer instead (raises 409 or 422)."""
    # TODO 5.3: claim the key: INSERT its row (key_hash=sha256(key), request_hash=
    # request_hash(body), claim=a new uuid4 token, lease_until=now + LEASE_SECONDS) in a block
    # of its own, and return Claim(key_hash, token).
    # The primary key makes a second INSERT of the same key fail with IntegrityError, on every
    # instance at once: that is the one place that decides who runs the request. When it
    # fails, read the row and decide: still claimed and its lease not over → 409; claimed but
    # expired → take the claim over (an UPDATE that only matches the old claim); answered →
    # the same body replays it (Replay), another body is a 422.
    raise NotImplementedError("TODO 5.3")


def in_progress() -> HTTPException:
    return HTTPException(
        status_code=409,
        detail="a request with this Idempotency-Key is still running: retry in a moment",
        headers={"Retry-After": "1"},
    )


def complete(db: Database, held: Claim, status_code: int, body: dict[str, Any]) -> None:
    """Store the answer inside the turn's transaction, so both are stored or neither."""
    # TODO 5.3: UPDATE the key's row where claim is still our token: the answer (status_code,
    # response) and claim = None. If no row matched, another attempt took the key over: raise
    # in_progress() so this turn is rolled back instead of being stored twice.
    raise NotImplementedError("TODO 5.3")


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
