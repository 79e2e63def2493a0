"""Chapter 5's page sends each prompt with an Idempotency-Key, and sends it once more when the
answer is lost on the way: the turn is stored once, and the page shows it once.

A real chapter 5 backend on a SQLite file sits behind a front that forwards every request but
drops the connection instead of passing on the first `POST /chat`'s answer: what a client sees
when the instance it reached is killed after committing, or a connection is cut.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from grader import REPO_ROOT
from grader.toolkit.procs import Backend, start_all, stop_all

CHAPTER = REPO_ROOT / "solutions" / "05-scale-out"
PROMPT = "Hello! My first answer gets lost on the way."


class _LosesTheFirstAnswer(BaseHTTPRequestHandler):
    """Forwards to the backend; the first POST /chat is carried out, its answer never sent."""

    def _forward(self) -> None:
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        answer = httpx.request(
            self.command, f"{server.backend}{self.path}", content=body, headers=headers, timeout=30
        )
        if self.command == "POST" and self.path == "/chat":
            server.chat_keys.append(self.headers.get("Idempotency-Key"))
            if len(server.chat_keys) == 1:
                return  # the connection closes with no answer: HTTP/1.0, one request each
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Content-Length"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def lossy_front(tmp_path: Path) -> Iterator[tuple[str, Backend, ThreadingHTTPServer]]:
    backend = Backend(
        CHAPTER,
        tmp_path / "backend",
        env={"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "ASSISTANT_PROVIDER": "offline"},
    )
    start_all([backend])
    front = ThreadingHTTPServer(("127.0.0.1", 0), _LosesTheFirstAnswer)
    front.backend = backend.url  # type: ignore[attr-defined]
    front.chat_keys = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{front.server_address[1]}", backend, front
    finally:
        front.shutdown()
        front.server_close()
        thread.join(timeout=5)
        stop_all([backend])


def test_a_lost_answer_is_resent_with_its_key_and_stored_once(
    lossy_front: tuple[str, Backend, ThreadingHTTPServer],
) -> None:
    from grader.toolkit.page import Page

    url, backend, front = lossy_front
    page = Page(CHAPTER, url).send(PROMPT)
    keys = front.chat_keys  # type: ignore[attr-defined]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], f"POST /chat keys: {keys}"
    thread_id = page.query["thread_id"]
    stored = httpx.get(f"{backend.url}/history/{thread_id}").json()["messages"]
    prompts = [p["text"] for m in stored if m["role"] == "user" for p in m["parts"]]
    assert prompts == [PROMPT], prompts
    shown = [b for b in page.bubbles if b.name == "user"]
    assert [b.text for b in shown] == [PROMPT], page.bubbles
    page.send("And my second one arrives.")
    assert len(keys) == 3 and keys[2] != keys[0], f"a new prompt needs a new key: {keys}"
