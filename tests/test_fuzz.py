"""SPEC §8 "Bad input": a fuzzer run against each solution's OpenAPI schema finds no 5xx.

Schemathesis reads `/openapi.json` of the real chapter 3 and 4 solution backends (uvicorn
processes, SQLite; chapter 4 on Postgres as well) and sends what the schema allows and what it
does not (its examples, coverage and fuzzing phases), a bounded, seeded number of requests per
operation. Every answer must be no 5xx, documented (status code, content type, body schema),
and, when it is an error, JSON `{"detail": ...}` (SPEC §2 "Robustness").

A stateful run follows links this file adds to the schema (FastAPI declares none): a
`POST /chat` answer's `thread_id` feeds `GET /history/{thread_id}`, `DELETE` and the next turn,
and a model of the threads it created checks that the history holds exactly the turns stored.

Last, a few hostile requests schemathesis does not write: a body that is not UTF-8, lone
surrogates, a body over 128 KiB, JSON that Python's parser gives up on (too deep, too long an
integer), a 10 KB path, NUL in a prompt, `OPTIONS` on a path with two methods.

Every check schemathesis has runs but `use_after_free` (see `fuzz_config` in tests/fuzzing.py). A failure prints
the request as a `curl` command; the same seed sends the same requests on every run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fuzzing import (
    LIMIT,
    REQUEST_TIMEOUT,
    STATEFUL_EXAMPLES,
    STATEFUL_STEPS,
    error_is_json_detail,
    fuzz_config,
)
from hypothesis.stateful import run_state_machine_as_test

from grader.databases import Databases
from grader.toolkit.procs import Backend

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
IN_CI = bool(os.environ.get("CI"))

# One xdist worker runs the whole file (CI: `-n 2 --dist loadgroup`): each backend starts once.
pytestmark = pytest.mark.xdist_group("fuzz")

TARGETS = [
    pytest.param(("03-stateless-history", "sqlite"), id="ch03-sqlite"),
    pytest.param(("04-choosing-a-database", "sqlite"), id="ch04-sqlite"),
    pytest.param(
        ("04-choosing-a-database", "postgres"), id="ch04-postgres", marks=pytest.mark.databases
    ),
]


@dataclass
class Target:
    name: str
    backend: Backend
    raw_schema: dict[str, Any]

    @property
    def url(self) -> str:
        return self.backend.url


@pytest.fixture(scope="module", params=TARGETS)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    slug, kind = request.param
    name = f"{slug[:2]}-{kind}"
    work = tmp_path_factory.mktemp(f"fuzz-{name}")
    databases = Databases(kind, work, require=IN_CI)  # postgres: a throwaway server, or a skip
    try:
        url = databases.fresh_url()
        backend = Backend(
            SOLUTIONS / slug,
            work,
            env={
                "DATABASE_URL": url,
                "ASSISTANT_PROVIDER": "offline",
                "PYTHONPATH": str(REPO),  # `assistant` imports from the repository
            },
            name=name,
        )
        try:
            backend.start()
            raw = httpx.get(f"{backend.url}/openapi.json", timeout=REQUEST_TIMEOUT).json()
            yield Target(name, backend, raw)
        finally:
            backend.stop()  # SIGTERM to its process group, by PID, then SIGKILL if need be
    finally:
        databases.close()  # stops the Postgres server it started, by PID


def with_links(raw: dict[str, Any]) -> dict[str, Any]:
    """The schema with OpenAPI links from `POST /chat` to the operations on its thread."""
    schema = json.loads(json.dumps(raw))
    operation_ids = {
        (method, path): operation["operationId"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    thread = "$response.body#/thread_id"
    schema["paths"]["/chat"]["post"]["responses"]["200"]["links"] = {
        "history": {
            "operationId": operation_ids[("get", "/history/{thread_id}")],
            "parameters": {"thread_id": thread},
        },
        "clear": {
            "operationId": operation_ids[("delete", "/history/{thread_id}")],
            "parameters": {"thread_id": thread},
        },
        "next_turn": {
            "operationId": operation_ids[("post", "/chat")],
            "requestBody": {"prompt": "and then?", "thread_id": thread},
        },
    }
    return schema


@pytest.fixture(scope="module")
def api_schema(target: Target) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(
        with_links(target.raw_schema), config=fuzz_config(target.url)
    )


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
def test_fuzz_finds_no_5xx_and_every_answer_matches_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(additional_checks=[error_is_json_detail])


def canonical(value: object) -> str | None:
    """`value` as the canonical text of a UUID, or None when it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def test_stateful_history_holds_exactly_the_turns_stored(
    api_schema: schemathesis.BaseSchema,
) -> None:
    base = api_schema.as_state_machine()
    seen: Counter[str] = Counter()  # what the model checked, over every scenario

    class Threads(base):  # type: ignore[misc, valid-type]
        """The schema's state machine, with a model: the messages each known thread holds.

        Threads it created (`thread_id: null`) or cleared are known; a thread the fuzzer made
        up may hold messages of earlier runs and is left out.
        """

        def setup(self) -> None:
            super().setup()
            self.threads: dict[str, list[Any]] = {}

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            __tracebackhide__ = True
            super().validate_response(
                response, case, additional_checks=[error_is_json_detail], **kwargs
            )
            self.check_model(response, case)

        def check_model(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            request = f"{case.method} {case.formatted_path} {case.body!r}"[:400]
            answer = f"{response.status_code} {response.content[:400]!r}"
            if case.operation.path == "/chat" and response.status_code == 200:
                body = response.json()
                thread = canonical(body["thread_id"])
                asked = case.body.get("thread_id") if isinstance(case.body, dict) else None
                if asked is None:
                    assert thread not in self.threads, f"a new thread reused an id: {request}"
                    self.threads[thread] = []
                else:
                    assert thread == canonical(asked), (
                        f"answered another thread: {request} -> {answer}"
                    )
                prompt = case.body["prompt"]
                assert body["messages"][:1] == [{"role": "user", "parts": [{"text": prompt}]}], (
                    f"the turn does not start with the prompt: {request} -> {answer}"
                )
                if thread in self.threads:
                    seen["turns on a known thread"] += asked is not None
                    self.threads[thread] += body["messages"]
                return
            if not case.operation.path.startswith("/history/"):
                return
            thread = canonical(case.path_parameters["thread_id"])
            if case.method == "DELETE" and response.status_code == 204 and thread:
                seen["clears"] += 1
                self.threads[thread] = []
            elif case.method == "GET" and response.status_code == 200 and thread in self.threads:
                history = response.json()
                assert canonical(history["thread_id"]) == thread, f"{request} -> {answer}"
                assert history["messages"] == self.threads[thread], (
                    f"GET /history is not the turns stored in this thread: {request} -> {answer}; "
                    f"expected {self.threads[thread]!r}"[:1200]
                )
                seen["histories compared"] += 1
                seen["histories with messages"] += bool(history["messages"])

    run_state_machine_as_test(
        Threads,
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
    )
    # The links were followed: the model compared histories, and not only empty ones.
    for what in ("turns on a known thread", "clears", "histories with messages"):
        assert seen[what] > 0, f"the stateful run never saw {what}: {dict(seen)}"


# Hand-written hostile requests --------------------------------------------------------------


@pytest.fixture(scope="module")
def http(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, timeout=REQUEST_TIMEOUT) as client:
        yield client


def json_detail(response: httpx.Response, *statuses: int) -> object:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code in statuses, (where, response.status_code, response.text[:300])
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), (where, content_type, response.text[:300])
    body = response.json()
    assert isinstance(body, dict) and "detail" in body, (where, body)
    return body["detail"]


def post_raw(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/chat", content=body, headers={"Content-Type": "application/json"})


def still_serves(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    reply = http.post("/chat", json={"prompt": "still there?"})
    assert reply.status_code == 200, reply.text[:300]


def test_a_body_that_is_not_utf8_is_a_json_422(http: httpx.Client) -> None:
    json_detail(post_raw(http, b'{"prompt": "caf\xe9 \xff\xfe"}'), 422)
    json_detail(post_raw(http, b"\xc3\x28\xa0\xa1"), 422)
    still_serves(http)


def test_a_lone_surrogate_in_the_prompt_is_no_5xx(http: httpx.Client) -> None:
    # Valid JSON text ("\ud800" escaped, plain ASCII) for a string no UTF-8 can encode: the
    # backend may refuse it (422) or store and answer it (escaped), never a 500.
    response = post_raw(http, b'{"prompt": "hi \\ud800 there"}')
    assert response.status_code in (200, 422), (response.status_code, response.text[:300])
    if response.status_code == 422:
        json_detail(response, 422)
    else:
        thread = response.json()["thread_id"]
        history = http.get(f"/history/{thread}")
        assert history.status_code == 200, history.text[:300]
    still_serves(http)


def test_a_lone_surrogate_as_thread_id_is_a_json_422(http: httpx.Client) -> None:
    # The 422 repeats the input: it must still be JSON (ASCII-escaped), not a 500.
    json_detail(post_raw(http, b'{"prompt": "hi", "thread_id": "\\udfff"}'), 422)
    still_serves(http)


def test_a_200_kb_body_is_a_json_413(http: httpx.Client) -> None:
    body = json.dumps({"prompt": "a" * (200 * 1024)}).encode()
    assert len(body) > LIMIT
    json_detail(post_raw(http, body), 413)
    still_serves(http)


# A body Python's JSON parser gives up on: SPEC §2 says malformed JSON is a 422, the one error
# status the schema documents for bad input (FastAPI's own answer would be an undocumented
# `400 {"detail": "There was an error parsing the body"}`).


def test_nesting_deeper_than_the_parser_recurses_is_a_json_422(http: httpx.Client) -> None:
    # 50,000 nested arrays: well under the size limit, far over Python's recursion limit.
    depth = 50_000
    body = b'{"prompt": "hi", "thread_id": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) < LIMIT
    json_detail(post_raw(http, body), 422)
    still_serves(http)


def test_an_integer_longer_than_python_converts_is_a_json_422(http: httpx.Client) -> None:
    # Python refuses to convert integers of more than 4,300 digits (a ValueError, not JSON's).
    json_detail(post_raw(http, b'{"prompt": "hi", "thread_id": ' + b"7" * 5000 + b"}"), 422)
    still_serves(http)


def test_a_path_thread_id_of_10_kb_is_a_short_json_422(http: httpx.Client) -> None:
    response = http.get("/history/" + "x" * 10_000)
    json_detail(response, 422)
    assert len(response.content) < 2000, len(response.content)


def test_options_on_history_allows_get_and_delete(http: httpx.Client) -> None:
    response = http.options(f"/history/{uuid.uuid4()}")
    if response.status_code == 405:
        json_detail(response, 405)
    else:
        assert response.is_success, (response.status_code, response.text[:300])
    allowed = {method.strip() for method in response.headers.get("allow", "").split(",")}
    assert {"GET", "DELETE"} <= allowed, response.headers.get("allow")


def test_a_nul_and_astral_characters_round_trip(http: httpx.Client) -> None:
    # NUL is a character Postgres refuses in TEXT and JSONB; a prompt may hold it all the same.
    prompt = "nul \x00 here, an emoji 😀, a BOM \ufeff and a non-character \uffff"
    reply = http.post("/chat", json={"prompt": prompt})
    assert reply.status_code == 200, reply.text[:300]
    history = http.get(f"/history/{reply.json()['thread_id']}")
    assert history.status_code == 200, history.text[:300]
    assert history.json()["messages"][0] == {"role": "user", "parts": [{"text": prompt}]}
