"""/mcp in front of the tools: the API's keys, budgets and origin rule, through the ASGI app.

The tools themselves are driven by the MCP client against a live server in
tests/integration/test_mcp.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator

from config.asgi import application
from tests import factories

pytestmark = pytest.mark.usefixtures("transactional_db")

PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()


def post_mcp(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        communicator = HttpCommunicator(
            application,
            "POST",
            "/mcp",
            body=PING,
            headers=[
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"accept", b"application/json, text/event-stream"),
                *headers,
            ],
        )
        return dict(await communicator.get_response(timeout=10))

    response = async_to_sync(scenario)()
    response["json"] = json.loads(response["body"])
    response["headers"] = {
        name.decode().lower(): value.decode() for name, value in response["headers"]
    }
    return response


def test_it_works_with_a_key_in_either_header(operator: Any) -> None:
    _, key = factories.make_api_key(operator)

    with_header = post_mcp((b"x-api-key", key.encode()))
    with_bearer = post_mcp((b"authorization", f"Bearer {key}".encode()))

    for response in (with_header, with_bearer):
        assert response["status"] == 200
        assert response["json"] == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_it_refuses_no_key_and_a_revoked_key_with_the_api_body(operator: Any) -> None:
    api_key, key = factories.make_api_key(operator)
    api_key.revoked = True
    api_key.save()

    for response in (post_mcp(), post_mcp((b"x-api-key", key.encode()))):
        assert response["status"] == 401
        assert response["json"]["code"] == "not_authenticated"
        assert "X-Api-Key" in response["json"]["detail"]
        assert response["headers"]["www-authenticate"] == 'Bearer realm="api"'


def test_failed_authentications_spend_the_address_budget(rate_limits: Any) -> None:
    rate_limits(failed_authentication="3/min")

    responses = [post_mcp((b"x-api-key", b"abc.def")) for _ in range(5)]

    assert [(r["status"], r["json"]["code"]) for r in responses] == [
        *[(401, "not_authenticated")] * 3,
        *[(429, "throttled")] * 2,
    ]
    assert 0 < int(responses[-1]["headers"]["retry-after"]) <= 61


def test_calls_spend_the_callers_rate_budget(rate_limits: Any, operator: Any) -> None:
    rate_limits(caller="2/min")
    _, key = factories.make_api_key(operator)

    statuses = [post_mcp((b"x-api-key", key.encode()))["status"] for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_a_foreign_origin_is_refused_before_the_key_is_read(operator: Any) -> None:
    _, key = factories.make_api_key(operator)

    foreign = post_mcp((b"x-api-key", key.encode()), (b"origin", b"http://evil.example"))
    own = post_mcp((b"x-api-key", key.encode()), (b"origin", b"http://testserver"))

    assert foreign["status"] == 403
    assert foreign["json"]["code"] == "permission_denied"
    assert own["status"] == 200
