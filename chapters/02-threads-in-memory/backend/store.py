"""Where chapter 2 keeps conversations: a dict in the memory of this one process.

That is the whole point of the chapter, and its flaw: a restart empties the dict, and a second
backend process has a dict of its own. Chapter 3 keeps the same two functions and moves the
messages into a database.
"""

from collections.abc import Sequence
from uuid import UUID

from backend.models import Message

# thread id -> that thread's messages, oldest first. Keys are UUID objects, not strings, so
# "ABC…" and "abc…" (the same UUID, spelled twice) are one thread.
THREADS: dict[UUID, list[Message]] = {}


# TODO 2.2: keep each thread's messages in its own list in THREADS, under its thread_id.
# `load` returns a copy of the thread's list ([] for an id never seen); `append` adds to the
# end of the thread's own list, creating it on the thread's first turn.
def load(thread_id: UUID) -> list[Message]:
    """Every message of the thread, oldest first; [] for a thread with no messages yet."""
    return []  # nothing is kept yet: every turn starts a fresh conversation


def append(thread_id: UUID, messages: Sequence[Message]) -> None:
    """Add messages at the end of the thread; the first append starts the thread."""
    pass  # nothing is kept yet
