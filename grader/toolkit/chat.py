"""Talking to a learner's backend: one HTTP client per purpose, failures in words.

`Http` sends requests and turns what can go wrong into check failures: no answer, an unexpected
status (naming an unfinished `TODO N.M`, or the exception a `5xx` left in the backend's log), a
body that is not JSON. After a `5xx` or a broken connection it starts over with fresh
connections, so one crash is reported once, as itself, and not as "could not reach the backend"
on the next request over a kept-alive connection the crash left unusable.

`ChatApi` adds the chat API of SPEC §2: `turn`, `history`, `clear`, and the two questions the
offline assistant answers from the history it is given, `ask_first_message` and `ask_count`.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from grader.toolkit import steps
from grader.toolkit.causes import cause, exception_line
from grader.toolkit.expect import TODO_IN_TEXT, expect, fail, shorten
from grader.toolkit.explain import listing, message_problem
from grader.toolkit.procs import Backend

FIRST_QUESTION = "what was my first message?"
COUNT_QUESTION = "how many messages have I sent?"
_FIRST_ANSWER = re.compile(r'Your first message was: "(.*)"', re.DOTALL)
_COUNT_ANSWER = re.compile(r"You have sent (\d+) messages?")

Message = dict[str, Any]


def user_message(prompt: str) -> Message:
    """The `{role, parts}` message a prompt becomes (SPEC §2)."""
    return {"role": "user", "parts": [{"text": prompt}]}


def is_uuid(value: Any) -> bool:
    """A UUID as JSON carries it: a string that `uuid.UUID` accepts."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def same_thread(a: Any, b: Any) -> bool:
    """Equal as UUIDs, so a solution may answer `str(uuid)`, `uuid.hex` or upper case."""
    try:
        return uuid.UUID(str(a)) == uuid.UUID(str(b))
    except ValueError:
        return False


def text_of(messages: list[Message], role: str = "model") -> str:
    """The text parts of the messages of one role, joined."""
    return " ".join(
        p["text"] for m in messages if m["role"] == role for p in m["parts"] if "text" in p
    )


def _sent(kw: dict[str, Any]) -> str:
    if "json" in kw:
        return " " + shorten(kw["json"], 70)
    if "content" in kw:
        return " " + shorten(repr(kw["content"]), 70)
    if "data" in kw:  # a form: its field names, never a password
        return " (form: " + ", ".join(sorted(kw["data"])) + ")"
    return ""


KEEPALIVE_SECONDS = 2.0
# How long the log of a failed request is waited for, when it does not yet say why.
LOG_SETTLE_SECONDS = 1.0


class Http:
    """Requests to one backend; every one is a step of the check's log."""

    def __init__(self, backend: Backend, timeout: float = 15.0, token: str | None = None) -> None:
        self.backend = backend
        self.timeout = timeout
        # Chapter 6 on: every request carries this access token (`Authorization: Bearer`).
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = self._new_client()
        self._retired: list[httpx.Client] = []
        self._swap = threading.Lock()
        # Where the backend's log stood when the last request went out: its 5xx cause is after.
        self._log_mark = 0

    def _new_client(self) -> httpx.Client:
        # uvicorn closes a connection idle for 5 s, and httpx reuses one idle for up to 5 s by
        # default: a request sent at that instant meets the close and fails with ReadError (seen
        # on a busy machine). Reusing only connections idle for less than 2 s avoids the race.
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS)
        return httpx.Client(
            base_url=self.backend.url, timeout=self.timeout, limits=limits, headers=self.headers
        )

    def _start_over(self, client: httpx.Client) -> None:
        """Later requests get fresh connections. Closing `client` now would break the requests
        other threads of a concurrent check still have in flight on it (a ReadError that hides
        the real answer): it is retired, and closed at the end with the rest."""
        with self._swap:
            if self._client is client:
                self._retired.append(client)
                self._client = self._new_client()

    def request(
        self, method: str, path: str, expect_status: int | None = 200, **kw: Any
    ) -> httpx.Response:
        what = f"{method} {path}"
        self._log_mark = self.backend.log_offset_now()
        client = self._client
        try:
            response = client.request(method, path, **kw)
        except httpx.TimeoutException:
            steps.record(f"{what}{_sent(kw)} → no answer within {self.timeout:.0f} s")
            self._start_over(client)
            fail(f"{what} got no answer within {self.timeout:.0f} s")
        except httpx.TransportError as exc:
            steps.record(f"{what}{_sent(kw)} → {type(exc).__name__}")
            self._start_over(client)
            alive = "" if self.backend.alive else " (its process has exited)"
            fail(f"{what} could not reach the backend ({type(exc).__name__}){alive}")
        steps.record(f"{what}{_sent(kw)} → {response.status_code}")
        if response.status_code >= 500:
            self._start_over(client)
        if expect_status is not None and response.status_code != expect_status:
            self.unexpected(response, expect_status)
        return response

    def unexpected(self, response: httpx.Response, expected: int) -> NoReturn:
        """Fail for the last answer's wrong status, saying why as precisely as the grader can."""
        request = response.request
        what = f"{request.method} {request.url.path}"
        body = response.text
        shown = {
            "expected": f"status {expected}",
            "actual": f"{response.status_code}: {shorten(body)}",
        }
        todo = TODO_IN_TEXT.search(body)
        if todo:
            fail(f"{what} reached {todo.group(0)}, which is not done yet", **shown)
        why = f"{what} answered {response.status_code} instead of {expected}"
        if response.status_code >= 500:
            found = self.last_cause()
            if found:
                why += f": {found}"
        fail(why, **shown)

    def last_cause(self) -> str | None:
        """What the backend's log says went wrong during the last request, if anything."""
        return cause(self._log_of_last_request())

    def last_exception(self) -> str | None:
        """The exception the backend logged during the last request, e.g. `KeyError: 'x'`."""
        return exception_line(self._log_of_last_request())

    def _log_of_last_request(self) -> str:
        # Starlette sends a 500 first and raises the exception again afterwards, so uvicorn
        # logs its traceback only once the client has the answer: read the log when it holds
        # a cause (or a moment has passed), not at once (CI met the race).
        deadline = time.monotonic() + LOG_SETTLE_SECONDS
        while True:
            log = self.backend.log_since(self._log_mark, last=400)
            if cause(log) or exception_line(log) or time.monotonic() >= deadline:
                return log
            time.sleep(0.05)

    def json(self, method: str, path: str, expect_status: int = 200, **kw: Any) -> Any:
        response = self.request(method, path, expect_status, **kw)
        try:
            return response.json()
        except ValueError:
            fail(
                f"{method} {path} did not answer JSON",
                expected="a JSON body",
                actual=shorten(response.text),
            )

    def get(self, path: str, expect_status: int | None = 200, **kw: Any) -> httpx.Response:
        return self.request("GET", path, expect_status, **kw)

    def post(self, path: str, expect_status: int | None = 200, **kw: Any) -> httpx.Response:
        return self.request("POST", path, expect_status, **kw)

    def delete(self, path: str, expect_status: int | None = 204, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, expect_status, **kw)

    def close(self) -> None:
        for client in [*self._retired, self._client]:
            client.close()
        self._retired.clear()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Turn:
    """One `POST /chat`: its thread, and the messages it added, the user's first."""

    thread_id: str
    messages: list[Message]
    # Whether the answer listed the user's message itself (SPEC §2 asks for it; 2.1 checks it).
    echoed_prompt: bool

    @property
    def reply(self) -> list[Message]:
        """The assistant's messages: everything after the user's."""
        return self.messages[1:]

    @property
    def text(self) -> str:
        """The model's text of this turn."""
        return text_of(self.reply)


def _messages(value: Any, where: str) -> list[Message]:
    expect(
        isinstance(value, list),
        f"{where}: `messages` must be a list of messages",
        expected='[{"role": "user", "parts": [{"text": "..."}]}, ...]',
        actual=shorten(value, 300),
    )
    for i, message in enumerate(value):
        problem = message_problem(message)
        if problem:
            fail(
                f"message {i + 1} of {where}: {problem}",
                expected={"role": "model", "parts": [{"text": "…"}]},
                actual=shorten(message, 300),
            )
    return value


class ChatApi(Http):
    """The chat API of SPEC §2, on one backend: `with ChatApi(backend) as chat: chat.turn(...)`."""

    def __enter__(self) -> ChatApi:
        return self

    def turn(self, prompt: str, thread_id: str | None = None) -> Turn:
        """POST /chat; fails unless the answer is `{thread_id, messages}` for this thread."""
        response = self.post("/chat", json={"prompt": prompt, "thread_id": thread_id})
        return self.turn_from(response, prompt, thread_id)

    def turn_from(self, response: httpx.Response, prompt: str, thread_id: str | None) -> Turn:
        """The turn a `200` answer to POST /chat describes (for checks that sent it themselves)."""
        try:
            body = response.json()
        except ValueError:
            fail(
                "POST /chat did not answer JSON",
                expected="a JSON body",
                actual=shorten(response.text),
            )
        expect(
            isinstance(body, dict) and is_uuid(body.get("thread_id")),
            'POST /chat must answer {"thread_id": "<uuid>", "messages": [...]}',
            expected={"thread_id": thread_id or "a new UUID", "messages": ["…"]},
            actual=shorten(body, 300),
        )
        if thread_id is not None:
            expect(
                same_thread(body["thread_id"], thread_id),
                "POST /chat with a thread_id answered for another thread",
                expected=thread_id,
                actual=body["thread_id"],
            )
        messages = _messages(body.get("messages"), "POST /chat's answer")
        # From chapter 6 an answer's messages may carry their ids; a turn is their content.
        messages = [{k: v for k, v in m.items() if k != "id"} for m in messages]
        echoed = bool(messages) and messages[0] == user_message(prompt)
        if not echoed:
            messages = [user_message(prompt), *messages]
        expect(
            any(m["role"] == "model" for m in messages[1:]),
            "POST /chat answered without the assistant's messages: pass the history to "
            "respond() and answer what it returned",
            actual=listing(messages),
        )
        return Turn(str(body["thread_id"]), messages, echoed)

    def history(self, thread_id: str) -> list[Message]:
        """GET /history/{id}: the thread's messages; a thread never used is 200 with none."""
        r = self.get(f"/history/{thread_id}", expect_status=None)
        if r.status_code == 404:
            fail(
                f"GET /history/{thread_id[:8]}… answered 404: a thread with no messages (never "
                "used, or cleared) is an empty thread, 200 with no messages",
                expected={"thread_id": thread_id, "messages": []},
                actual=f"404: {shorten(r.text, 200)}",
            )
        if r.status_code != 200:
            self.unexpected(r, 200)
        try:
            body = r.json()
        except ValueError:
            fail("GET /history/<id> did not answer JSON", actual=shorten(r.text))
        expect(
            isinstance(body, dict) and same_thread(body.get("thread_id"), thread_id),
            'GET /history/<id> must answer {"thread_id": "<that id>", "messages": [...]}',
            expected={"thread_id": thread_id, "messages": ["…"]},
            actual=shorten(body, 300),
        )
        return _messages(body.get("messages"), f"GET /history/{thread_id[:8]}…")

    def clear(self, thread_id: str) -> None:
        """DELETE /history/{id}: 204."""
        self.delete(f"/history/{thread_id}")

    def ask_first_message(self, thread_id: str) -> tuple[str | None, Turn]:
        """Ask "what was my first message?": the prompt the assistant quotes, and the turn.

        The assistant knows only what the turn passed to respond(), so its quote proves the
        turn loaded the whole thread (not from memory, not a part of it).
        """
        asked = self.turn(FIRST_QUESTION, thread_id)
        found = _FIRST_ANSWER.search(asked.text)
        return (found.group(1) if found else None), asked

    def ask_count(self, thread_id: str) -> tuple[int | None, Turn]:
        """Ask "how many messages have I sent?": the count the assistant answers (this one too)."""
        asked = self.turn(COUNT_QUESTION, thread_id)
        found = _COUNT_ANSWER.search(asked.text)
        return (int(found.group(1)) if found else None), asked
