"""``/mcp``: the MCP server over the SDK's Streamable HTTP transport, behind the API's keys.

Authentication is the API's (``X-Api-Key`` or ``Authorization: Bearer``, checked by
``user_for_key``, which the REST API and the websockets share): no key, or a key that is unknown,
revoked or expired, is a 401 in the API's error body, and spends the address's budget of failed
authentications as it does over REST; a valid key spends its caller's rate budget (a 429 past
either). A browser request (one with an ``Origin``) must come from an allowed origin, as for the
websockets; keys are never taken from cookies.

The transport is stateless and answers JSON: each POST carries one request and gets its answer,
so any web process can serve any call, as for the REST API. Each request runs its own session
manager: daphne does not run the ASGI lifespan where a long-lived one would be started, and a
stateless manager holds nothing between requests anyway.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from rest_framework import exceptions
from rest_framework.request import Request
from starlette.responses import JSONResponse

from tests_app.api.authentication import key_from_request, user_for_key
from tests_app.api.errors import error_body, exception_handler
from tests_app.api.throttling import CallerRateThrottle, count_failed_authentication
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


def _api_request(scope: dict[str, Any], headers: dict[str, str]) -> Request:
    """The request as DRF's throttles read it: the client address and the headers."""
    http_request = HttpRequest()
    client = scope.get("client") or ("", 0)
    http_request.META = {
        "REMOTE_ADDR": client[0],
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    return Request(http_request)


def authenticate(scope: dict[str, Any], headers: dict[str, str]) -> Any:
    """The key's user, as the REST API authenticates and throttles it.

    Raises DRF's AuthenticationFailed (401) or Throttled (429), rendered by the API's handler.
    """
    request = _api_request(scope, headers)
    key = key_from_request(request.META)
    found = None if key is None else user_for_key(key)
    if found is None:
        count_failed_authentication(request)
        raise exceptions.AuthenticationFailed(NOT_AUTHENTICATED)
    request.user, request.auth = found
    throttle = CallerRateThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(wait=throttle.wait())
    return found[0]


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
        try:
            user = await database_sync_to_async(authenticate)(scope, headers)
        except Exception as refusal:  # a refusal, an outage (503): the API's one error body
            response = exception_handler(refusal, {"view": self})
            refused_headers = {}
            if response.has_header("Retry-After"):
                refused_headers["Retry-After"] = response["Retry-After"]
            if response.status_code == 401:
                refused_headers["WWW-Authenticate"] = 'Bearer realm="api"'
            await JSONResponse(
                response.data, status_code=response.status_code, headers=refused_headers
            )(scope, receive, send)
            return
        # Starlette's Request.state reads scope["state"]: the tools find the user there.
        scope = {**scope, "state": {**scope.get("state", {}), "user": user}}
        manager = StreamableHTTPSessionManager(app=self.server, json_response=True, stateless=True)
        async with manager.run():
            await manager.handle_request(scope, receive, send)
