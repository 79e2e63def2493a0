"""SPEC §8 "Bad input" for chapter 6: the schema fuzzer finds no 5xx, with a token and without.

Schemathesis reads `/openapi.json` of the real chapter 6 solution (a uvicorn process on a SQLite
file its migrations made) and sends what the schema allows and what it does not, as
tests/test_fuzz.py does for chapters 3 and 4: once with a valid access token on every request,
once with none. With a token every answer must be no 5xx and documented; without one, every
route but the public ones must be `401` with `WWW-Authenticate: Bearer`, whatever the fuzzer
put in the body, the path or the query. Either way an error is JSON `{"detail": ...}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fuzzing import REQUEST_TIMEOUT, error_is_json_detail, fuzz_config

from grader.toolkit.migrations import upgrade_head
from grader.toolkit.procs import Backend

REPO = Path(__file__).resolve().parents[1]
CHAPTER = REPO / "solutions" / "06-users-and-migrations"
SECRET_KEY = "fuzzing-signing-key-0123456789abcdef0123456789abcdef"
# The paths anybody may call, whatever the method (a wrong method there is a 405).
PUBLIC = {"/health", "/health/ready", "/users", "/token"}

pytestmark = pytest.mark.xdist_group("fuzz")


@dataclass
class Target:
    backend: Backend
    token: str
    raw_schema: dict[str, Any]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("fuzz-ch06")
    url = f"sqlite:///{work / 'messages.db'}"
    upgrade_head(CHAPTER, url)
    env = {"DATABASE_URL": url, "ASSISTANT_PROVIDER": "offline", "SECRET_KEY": SECRET_KEY}
    backend = Backend(CHAPTER, work, env={**env, "PYTHONPATH": str(REPO)}, name="ch06")
    try:
        backend.start()
        with httpx.Client(base_url=backend.url, timeout=REQUEST_TIMEOUT) as client:
            account = {"username": "fuzzer", "password": "a fuzzing password"}
            assert client.post("/users", json=account).status_code == 201
            token = client.post("/token", data=account).json()["access_token"]
            raw = client.get("/openapi.json").json()
        yield Target(backend, token, raw)
    finally:
        backend.stop()


@pytest.fixture(scope="module", params=["with-token", "without-token"])
def api_schema(request: pytest.FixtureRequest, target: Target) -> schemathesis.BaseSchema:
    with_token = request.param == "with-token"
    headers = {"Authorization": f"Bearer {target.token}"} if with_token else {}
    # Schema-valid requests this API rightly refuses: an Idempotency-Key sent again with another
    # body, a cursor of a valid length that it never gave (422 both, SPEC §2).
    disabled: tuple[str, ...] = ("positive_data_acceptance",)
    if not with_token:
        # Without a token the backend answers 401 before it looks at the method, so a method
        # the schema does not list is a 401 too, not the 405 `unsupported_method` wants.
        disabled += ("unsupported_method",)
    config = fuzz_config(target.backend.url, headers, disabled)
    return schemathesis.openapi.from_dict(target.raw_schema, config=config)


fuzzed = schemathesis.pytest.from_fixture("api_schema")


def unauthorized_unless_public(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case
) -> bool:
    """A request without a token to a route that needs one is a 401 naming the Bearer scheme."""
    sent = case.headers or {}
    if "Authorization" in sent or case.operation.path in PUBLIC:
        return True
    if not case.operation.schema.config.headers:  # the run without a token
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code == 401, f"{where} without a token: {response.status_code}"
        challenge = response.headers.get("www-authenticate", [""])[0]
        assert challenge.lower().startswith("bearer"), f"{where}: WWW-Authenticate {challenge!r}"
    return True


@fuzzed.parametrize()
def test_fuzz_finds_no_5xx_with_and_without_a_token(case: schemathesis.Case) -> None:
    case.call_and_validate(additional_checks=[error_is_json_detail, unauthorized_unless_public])
