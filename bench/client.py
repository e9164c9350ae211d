"""A small JSON-over-HTTP/1.1 client on a plain socket, one keep-alive connection per object.

Each load-generating thread owns one :class:`ApiClient`, so connections are never shared and the
client adds no locking of its own to what is measured.

The load clients share the two cores with the servers they measure, so what they spend is taken
from the figures: the standard library's http.client spent about 0.34 ms of CPU a call (its
header parsing goes through the email package), a fifth of what the web process spends on a
``next``. This client writes the request in one send and reads a ``Content-Length`` or chunked
answer itself: HTTP/1.1 as the bench's servers (granian, daphne) speak it, no more.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

API = "/api/v5/artifacts"
_READ_SIZE = 65536


class ApiError(Exception):
    def __init__(self, status: int, body: Any, path: str) -> None:
        super().__init__(f"POST {path} answered {status}: {body}")
        self.status = status
        self.body = body


class ConnectionLost(ConnectionError):
    """The server closed the connection before a whole answer arrived."""


@dataclass
class Response:
    status: int
    body: Any
    seconds: float


class _Connection:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.socket = socket.create_connection((host, port), timeout=timeout)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.socket.close()

    def _fill(self) -> None:
        chunk = self.socket.recv(_READ_SIZE)
        if not chunk:
            raise ConnectionLost("the server closed the connection")
        self.buffer += chunk

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def exchange(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one request, read its answer: status, headers (names lower-cased) and body."""
        self.socket.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        status_line, *header_lines = head.split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while size := int(self._line().split(b";", 1)[0], 16):
                parts.append(self._exactly(size))
                self._exactly(2)  # the CRLF after each chunk
            while self._line():  # trailers, up to the empty line
                pass
            body = b"".join(parts)
        else:
            body = self._exactly(int(headers.get(b"content-length", b"0")))
        return status, headers, body


class ApiClient:
    def __init__(self, *, host: str, port: int, api_key: str, timeout: float = 120.0) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._head = (
            f"Host: {host}:{port}\r\nContent-Type: application/json\r\nX-Api-Key: {api_key}\r\n"
        ).encode()

    def _connect(self) -> _Connection:
        if self._connection is None:
            self._connection = _Connection(self.host, self.port, self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def post(self, path: str, payload: dict[str, Any] | None = None) -> Response:
        """POST JSON and return status, decoded body and the seconds the round trip took."""
        data = json.dumps(payload or {}).encode()
        request = (
            b"POST " + path.encode() + b" HTTP/1.1\r\n" + self._head
            + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
        )  # fmt: skip
        for attempt in range(2):
            connection = self._connect()
            started = time.perf_counter()
            try:
                status, headers, content = connection.exchange(request)
            except ConnectionError:
                # A keep-alive connection the server closed: reconnect once, then give up.
                self.close()
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if headers.get(b"connection", b"").lower() == b"close":
                self.close()
            body: Any = json.loads(content) if content else None
            return Response(status=status, body=body, seconds=elapsed)
        raise RuntimeError("unreachable")

    def call(self, endpoint: str, payload: dict[str, Any] | None = None) -> Any:
        """POST to a test endpoint; anything but 200 raises :class:`ApiError`."""
        path = f"{API}/test/{endpoint}"
        response = self.post(path, payload)
        if response.status != 200:
            raise ApiError(response.status, response.body, path)
        return response.body
