"""The app's access log: every request and handshake logged, no credential kept in clear."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator, WebsocketCommunicator

from config.access_log import mask_query
from config.asgi import application
from tests import factories

pytestmark = pytest.mark.usefixtures("transactional_db")

KEY = "AbCd1234.0123456789abcdefABCDEF0123456789"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "replaybench.access"]


@pytest.mark.parametrize(
    ("query", "masked"),
    [
        (f"api_key={KEY}", "api_key=***"),
        (f"x-api-key={KEY}&page=2", "x-api-key=***&page=2"),
        ("access_token=abc&q=x", "access_token=***&q=x"),
        (f"Authorization=Bearer%20{KEY}", "Authorization=***"),
        (f"k={KEY}", "k=***"),  # the shape of a key, whatever the name
        ("sessionid=s3cr3t&password=p", "sessionid=***&password=***"),
        ("offset=25&q=capitals", "offset=25&q=capitals"),
        ("flag&empty=", "flag&empty="),
    ],
)
def test_credential_like_query_values_are_masked(query: str, masked: str) -> None:
    assert mask_query(query) == masked


def test_a_key_in_a_query_string_is_refused_and_logged_masked(
    caplog: pytest.LogCaptureFixture, operator: Any
) -> None:
    _, key = factories.make_api_key(operator)
    caplog.set_level(logging.INFO, logger="replaybench.access")

    async def scenario() -> dict[str, Any]:
        communicator = HttpCommunicator(
            application,
            "POST",
            f"/api/v5/artifacts/benchmark/search?api_key={key}&page=1",
            body=b"{}",
            headers=[(b"host", b"testserver"), (b"content-type", b"application/json")],
        )
        return await communicator.get_response(timeout=5)

    response = async_to_sync(scenario)()
    assert response["status"] == 401  # a key is read from headers only
    [line] = access_lines(caplog)
    assert re.fullmatch(
        r'\S+ "POST /api/v5/artifacts/benchmark/search\?api_key=\*\*\*&page=1" 401 '
        rf"{len(response['body'])} [0-9.]+",
        line,
    ), line
    secret = key.partition(".")[2]
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_a_refused_websocket_handshake_is_logged_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="replaybench.access")

    async def scenario() -> None:
        communicator = WebsocketCommunicator(
            application,
            f"/ws/tests/00000000-0000-0000-0000-000000000000/?token={KEY}",
            headers=[(b"host", b"testserver"), (b"origin", b"http://evil.example")],
        )
        connected, _ = await communicator.connect(timeout=5)
        assert not connected
        await communicator.disconnect()

    async_to_sync(scenario)()
    lines = [
        record.getMessage() for record in caplog.records if record.name == "replaybench.access"
    ]
    assert len(lines) == 1
    assert '"WS /ws/tests/00000000-0000-0000-0000-000000000000/?token=***" 403' in lines[0]
    assert KEY not in lines[0]
