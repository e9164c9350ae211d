"""A small JSON-over-HTTP client on the standard library, one keep-alive connection per object.

Each load-generating thread owns one :class:`ApiClient`, so connections are never shared and the
client adds no locking of its own to what is measured.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

API = "/api/v5/artifacts"


class ApiError(Exception):
    def __init__(self, status: int, body: Any, path: str) -> None:
        super().__init__(f"POST {path} answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Response:
    status: int
    body: Any
    seconds: float


class ApiClient:
    def __init__(self, *, host: str, port: int, api_key: str, timeout: float = 120.0) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def post(self, path: str, payload: dict[str, Any] | None = None) -> Response:
        """POST JSON and return status, decoded body and the seconds the round trip took."""
        data = json.dumps(payload or {}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Api-Key": self.api_key,
            "Host": f"{self.host}:{self.port}",
        }
        for attempt in range(2):
            connection = self._connect()
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=data, headers=headers)
                raw = connection.getresponse()
                content = raw.read()
            except (http.client.HTTPException, ConnectionError):
                # A keep-alive connection the server closed: reconnect once, then give up.
                self.close()
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if raw.getheader("Connection", "").lower() == "close":
                self.close()
            body: Any = json.loads(content) if content else None
            return Response(status=raw.status, body=body, seconds=elapsed)
        raise RuntimeError("unreachable")

    def call(self, endpoint: str, payload: dict[str, Any] | None = None) -> Any:
        """POST to a test endpoint; anything but 200 raises :class:`ApiError`."""
        path = f"{API}/test/{endpoint}"
        response = self.post(path, payload)
        if response.status != 200:
            raise ApiError(response.status, response.body, path)
        return response.body
