"""The bench's HTTP client (bench/client.py) against a real HTTP/1.1 server on loopback:
sized and chunked answers, keep-alive, a server that closes, and errors as ApiError."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.client import ApiClient, ApiError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The client ends (address, port) of the connections that brought requests.
    connections: set[tuple[str, int]] = set()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        Handler.connections.add(self.client_address)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps(
            {"path": self.path, "key": self.headers["X-Api-Key"], "body": body}
        ).encode()
        status = 409 if self.path.endswith("/next") else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.path.endswith("/get"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(answer), 7):
                piece = answer[start : start + 7]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(answer)))
        if self.path.endswith("/stop"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def client() -> Iterator[ApiClient]:
    Handler.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api = ApiClient(host="127.0.0.1", port=server.server_address[1], api_key="k-123", timeout=5)
    yield api
    api.close()
    server.shutdown()
    server.server_close()


def test_calls_share_one_connection_and_carry_the_key_and_body(client: ApiClient) -> None:
    first = client.call("run", {"test_id": "t-1"})
    second = client.call("end", {"score": 0.5})

    assert first == {
        "path": "/api/v5/artifacts/test/run",
        "key": "k-123",
        "body": {"test_id": "t-1"},
    }
    assert second["body"] == {"score": 0.5}
    assert len(Handler.connections) == 1


def test_a_chunked_answer_is_read_whole_and_the_connection_stays_usable(client: ApiClient) -> None:
    assert client.call("get", {"test_id": "t-2"})["body"] == {"test_id": "t-2"}
    assert client.call("run", {})["path"] == "/api/v5/artifacts/test/run"
    assert len(Handler.connections) == 1


def test_a_connection_the_server_closes_is_opened_again(client: ApiClient) -> None:
    assert client.call("stop", {})["path"].endswith("/stop")
    assert client.call("run", {})["path"].endswith("/run")
    assert len(Handler.connections) == 2


def test_an_error_status_is_an_api_error_with_the_decoded_body(client: ApiClient) -> None:
    with pytest.raises(ApiError) as raised:
        client.call("next", {"test_id": "t-3"})
    assert raised.value.status == 409
    assert raised.value.body["body"] == {"test_id": "t-3"}

    response = client.post("/api/v5/artifacts/test/next", {"test_id": "t-4"})
    assert response.status == 409
    assert response.seconds > 0
