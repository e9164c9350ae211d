"""A real HTTP server on loopback that speaks the OpenAI chat completions protocol.

Scriptable per test: ``server.answer = lambda messages: "..."`` decides the default answer;
``server.script(...)`` queues one-off behaviours for the next requests (a status code, a delay,
a raw content string such as malformed JSON for the judge, or never answering). Every request body
is recorded in ``server.requests`` so tests can assert what the model was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Reply:
    """One scripted behaviour. ``status`` other than 200 answers with an OpenAI error body."""

    status: int = 200
    content: str | None = None
    delay_s: float = 0.0
    hang: bool = False
    # Extra headers of an error answer (Retry-After, x-should-retry).
    headers: tuple[tuple[str, str], ...] = ()
    # A 200 answer's body as it is sent, instead of a chat completion.
    raw_body: bytes | None = None


def last_user_text(messages: Messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def echo(messages: Messages) -> str:
    """The default answer: names the last user message, so each turn's answer is distinct."""
    return f"Echo: {last_user_text(messages)}"


class FakeOpenAI:
    def __init__(self) -> None:
        self.answer: Callable[[Messages], str] = echo
        self.delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        # The Authorization header of each request, in the same order as ``requests``.
        self.authorizations: list[str] = []
        # The User-Agent of each request (the SDK names its sync or async client there).
        self.user_agents: list[str] = []
        # When each request arrived (time.monotonic()), in the same order.
        self.arrivals: list[float] = []
        # Every header of each request, names in lower case, in the same order.
        self.headers: list[dict[str, str]] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- control --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # releases handlers that "never answer"
        self._server.shutdown()
        self._server.server_close()

    # --- protocol -------------------------------------------------------------------------
    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply(delay_s=self.delay_s)

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len(content.split())
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send_json(
                self,
                status: int,
                payload: dict[str, Any] | bytes,
                headers: tuple[tuple[str, str], ...] = (),
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (its timeout) or died (a killed worker): nothing to do.
                    return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send_json(404, {"error": {"message": "not found", "type": "invalid"}})
                    return
                body = json.loads(raw)
                with fake._lock:
                    fake.requests.append(body)
                    fake.authorizations.append(self.headers.get("Authorization", ""))
                    fake.user_agents.append(self.headers.get("User-Agent", ""))
                    fake.arrivals.append(time.monotonic())
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = fake._next_reply()
                if reply.hang:
                    # Never answer (until the server shuts down): the client's timeout must act.
                    fake._closing.wait(600)
                    return
                if reply.delay_s and fake._closing.wait(reply.delay_s):
                    return
                if reply.status != 200:
                    self._send_json(
                        reply.status,
                        {
                            "error": {
                                "message": f"scripted HTTP {reply.status}",
                                "type": "server_error" if reply.status >= 500 else "rate_limit",
                                "code": None,
                            }
                        },
                        reply.headers,
                    )
                    return
                if reply.raw_body is not None:
                    self._send_json(200, reply.raw_body)
                    return
                content = (
                    reply.content if reply.content is not None else fake.answer(body["messages"])
                )
                self._send_json(200, fake._completion(body, content))

        return Handler


def serve() -> Iterator[FakeOpenAI]:
    """For fixtures: ``yield from serve()`` starts a server and stops it afterwards."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
