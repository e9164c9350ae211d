"""The command line's client without a server: settings, URLs, errors and progress."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests_app.cli.client import (
    ApiError,
    Client,
    CliError,
    Settings,
    grades_pending,
    progress_of,
)


def client_answering(status: int, content: bytes, *, url: str = "http://bench:8000") -> Client:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=content)

    client = Client(Settings(url=url, key="pre.fix"), transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAYBENCH_URL", "https://bench.example.com/")
    monkeypatch.setenv("REPLAYBENCH_API_KEY", " pre.fix ")
    assert Settings.from_environment() == Settings(url="https://bench.example.com", key="pre.fix")

    monkeypatch.delenv("REPLAYBENCH_URL")
    assert Settings.from_environment().url == "http://127.0.0.1:8000"

    monkeypatch.setenv("REPLAYBENCH_API_KEY", "")
    with pytest.raises(CliError, match="REPLAYBENCH_API_KEY"):
        Settings.from_environment()


@pytest.mark.parametrize(
    ("url", "socket"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/tests/T/"),
        ("https://bench.example.com", "wss://bench.example.com/ws/tests/T/"),
        ("https://example.com/bench", "wss://example.com/bench/ws/tests/T/"),
    ],
)
def test_the_socket_url_follows_the_servers(url: str, socket: str) -> None:
    assert Client(Settings(url=url, key="k")).socket_url("T") == socket


def test_a_call_posts_json_with_the_key() -> None:
    client = client_answering(200, b'{"test_id": "T"}')

    assert client.post("test/start", {"benchmark_id": "B"}) == {"test_id": "T"}
    [request] = client.seen  # type: ignore[attr-defined]
    assert str(request.url) == "http://bench:8000/api/v5/artifacts/test/start"
    assert request.headers["X-Api-Key"] == "pre.fix"
    assert json.loads(request.content) == {"benchmark_id": "B"}


def test_an_error_body_becomes_an_api_error() -> None:
    body = {"detail": "The request is invalid (test_id): bad", "code": "invalid", "fields": {}}
    client = client_answering(400, json.dumps(body).encode())

    with pytest.raises(ApiError) as raised:
        client.post("test/get", {"test_id": "x"})

    assert (raised.value.status, raised.value.code) == (400, "invalid")
    assert str(raised.value) == "The request is invalid (test_id): bad (invalid, HTTP 400)"


def test_an_answer_that_is_not_json_says_to_check_the_url() -> None:
    client = client_answering(200, b"<html>a proxy page</html>")

    with pytest.raises(CliError, match="is REPLAYBENCH_URL the server's address"):
        client.post("benchmark/search", {})


def detail(status: str, by_status: dict[str, int], grades: list[str | None]) -> dict[str, Any]:
    return {
        "status": status,
        "status_summary": {"total_runs": sum(by_status.values()), "by_status": by_status},
        "invocations": [
            {"grade": None if grade is None else {"status": grade}} for grade in grades
        ],
    }


def test_progress_counts_finished_runs_and_pending_grades() -> None:
    running = detail("running", {"pending": 2, "completed": 3, "failed": 1}, ["done", None])
    grading = detail("completed", {"completed": 4}, ["done", "pending"])

    assert (progress_of(running).finished, progress_of(running).total) == (4, 6)
    assert grades_pending(running) is False
    assert grades_pending(grading) is True
    assert progress_of({"status": "pending", "status_summary": None}).total == 0
