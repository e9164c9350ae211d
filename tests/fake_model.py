"""A loopback server that speaks the OpenAI chat completions protocol, for the tests and the bench.

In a test, the ``fake_model`` fixture (tests/conftest.py) serves on a thread of its own and is
scriptable: ``server.answer = lambda messages: "..."`` decides the default answer,
``server.delay_s`` delays every answer, and ``server.script(Reply(...))`` queues one-off behaviours
for the next requests (a status code with headers, a delay, a raw body such as malformed JSON, or
never answering). Every request is recorded (body, headers, arrival), so tests can assert what the
model was sent.

The bench runs it as a process: ``python -m tests.fake_model --port 0 --delay-ms 50`` prints
``listening <port>`` and serves until it is killed.

Routes:

* ``POST /v1/chat/completions``: after the delay, one choice; by default it echoes the last user
  message, so each turn's answer is distinct and an auto-regressive replay carries its own outputs
  forward;
* ``GET /stats``: ``{"calls", "max_in_flight", "duplicates", "requests"}``, where ``duplicates``
  counts the calls whose messages were already sent in an earlier call (the same turn of the same
  conversation asked twice) and ``requests`` lists each call's model and last user message;
  ``POST /stats/reset`` forgets every call.

An asyncio protocol with keep-alive and no task or thread per call: the bench's model server shares
the cores with the system it measures, so each call costs a parse, a timer and one write.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

Messages = list[dict[str, Any]]
CHAT_PATH = "/v1/chat/completions"


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


@dataclass(frozen=True, slots=True)
class Received:
    """One chat completions request: its JSON body, its headers (names in lower case), and when
    it arrived (``time.monotonic()``)."""

    body: dict[str, Any]
    headers: dict[str, str]
    arrival: float

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def last_user_message(self) -> str:
        return last_user_text(self.body.get("messages") or [])


def last_user_text(messages: Messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def echo(messages: Messages) -> str:
    """The default answer: names the last user message, so each turn's answer is distinct."""
    return f"Echo: {last_user_text(messages)}"


def http_response(
    status: int, body: bytes, *, close: bool, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """Status line, headers and body as one buffer, written in one send: a client's delayed ACK
    never waits between the headers and the body (asyncio sets TCP_NODELAY on its sockets)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode() + body


def error_body(status: int, message: str) -> bytes:
    kind = "server_error" if status >= 500 else "rate_limit" if status == 429 else "invalid_request"
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


class FakeModel:
    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.answer: Callable[[Messages], str] = echo
        self.delay_s = delay_s
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.duplicates = 0
        self._seen_messages: set[str] = set()
        self.repeated_calls = 0
        self._seen_calls: set[str] = set()
        self._script: deque[Reply] = deque()
        self.connections: set[Connection] = set()
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        # Created on the first answer function a test sets: the bench's echo never needs it.
        self._answer_pool: ThreadPoolExecutor | None = None

    # --- control --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def chat_requests(self) -> list[dict[str, Any]]:
        return [received.body for received in list(self.received)]

    @property
    def authorizations(self) -> list[str]:
        return [received.headers.get("authorization", "") for received in list(self.received)]

    @property
    def user_agents(self) -> list[str]:
        return [received.headers.get("user-agent", "") for received in list(self.received)]

    @property
    def arrivals(self) -> list[float]:
        return [received.arrival for received in list(self.received)]

    @property
    def headers(self) -> list[dict[str, str]]:
        return [received.headers for received in list(self.received)]

    def stats(self) -> dict[str, Any]:
        return {
            "calls": len(self.received),
            "max_in_flight": self.max_in_flight,
            "duplicates": self.duplicates,
            # Calls a replay made again for the same invocation and turn (its call header).
            "repeated_calls": self.repeated_calls,
            "requests": [
                {"model": received.model, "last_user_message": received.last_user_message}
                for received in list(self.received)
            ],
        }

    def reset(self) -> None:
        self.received = []
        self._seen_messages = set()
        self.duplicates = 0
        self._seen_calls = set()
        self.repeated_calls = 0
        self.max_in_flight = self.in_flight

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: Connection(self), host, port, backlog=1024
        )
        self._port = self._listener.sockets[0].getsockname()[1]
        return self._listener

    def start(self) -> FakeModel:
        """Serve on a thread of its own (for a test) until ``stop()``."""
        loop = asyncio.new_event_loop()
        listening = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.listen())
            listening.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-model", daemon=True)
        self._thread.start()
        listening.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join(10)
        if self._answer_pool is not None:
            self._answer_pool.shutdown(wait=False, cancel_futures=True)

    def _close(self) -> None:
        # Closing the connections releases the clients of answers that hang.
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.close()
        # After the transports' own close callbacks, which this iteration has queued.
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.stop)

    # --- protocol -------------------------------------------------------------------------
    def request(
        self, pending: Pending, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> None:
        """Decide the answer to one request; ``pending`` receives its bytes when ready."""
        if method == "POST" and path == CHAT_PATH:
            try:
                body = json.loads(raw)
                messages = body["messages"]
                key = json.dumps(messages)
            except (ValueError, TypeError, KeyError) as error:
                pending.ready(400, error_body(400, f"bad request: {error!r}"))
                return
            self.received.append(Received(body, headers, time.monotonic()))
            if key in self._seen_messages:
                self.duplicates += 1
            else:
                self._seen_messages.add(key)
            call_id = headers.get("x-replaybench-call")
            if call_id is not None and call_id in self._seen_calls:
                self.repeated_calls += 1
            elif call_id is not None:
                self._seen_calls.add(call_id)
            reply = self._script.popleft() if self._script else None
            if reply is not None and reply.hang:
                return  # never answered: the client's timeout must act
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            delay_s = self.delay_s if reply is None else reply.delay_s
            asyncio.get_running_loop().call_later(delay_s, self._complete, pending, body, reply)
        elif method == "GET" and path == "/stats":
            pending.ready(200, json.dumps(self.stats()).encode())
        elif method == "POST" and path == "/stats/reset":
            self.reset()
            pending.ready(200, json.dumps(self.stats()).encode())
        else:
            pending.ready(404, error_body(404, f"no route {method} {path}"))

    def _complete(self, pending: Pending, body: dict[str, Any], reply: Reply | None) -> None:
        if reply is not None and reply.status != 200:
            message = f"scripted HTTP {reply.status}"
            self._finish(pending, reply.status, error_body(reply.status, message), reply.headers)
        elif reply is not None and reply.raw_body is not None:
            self._finish(pending, 200, reply.raw_body)
        elif reply is not None and reply.content is not None:
            self._finish(pending, 200, self._completion(body, reply.content))
        elif self.answer is echo:
            self._finish(pending, 200, self._completion(body, echo(body["messages"])))
        else:
            # A test's answer function may block or use the database, which Django refuses on
            # a thread that runs an event loop: it runs on a pool thread.
            if self._answer_pool is None:
                self._answer_pool = ThreadPoolExecutor(4, thread_name_prefix="fake-model-answer")
            loop = asyncio.get_running_loop()
            answered = self._answer_pool.submit(self.answer, body["messages"])

            def done(future: Future[str]) -> None:
                with contextlib.suppress(RuntimeError):  # the server stopped meanwhile
                    loop.call_soon_threadsafe(self._answered, pending, body, future)

            answered.add_done_callback(done)

    def _answered(self, pending: Pending, body: dict[str, Any], future: Future[str]) -> None:
        try:
            content = future.result()
        except Exception as error:
            # The test's client sees a server error naming the exception.
            self._finish(pending, 500, error_body(500, repr(error)))
            return
        self._finish(pending, 200, self._completion(body, content))

    def _finish(
        self,
        pending: Pending,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.in_flight -= 1
        pending.ready(status, body, headers)

    def _completion(self, body: dict[str, Any], content: str) -> bytes:
        """The chat completion that answers ``body`` with ``content``."""
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len(content.split())
        completion = {
            "id": f"chatcmpl-fake-{len(self.received)}",
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
        return json.dumps(completion).encode()


class Pending:
    """The answer to one request: its bytes once ready, written in request order."""

    __slots__ = ("close", "connection", "data")

    def __init__(self, connection: Connection, *, close: bool) -> None:
        self.connection = connection
        self.close = close
        self.data: bytes | None = None

    def ready(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.data = http_response(status, body, close=self.close, headers=headers)
        self.connection.flush()


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests parsed from the bytes as they arrive (a protocol
    rather than streams: no task and no await per line), answered in the order they came, as
    HTTP/1.1 wants."""

    def __init__(self, server: FakeModel) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Pending] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                request_line, *header_lines = self.buffer[:end].decode("latin1").split("\r\n")
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if len(self.buffer) < end + 4 + length:
                    return  # the body is still on its way
                body = self.buffer[end + 4 : end + 4 + length]
                self.buffer = self.buffer[end + 4 + length :]
                method, target, _ = request_line.split(" ", 2)
                pending = Pending(self, close=headers.get("connection", "").lower() == "close")
                self.pending.append(pending)
                self.server.request(pending, method, target.split("?", 1)[0], headers, body)
        except ValueError:
            # Not HTTP (a malformed request line or length): drop the connection.
            self.close()

    def flush(self) -> None:
        """Write the answers that are ready, in request order."""
        while self.pending and (data := self.pending[0].data) is not None:
            pending = self.pending.popleft()
            if self.transport is None:
                continue
            self.transport.write(data)
            if pending.close:
                self.transport.close()


async def serve(host: str, port: int, delay_s: float) -> None:
    server = FakeModel(delay_s=delay_s)
    listener = await server.listen(host, port)
    sys.stdout.write(f"listening {server.port}\n")  # the bench reads the port here
    sys.stdout.flush()
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.host, arguments.port, arguments.delay_ms / 1000))


if __name__ == "__main__":
    main()
