"""SPEC §2 "Robustness", on the real chapter 3 and 4 solution backends (SQLite), over HTTP.

The given code in each chapter's `backend/errors.py`: every error is JSON `{"detail": ...}` in
words (issue 8, defects 2, 3, 4 and 7): a lost table is a `503` with `Retry-After` that heals, a
bug is `500 {"detail": "internal error"}`, a body over 128 KiB is a `413` before it is read, a
`422` repeats only an excerpt, a body that is not UTF-8 is a `422`, and a `405` names every
method of its path.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader.toolkit.procs import Backend

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"
CHAPTERS = ["03-stateless-history", "04-choosing-a-database"]
LIMIT = 128 * 1024


class Running:
    def __init__(self, backend: Backend, db_path: Path) -> None:
        self.backend = backend
        self.db_path = db_path
        self.http = httpx.Client(base_url=backend.url, timeout=20)

    def rss_kib(self) -> int:
        assert self.backend.proc is not None
        status = Path(f"/proc/{self.backend.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])


@pytest.fixture(scope="module", params=CHAPTERS)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    work = tmp_path_factory.mktemp(request.param)
    db_path = work / "messages.db"
    backend = Backend(
        SOLUTIONS / request.param,
        work,
        env={"DATABASE_URL": f"sqlite:///{db_path}", "ASSISTANT_PROVIDER": "offline"},
        name=request.param,
    )
    backend.start()
    r = Running(backend, db_path)
    try:
        yield r
    finally:
        r.http.close()
        backend.stop()


def expect_json_detail(response: httpx.Response, status: int) -> object:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


def test_missing_table_is_a_json_503_in_words_and_heals(running: Running) -> None:
    with sqlite3.connect(running.db_path) as db:
        db.execute("DROP TABLE messages")
    thread = uuid.uuid4()
    response = running.http.get(f"/history/{thread}")
    detail = expect_json_detail(response, 503)
    assert isinstance(detail, str) and "messages table" in detail, detail
    assert response.headers.get("retry-after", "").isdigit(), response.headers
    for leak in (str(running.db_path.parent), "sqlite", "no such table", "Error"):
        assert leak not in response.text, (leak, response.text)
    # The backend created the table again: the retry works.
    assert running.http.get(f"/history/{thread}").status_code == 200
    assert running.http.post("/chat", json={"prompt": "hello"}).status_code == 200


def test_unexpected_error_is_json_500_internal_error(running: Running) -> None:
    thread = str(uuid.uuid4())
    with sqlite3.connect(running.db_path) as db:
        db.execute(
            "INSERT INTO messages (thread_id, role, parts, created_at) "
            "VALUES (?, 'user', 'this is not JSON', CURRENT_TIMESTAMP)",
            (thread,),
        )
    offset = running.backend.log_offset_now()
    response = running.http.get(f"/history/{thread}")
    assert expect_json_detail(response, 500) == "internal error"
    # The exception is in the log, for whoever runs the backend.
    deadline = time.monotonic() + 5
    while "JSONDecodeError" not in running.backend.log_since(offset, last=400):
        assert time.monotonic() < deadline, running.backend.log_since(offset)
        time.sleep(0.05)
    with sqlite3.connect(running.db_path) as db:
        db.execute("DELETE FROM messages WHERE thread_id = ?", (thread,))


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, read from a raw socket."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [line for line in head.lower().split(b"\r\n") if b"content-length:" in line]
            if lengths and len(body) >= int(lengths[0].split(b":")[1]):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_huge_declared_body_is_413_before_it_is_read(running: Running) -> None:
    size = 10 * 1024 * 1024
    before = running.rss_kib()
    with socket.create_connection(("127.0.0.1", running.backend.port), timeout=5) as sock:
        sock.sendall(
            b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        started = time.monotonic()
        # The answer comes from the headers alone: no byte of the body has been sent yet.
        answer = read_response(sock)
        assert time.monotonic() - started < 2
        with contextlib.suppress(OSError):
            sock.sendall(b"x" * size)  # the server reads none of it
    head, _, body_bytes = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"413", answer[:300]
    body = json.loads(body_bytes)
    assert set(body) == {"detail"}, body
    time.sleep(0.2)
    assert running.rss_kib() - before < 4 * 1024, (before, running.rss_kib())
    assert running.http.get("/health").status_code == 200


def test_chunked_body_over_the_limit_is_413(running: Running) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(130):
            yield b"a" * 1024
        yield b'"}'

    response = running.http.post(
        "/chat", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers  # it was sent chunked
    expect_json_detail(response, 413)


def test_8000_emoji_escaped_as_surrogate_pairs_are_a_valid_prompt(running: Running) -> None:
    body = json.dumps({"prompt": "😀" * 8000})  # ensure_ascii: "\ud83d\ude00" each
    assert 90_000 < len(body) < LIMIT
    response = running.http.post(
        "/chat", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]


def test_422_echoes_only_an_excerpt(running: Running) -> None:
    response = running.http.post("/chat", json={"prompt": "a" * (120 * 1024)})
    detail = expect_json_detail(response, 422)
    assert isinstance(detail, list) and detail, detail
    assert len(response.content) < 2000, len(response.content)


def test_body_that_is_not_utf8_is_422(running: Running) -> None:
    response = running.http.post(
        "/chat",
        content=b'{"prompt": "\xff\xfe caf\xe9"}',
        headers={"Content-Type": "application/json"},
    )
    expect_json_detail(response, 422)


def test_options_on_history_names_every_method(running: Running) -> None:
    response = running.http.options(f"/history/{uuid.uuid4()}")
    if response.status_code != 405:
        assert response.is_success, response.status_code
    else:
        expect_json_detail(response, 405)
    allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
    assert {"GET", "DELETE"} <= allowed, response.headers.get("allow")
