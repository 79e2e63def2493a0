"""Cursors for the thread list: where a page ended, as an opaque string.

A cursor is the sort key of the last thread a page showed, (updated_at, id), as base64url
JSON. The next page is "the threads that sort after it", a condition on the index, so a page
boundary holds while new threads arrive (they sort before it) and costs the same on page 1
and page 1,000. An offset ("skip 40") would do neither: a new thread shifts every later page
by one, so a thread is shown twice or skipped, and the database reads and drops the 40 first.
"""

import base64
import binascii
import json
from datetime import UTC, datetime


class BadCursor(ValueError):
    """The cursor is not one this API gave."""


def encode_cursor(updated_at: datetime, thread_id: str) -> str:
    """The cursor after the thread with this sort key (`updated_at` in UTC)."""
    raw = json.dumps([updated_at.isoformat(), thread_id]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (updated_at, id) a cursor holds, as naive UTC and text; BadCursor if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, thread_id = json.loads(raw)
        updated_at = datetime.fromisoformat(when)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this API gave: pass next_cursor as it came") from exc
    if not isinstance(thread_id, str):
        raise BadCursor("cursor is not one this API gave: pass next_cursor as it came")
    if updated_at.tzinfo is not None:
        updated_at = updated_at.astimezone(UTC).replace(tzinfo=None)
    return updated_at, thread_id
