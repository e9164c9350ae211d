"""The loopback model server (tests/fake_model.py): run as the bench runs it, and in-process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.client import ApiClient
from tests.fake_model import FakeModel, Messages, Reply
from tests_app.targets import target_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def port() -> Iterator[int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_model", "--port", "0", "--delay-ms", "20"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    word, number = server.stdout.readline().split()
    assert word == b"listening"
    yield int(number)
    server.kill()
    server.wait(timeout=10)


def chat(content: str, *, conversation: str = "c1") -> dict[str, Any]:
    return {
        "model": "bench-echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"{conversation}: first"},
            {"role": "assistant", "content": f"Echo: {conversation}: first"},
            {"role": "user", "content": content},
        ],
    }


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
        return dict(json.loads(answer.read()))


def test_it_echoes_the_last_user_turn_after_the_delay_and_counts_calls(port: int) -> None:
    client = ApiClient(host="127.0.0.1", port=port, api_key="unused", timeout=5)

    answer = client.post("/v1/chat/completions", chat("second"))
    again = client.post("/v1/chat/completions", chat("third"))

    assert answer.status == 200
    assert answer.seconds >= 0.02
    assert answer.body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: second"}
    assert answer.body["model"] == "bench-echo"
    assert answer.body["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
    assert again.body["choices"][0]["message"]["content"] == "Echo: third"
    assert stats(port) == {
        "calls": 2,
        "max_in_flight": 1,
        "duplicates": 0,
        "repeated_calls": 0,
        "requests": [
            {"model": "bench-echo", "last_user_message": "second"},
            {"model": "bench-echo", "last_user_message": "third"},
        ],
    }
    assert client.post("/stats", {}).status == 404  # stats are read with GET

    reset = client.post("/stats/reset", {})
    assert reset.body == {
        "calls": 0,
        "max_in_flight": 0,
        "duplicates": 0,
        "repeated_calls": 0,
        "requests": [],
    }
    client.close()


def test_a_turn_asked_twice_is_a_duplicate(port: int) -> None:
    client = ApiClient(host="127.0.0.1", port=port, api_key="unused", timeout=5)
    client.post("/v1/chat/completions", chat("second", conversation="c1"))
    client.post("/v1/chat/completions", chat("second", conversation="c2"))
    client.post("/v1/chat/completions", chat("second", conversation="c1"))
    client.post("/v1/chat/completions", chat("second", conversation="c1") | {"model": "other"})
    client.close()

    assert stats(port)["calls"] == 4
    # The messages decide, not the rest of the body: the last call repeats the first turn too.
    assert stats(port)["duplicates"] == 2


USER = {"role": "user", "content": "Question 1?"}


def test_a_call_made_again_for_the_same_invocation_and_turn_is_counted(
    fake_model: FakeModel,
) -> None:
    # What a replay sends: the call's invocation and turn in a header of every attempt.
    target = {"kind": "openai", "model": "m", "base_url": fake_model.base_url, "max_retries": 0}
    for call_id in ("invocation-1/1", "invocation-1/2", "invocation-2/1", "invocation-1/2"):
        target_for(target).complete(messages=[USER], reference=None, call_id=call_id)

    assert fake_model.headers[0]["x-replaybench-call"] == "invocation-1/1"
    assert fake_model.stats()["repeated_calls"] == 1
    # The same conversation in another invocation is no repeat: the messages alone say it is.
    assert fake_model.stats()["duplicates"] == 3


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


def test_an_answer_arrives_whole_in_one_read(port: int) -> None:
    # Headers and body in one send: a client never waits on a delayed ACK between the two.
    body = json.dumps(chat("second")).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request % (len(body), body))
        head, _, rest = connection.recv(65536).partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert len(rest) == int(headers[b"Content-Length"])
    assert json.loads(rest)["choices"][0]["message"]["content"] == "Echo: second"


def test_a_malformed_body_is_a_400_with_an_openai_error(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{bad"
        )
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"invalid_request"' in answer
    assert stats(port)["calls"] == 0


def post(server: FakeModel, payload: dict[str, Any], timeout: float = 5) -> Any:
    client = ApiClient(host="127.0.0.1", port=server.port, api_key="unused", timeout=timeout)
    try:
        return client.post("/v1/chat/completions", payload)
    finally:
        client.close()


def test_scripted_replies_come_first_then_the_answer_function(fake_model: FakeModel) -> None:
    fake_model.script(
        Reply(status=429, headers=(("Retry-After", "2"),)),
        Reply(content="scripted"),
        Reply(raw_body=b'["a list"]'),
    )
    on_threads: list[str] = []

    def answer(messages: Messages) -> str:
        on_threads.append(threading.current_thread().name)
        return f"{len(messages)} messages"

    fake_model.answer = answer

    limited = post(fake_model, chat("a"))
    assert (limited.status, limited.body["error"]["type"]) == (429, "rate_limit")
    assert post(fake_model, chat("b")).body["choices"][0]["message"]["content"] == "scripted"
    assert post(fake_model, chat("c")).body == ["a list"]
    assert post(fake_model, chat("d")).body["choices"][0]["message"]["content"] == "4 messages"
    # Off the event loop's thread, where a test's answer may use the database.
    assert on_threads[0].startswith("fake-model-answer")
    assert [body["messages"][-1]["content"] for body in fake_model.chat_requests()] == list("abcd")
    assert fake_model.user_agents == [""] * 4


def test_a_failing_answer_function_is_a_server_error(fake_model: FakeModel) -> None:
    def answer(messages: Messages) -> str:
        raise RuntimeError("the test's answer broke")

    fake_model.answer = answer
    failed = post(fake_model, chat("a"))
    assert failed.status == 500
    assert "the test's answer broke" in failed.body["error"]["message"]


def test_stopping_releases_a_request_that_hangs() -> None:
    server = FakeModel().start()
    server.script(Reply(hang=True))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            post(server, chat("a"), timeout=30)
        except Exception as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    while not server.chat_requests():
        threading.Event().wait(0.01)
    server.stop()
    caller.join(5)
    assert not caller.is_alive()
    assert outcome  # the connection closed without an answer
