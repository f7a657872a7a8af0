"""A scripted, local OpenAI-compatible HTTP server for tests (no network, 127.0.0.1 only).

It lets tests drive the *real* `openai` client (and everything built on it) through
exact, repeatable conversations: normal replies, reasoning text, rate limits, server
errors and slow replies. Every request is recorded, headers included, so a test can
check that the API key went only into the Authorization header.

How to script it
----------------
A script is either a list of replies (served in order, one per chat completion) or a
callable ``script(request_json) -> reply`` (called for each chat completion; use it to
answer by role, e.g. by looking at ``request_json["messages"]`` or the temperature).
A reply is one of:

- ``"text"``: a plain assistant message;
- ``FakeReply(text=..., reasoning=...)``: text plus reasoning, returned as
  ``reasoning_content`` on the message (non-streaming) or on the deltas (streaming),
  as vLLM and DeepSeek do (``reasoning_field="reasoning"`` for the OpenRouter/Ollama name);
- ``FakeReply(status=429, retry_after=0)``: an HTTP error (429/500/503 ...) with an
  OpenAI-style error body, optionally with a ``Retry-After`` header;
- ``FakeReply(text=..., delay_s=5)``: a reply sent only after a delay (client timeouts);
- ``FakeReply(text=..., drop_stream_after=3)``: a stream cut after 3 SSE events.

When a list script runs out, the server answers HTTP 500 ``"fake script exhausted"``
(and records it), so a test that makes more calls than it scripted fails loudly.
Streaming (``"stream": true``) is answered with SSE ``data: {...}`` chunks and
``data: [DONE]``; a ``usage`` chunk is sent when ``stream_options.include_usage`` is set.
``GET /v1/models`` lists ``model_ids`` (or answers ``models_status`` if that is set).

Usage::

    from tests.fakes import FakeOpenAIServer, FakeReply

    with FakeOpenAIServer(["```python\\n...\\n```", FakeReply(status=503)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        assert server.chat_requests[0].headers["authorization"] == "Bearer sk-test"

or, in pytest, put ``from tests.fakes import fake_openai  # noqa: F401`` in a conftest.py
and take the ``fake_openai`` factory fixture: ``server = fake_openai(script)``; every
server it made is stopped at teardown. Run pytest as ``python -m pytest`` (or with the
repository root on ``sys.path``) so ``tests.fakes`` is importable.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(slots=True)
class FakeReply:
    """One scripted answer. `status` != 200 makes it an HTTP error instead of a message."""

    text: str = ""
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"  # or "reasoning" (OpenRouter, newer Ollama)
    status: int = 200
    delay_s: float = 0.0
    retry_after: float | None = None  # seconds, sent as a Retry-After header
    error_message: str | None = None
    prompt_tokens: int | None = None  # default: a word count of the prompt
    completion_tokens: int | None = None  # default: a word count of text + reasoning
    finish_reason: str = "stop"
    model: str | None = None  # default: the model the request asked for
    chunk_chars: int = 16  # streaming: characters per content delta
    drop_stream_after: int | None = None  # streaming: close the connection after N events


ReplySpec = str | FakeReply
Script = Sequence[ReplySpec] | Callable[[dict[str, Any]], ReplySpec]


@dataclass(slots=True)
class RecordedRequest:
    """What the server saw: enough to assert on routing, parameters and headers."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any] | None
    raw_body: bytes = b""
    status: int = 0  # what the server answered
    timestamp: float = field(default_factory=time.time)


def _word_count(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_words(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += _word_count(content)
        elif isinstance(content, list):
            total += sum(_word_count(str(part.get("text", ""))) for part in content)
    return max(1, total)


class FakeOpenAIServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> speaking enough of the OpenAI API."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        model_ids: Sequence[str] = ("fake-model",),
        models_status: int | None = None,
        default: ReplySpec | None = None,
    ) -> None:
        self._script = script if script is not None else []
        self._default = default
        self._next_index = 0
        self.model_ids = list(model_ids)
        self.models_status = models_status
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies are cut short so shutdown is quick and bounded."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- addresses and records ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the client's base_url (or OPENAI_BASE_URL)."""
        return f"{self.url}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def remaining(self) -> int:
        """Scripted replies not yet served (0 for a callable script)."""
        if callable(self._script):
            return 0
        with self._lock:
            return max(0, len(self._script) - self._next_index)

    # --- internals used by the handler -------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self, body: dict[str, Any]) -> FakeReply:
        if callable(self._script):
            spec: ReplySpec | None = self._script(body)
        else:
            with self._lock:
                if self._next_index < len(self._script):
                    spec = self._script[self._next_index]
                    self._next_index += 1
                else:
                    spec = self._default
            if spec is None:
                return FakeReply(status=500, error_message="fake script exhausted")
        if isinstance(spec, str):
            return FakeReply(text=spec)
        if isinstance(spec, FakeReply):
            return spec
        raise TypeError(f"a fake reply must be str or FakeReply, got {type(spec).__name__}")

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

        def _read_body(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _record(self, body: dict[str, Any] | None, raw: bytes) -> RecordedRequest:
            record = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                raw_body=raw,
            )
            server._record(record)
            return record

        def _send_json(
            self, status: int, payload: Any, extra_headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, status: int, message: str, retry_after: float | None = None) -> None:
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            error = {"message": message, "type": "fake_error", "code": status}
            self._send_json(status, {"error": error}, headers)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            record = self._record(None, b"")
            if self.path.rstrip("/").endswith("/models"):
                if server.models_status is not None:
                    record.status = server.models_status
                    self._send_error(server.models_status, "models listing disabled")
                    return
                record.status = 200
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in server.model_ids
                ]
                self._send_json(200, {"object": "list", "data": data})
                return
            record.status = 404
            self._send_error(404, f"no route for GET {self.path}")

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            raw = self._read_body()
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                record = self._record(None, raw)
                record.status = 400
                self._send_error(400, "request body is not JSON")
                return
            record = self._record(body, raw)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                record.status = 404
                self._send_error(404, f"no route for POST {self.path}")
                return
            reply = server._next_reply(body)
            if reply.delay_s > 0:
                server._wait(reply.delay_s)
            record.status = reply.status
            try:
                if reply.status != 200:
                    message = reply.error_message or f"fake HTTP {reply.status}"
                    self._send_error(reply.status, message, reply.retry_after)
                elif body.get("stream"):
                    self._stream(body, reply)
                else:
                    self._send_json(200, _completion(body, reply))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing left to say

        def _stream(self, body: dict[str, Any], reply: FakeReply) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, event in enumerate(_stream_events(body, reply)):
                if reply.drop_stream_after is not None and index >= reply.drop_stream_after:
                    self.close_connection = True  # mid-stream failure: no terminating chunk
                    return
                data = f"data: {event}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def _usage(body: dict[str, Any], reply: FakeReply) -> dict[str, int]:
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_words(body)
    completion = reply.completion_tokens
    if completion is None:
        completion = _word_count(reply.text + " " + (reply.reasoning or ""))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.reasoning is not None:
        message[reply.reasoning_field] = reply.reasoning
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or body.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": _usage(body, reply),
    }


def _pieces(text: str, size: int) -> Iterator[str]:
    size = max(1, size)
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _stream_events(body: dict[str, Any], reply: FakeReply) -> Iterator[str]:
    model = reply.model or body.get("model", "fake-model")
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.reasoning or "", reply.chunk_chars):
        yield chunk({reply.reasoning_field: piece})
    for piece in _pieces(reply.text, reply.chunk_chars):
        yield chunk({"content": piece})
    yield chunk({}, reply.finish_reason)
    if (body.get("stream_options") or {}).get("include_usage"):
        yield json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(body, reply),
            }
        )
    yield "[DONE]"


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Factory fixture: `fake_openai(script, **kwargs)` starts a server; teardown stops all."""
    servers: list[FakeOpenAIServer] = []

    def start(script: Script | None = None, **kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(script, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
