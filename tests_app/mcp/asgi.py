"""``/mcp``: the MCP server over the SDK's Streamable HTTP transport, behind the API's keys.

Authentication is the API's (``X-Api-Key`` or ``Authorization: Bearer``, checked by
``user_for_key``, which the REST API and the websockets share): no key, or a key that is unknown,
revoked or expired, is a 401 in the API's error body. A browser request (one with an ``Origin``)
must come from an allowed origin, as for the websockets; keys are never taken from cookies.

The transport is stateless and answers JSON: each POST carries one request and gets its answer,
so any web process can serve any call, as for the REST API. Each request runs its own session
manager: daphne does not run the ASGI lifespan where a long-lived one would be started, and a
stateless manager holds nothing between requests anyway.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.responses import JSONResponse

from tests_app.api.authentication import key_from_request, user_for_key
from tests_app.api.errors import error_body
from tests_app.mcp.server import build_server
from tests_app.realtime.middleware import origin_allowed

MCP_PATH = "/mcp"

NOT_AUTHENTICATED = (
    "Authentication is required: send X-Api-Key or a Bearer key (an unknown, revoked or "
    "expired key is refused too)."
)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {
        name.decode("latin1").lower(): value.decode("latin1") for name, value in scope["headers"]
    }


def is_mcp_path(path: str) -> bool:
    return path in (MCP_PATH, MCP_PATH + "/")


class McpApplication:
    """The ASGI app of ``/mcp``."""

    def __init__(self) -> None:
        self.server = build_server()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(scope, origin):
            body = error_body("This origin may not call the MCP server.", "permission_denied")
            await JSONResponse(body, status_code=403)(scope, receive, send)
            return
        key = key_from_request(
            {
                "HTTP_X_API_KEY": headers.get("x-api-key"),
                "HTTP_AUTHORIZATION": headers.get("authorization"),
            }
        )
        found = None if key is None else await database_sync_to_async(user_for_key)(key)
        if found is None:
            await JSONResponse(
                error_body(NOT_AUTHENTICATED, "not_authenticated"),
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
            )(scope, receive, send)
            return
        user, _api_key = found
        # Starlette's Request.state reads scope["state"]: the tools find the user there.
        scope = {**scope, "state": {**scope.get("state", {}), "user": user}}
        manager = StreamableHTTPSessionManager(app=self.server, json_response=True, stateless=True)
        async with manager.run():
            await manager.handle_request(scope, receive, send)
