"""What a milestone check uses to say what went wrong, in words a learner can act on."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, NoReturn

import httpx

TODO_IN_TEXT = re.compile(r"TODO \d+\.\d+")


class CheckFailed(AssertionError):
    """A milestone check failed: one-line rationale, what was expected, what happened."""

    def __init__(self, rationale: str, expected: Any = None, actual: Any = None) -> None:
        super().__init__(rationale)
        self.rationale = rationale
        self.expected = expected
        self.actual = actual


def fail(rationale: str, *, expected: Any = None, actual: Any = None) -> NoReturn:
    raise CheckFailed(rationale, expected, actual)


def expect(condition: bool, rationale: str, *, expected: Any = None, actual: Any = None) -> None:
    if not condition:
        fail(rationale, expected=expected, actual=actual)


def shorten(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user_message(prompt: str) -> dict[str, Any]:
    """The `{role, parts}` message a prompt becomes (SPEC §2)."""
    return {"role": "user", "parts": [{"text": prompt}]}


def is_uuid(value: Any) -> bool:
    """A UUID as JSON carries it: a string that `uuid.UUID` accepts."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


class Api:
    """An HTTP client for one backend whose failures read as check failures, not tracebacks."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=timeout)

    def request(self, method: str, path: str, expect_status: int | None = 200, **kw: Any):
        what = f"{method} {path}"
        try:
            response = self.client.request(method, path, **kw)
        except httpx.TimeoutException:
            fail(f"{what} got no answer within {self.client.timeout.read} s")
        except httpx.TransportError as exc:
            fail(f"{what} could not reach the backend ({type(exc).__name__}): is it still running?")
        if expect_status is not None and response.status_code != expect_status:
            body = response.text
            todo = TODO_IN_TEXT.search(body)
            if todo:
                fail(
                    f"{what} reached {todo.group(0)}, which is not done yet",
                    expected=f"status {expect_status}",
                    actual=f"status {response.status_code}: {shorten(body)}",
                )
            fail(
                f"{what} answered {response.status_code} instead of {expect_status}",
                expected=f"status {expect_status}",
                actual=f"status {response.status_code}: {shorten(body)}",
            )
        return response

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

    def get(self, path: str, expect_status: int | None = 200, **kw: Any):
        return self.request("GET", path, expect_status, **kw)

    def post(self, path: str, expect_status: int | None = 200, **kw: Any):
        return self.request("POST", path, expect_status, **kw)

    def delete(self, path: str, expect_status: int | None = 204, **kw: Any):
        return self.request("DELETE", path, expect_status, **kw)

    def close(self) -> None:
        self.client.close()
