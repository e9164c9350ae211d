"""The bench's loopback model server (bench/fake_openai.py), run as the bench runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def port() -> Iterator[int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_openai", "--port", "0", "--delay-ms", "20"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    word, number = server.stdout.readline().split()
    assert word == b"listening"
    yield int(number)
    server.kill()
    server.wait(timeout=10)


def chat(content: str) -> dict[str, object]:
    return {
        "model": "bench-echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Echo: first"},
            {"role": "user", "content": content},
        ],
    }


def test_it_echoes_the_last_user_turn_after_the_delay_and_counts_calls(port: int) -> None:
    client = ApiClient(host="127.0.0.1", port=port, api_key="unused", timeout=5)
    assert client.post("/stats/reset", {}).body == {"calls": 0}

    answer = client.post("/v1/chat/completions", chat("second"))
    again = client.post("/v1/chat/completions", chat("third"))

    assert answer.status == 200
    assert answer.seconds >= 0.02
    assert answer.body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: second"}
    assert answer.body["model"] == "bench-echo"
    assert answer.body["usage"]["completion_tokens"] == len("Echo: second") // 4
    assert again.body["choices"][0]["message"]["content"] == "Echo: third"
    assert client.post("/stats", {}).status == 404  # stats are read with GET
    client.close()


def test_requests_sent_together_are_answered_in_their_order(port: int) -> None:
    bodies = [f'{{"messages": [{{"role": "user", "content": "n{n}"}}]}}'.encode() for n in (1, 2)]
    requests = b"".join(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
        for body in bodies
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(requests)
        received = b""
        while received.count(b"Echo: ") < 2:
            received += connection.recv(65536)
    assert received.index(b"Echo: n1") < received.index(b"Echo: n2")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_malformed_body_is_a_400_with_an_openai_error(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{bad"
        )
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"invalid_request_error"' in answer
