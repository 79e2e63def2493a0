"""Local HTTP servers that speak the wire protocols of the real providers, for offline tests.

`ProtocolServer` listens on a free port of 127.0.0.1 in a thread and answers each request with
the next scripted `Reply` (or, when the script is empty, with its `responder`, e.g. one of the
fake game masters below). It records every request (path, headers, JSON body), so a test can
assert what the real SDK sent. Point the SDKs at it with:

- openai: `OPENAI_BASE_URL=<server.url>/v1` (chat completions: JSON, or SSE chunks
  `data: {...}` then `data: [DONE]` when the request asks for `"stream": true`);
- gemini: `GEMINI_BASE_URL=<server.url>` (`/v1beta/models/<model>:generateContent`, and
  `:streamGenerateContent?alt=sse` answered with SSE `data: {...}` chunks).

Replies are the providers' documented shapes (recorded from their APIs), built by the
`openai_*` and `gemini_*` functions. Every wait in a handler ends when the server stops, so a
test that makes the server "hang" still stops in a moment.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# --- what was asked, and what to answer ----------------------------------------------------


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str  # without the query
    query: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the JSON body, or None

    @property
    def streaming(self) -> bool:
        """Did the client ask for a stream (OpenAI `"stream": true`, Gemini `:stream…`)?"""
        if ":streamGenerateContent" in self.path:
            return True
        return isinstance(self.body, Mapping) and self.body.get("stream") is True


@dataclass
class Reply:
    """A JSON answer (`body`), or an SSE stream when `events` is set.

    `delay` waits before the status line (a provider that does not answer); `event_delay`
    between events; `stall_after`/`stall` wait `stall` seconds after that many events (a stream
    that stops mid-way). An event that is a str is sent as is (`[DONE]`), else as JSON.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    events: Sequence[Any] | None = None
    delay: float = 0.0
    event_delay: float = 0.0
    stall_after: int | None = None
    stall: float = 0.0


Responder = Callable[[Recorded], Reply]


def _no_script(request: Recorded) -> Reply:
    return Reply(500, {"error": {"message": f"no scripted reply for {request.path}"}})


class ProtocolServer:
    """A threaded HTTP server on 127.0.0.1 that answers with scripted replies; use in `with`."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder = responder or _no_script
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> ProtocolServer:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._script.extend(replies)
        return self

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def start(self) -> ProtocolServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes every handler that waits
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProtocolServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
        return scripted if scripted is not None else self.responder(request)

    def _wait(self, seconds: float) -> bool:
        """Sleep; False when the server is stopping (the handler should give up)."""
        return not (seconds > 0 and self._stopping.wait(seconds))


def _handler(server: ProtocolServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            split = urlsplit(self.path)
            request = Recorded(
                self.command,
                split.path,
                split.query,
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            reply = server._next(request)
            # A client that gave up (a timeout test) leaves nothing to do.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(reply)

        def _send(self, reply: Reply) -> None:
            if not server._wait(reply.delay):
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.events is None:
                data = json.dumps(reply.body if reply.body is not None else {}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            for index, event in enumerate(reply.events):
                if reply.stall_after is not None and index == reply.stall_after:
                    if not server._wait(reply.stall):
                        return
                elif index and not server._wait(reply.event_delay):
                    return
                data = event if isinstance(event, str) else json.dumps(event)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

    return Handler


# --- OpenAI chat completions ---------------------------------------------------------------


def _completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "local-model",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def openai_text(text: str, finish_reason: str = "stop") -> Reply:
    """A chat completion answering `text`."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return Reply(body=_completion(message, finish_reason))


def openai_refusal(refusal: str = "I'm sorry, I can't help with that.") -> Reply:
    """A chat completion whose model refused (the `refusal` field, no content)."""
    message = {"role": "assistant", "content": None, "refusal": refusal}
    return Reply(body=_completion(message, "stop"))


def openai_tool_call(
    name: str, args: Mapping[str, Any] | str, call_id: str = "call_local_1", text: str | None = None
) -> Reply:
    """A chat completion asking for one tool call; `args` a dict or the raw argument string."""
    arguments = args if isinstance(args, str) else json.dumps(args)
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    return Reply(body=_completion(message, "tool_calls"))


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "local-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def openai_stream_text(pieces: Iterable[str], **reply: Any) -> Reply:
    """A streamed chat completion: a role chunk, one chunk per piece, a finish chunk, [DONE]."""
    events: list[Any] = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": piece}) for piece in pieces]
    events += [_chunk({}, "stop"), "[DONE]"]
    return Reply(events=events, **reply)


def openai_stream_tool_call(
    name: str, args: Mapping[str, Any], call_id: str = "call_local_1", **reply: Any
) -> Reply:
    """A streamed tool call whose JSON arguments arrive in two pieces."""
    arguments = json.dumps(args)
    half = len(arguments) // 2
    first = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments[:half]},
    }
    events = [
        _chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        _chunk({}, "tool_calls"),
        "[DONE]",
    ]
    return Reply(events=events, **reply)


def openai_error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An OpenAI error answer: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return Reply(status, body, headers or {})


# --- Gemini generateContent ----------------------------------------------------------------


def _candidate_response(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": "gemini-local",
    }


def gemini_text(text: str, finish: str = "STOP") -> Reply:
    """A generateContent answer holding `text`."""
    return Reply(body=_candidate_response([{"text": text}], finish))


def gemini_function_call(name: str, args: Mapping[str, Any]) -> Reply:
    """A generateContent answer asking for one function call."""
    return Reply(
        body=_candidate_response([{"functionCall": {"name": name, "args": dict(args)}}], "STOP")
    )


def gemini_refusal(finish: str = "SAFETY") -> Reply:
    """A candidate stopped by a safety filter: no content, `finishReason: SAFETY`."""
    body = {
        "candidates": [
            {
                "finishReason": finish,
                "index": 0,
                "safetyRatings": [
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ],
            }
        ],
        "modelVersion": "gemini-local",
    }
    return Reply(body=body)


def gemini_stream_text(pieces: Iterable[str], **reply: Any) -> Reply:
    """A streamGenerateContent answer: one chunk per piece, the last with `finishReason`."""
    pieces = list(pieces)
    events = [
        _candidate_response([{"text": piece}], "STOP" if i == len(pieces) - 1 else None)
        for i, piece in enumerate(pieces)
    ]
    return Reply(events=events, **reply)


def gemini_stream_function_call(name: str, args: Mapping[str, Any], **reply: Any) -> Reply:
    """A streamed function call (Gemini sends a call whole, in one chunk)."""
    return Reply(
        events=[
            _candidate_response([{"functionCall": {"name": name, "args": dict(args)}}], "STOP")
        ],
        **reply,
    )


def gemini_error(
    code: int,
    status: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A Gemini (Google API) error: `{"error": {"code", "message", "status", "details"}}`."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = [dict(d) for d in details]
    return Reply(code, {"error": error}, headers or {})


# --- fake game masters (a responder per protocol) ------------------------------------------

FAKE_ROLL = {"count": 2, "sides": 6, "modifier": 0}


def _fake_answer(last_role: str, last_text: str, tool_result: Any) -> tuple[str, Any]:
    """("text", words) or ("call", args): a call when the prompt asks to roll, else an echo."""
    if last_role == "tool":
        total = tool_result.get("total") if isinstance(tool_result, Mapping) else None
        return "text", f"The dice show {total}."
    if "roll" in last_text.lower():
        return "call", FAKE_ROLL
    return "text", f"You said: {last_text}"


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def fake_openai(request: Recorded) -> Reply:
    """A deterministic OpenAI-compatible model: rolls 2d6 through `roll_dice` when asked to
    roll, reports the total after the tool answers, else echoes the prompt; streams when asked."""
    messages = request.body.get("messages", []) if isinstance(request.body, Mapping) else []
    last = messages[-1] if messages else {}
    role = "tool" if last.get("role") == "tool" else "user"
    result = None
    if role == "tool":
        try:
            result = json.loads(last.get("content") or "{}")
        except ValueError:
            result = {}
    content = last.get("content")
    kind, value = _fake_answer(role, content if isinstance(content, str) else "", result)
    if kind == "call":
        return (
            openai_stream_tool_call("roll_dice", value)
            if request.streaming
            else openai_tool_call("roll_dice", value)
        )
    return openai_stream_text(_words(value)) if request.streaming else openai_text(value)


def fake_gemini(request: Recorded) -> Reply:
    """The Gemini twin of `fake_openai`."""
    contents = request.body.get("contents", []) if isinstance(request.body, Mapping) else []
    parts = contents[-1].get("parts", []) if contents else []
    response = next((p["functionResponse"] for p in parts if "functionResponse" in p), None)
    text = "".join(p.get("text", "") for p in parts)
    if response is not None:
        kind, value = _fake_answer("tool", "", response.get("response"))
    else:
        kind, value = _fake_answer("user", text, None)
    if kind == "call":
        return (
            gemini_stream_function_call("roll_dice", value)
            if request.streaming
            else gemini_function_call("roll_dice", value)
        )
    return gemini_stream_text(_words(value)) if request.streaming else gemini_text(value)
