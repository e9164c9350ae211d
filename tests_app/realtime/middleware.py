"""The websocket stack: origin validation, then session or API key authentication.

Order, outermost first:

1. :class:`BrowserOriginValidator`: a handshake that carries an ``Origin`` must come from an
   allowed host (``ALLOWED_HOSTS``), or it is refused before anything else runs. A handshake
   without ``Origin`` is not a browser (browsers always send it), so it may not ride on a session
   cookie: its cookies are dropped and only an API key can authenticate it. This is what stops
   cross-site websocket hijacking while letting agents connect with a plain websockets client.
2. Channels' cookie, session and auth middleware: ``scope["user"]`` from the session cookie.
3. :class:`ApiKeyAuthMiddleware`: an ``X-Api-Key`` or ``Authorization: Bearer`` handshake header
   replaces the session user, as in the REST API (the key is checked first there too). An unknown,
   revoked or expired key makes the caller anonymous, never falls back to the cookie. Keys are
   never read from the URL: URLs end up in proxy logs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from tests_app.api.authentication import key_from_request, user_for_key


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for header_name, header_value in scope.get("headers", []):
        if header_name == name:
            return str(header_value.decode("latin1"))
    return None


class BrowserOriginValidator(OriginValidator):
    """Refuse a foreign ``Origin``; strip cookies from a handshake that sends none."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        if origin is None:
            scope = dict(scope)
            scope["headers"] = [
                (name, value) for name, value in scope.get("headers", []) if name != b"cookie"
            ]
            return await self.application(scope, receive, send)
        if self.valid_origin(urlparse(origin)):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


class ApiKeyAuthMiddleware(BaseMiddleware):
    """Authenticate by an API key handshake header (``scope["api_key_id"]`` records which)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        meta = {
            "HTTP_X_API_KEY": _header(scope, b"x-api-key"),
            "HTTP_AUTHORIZATION": _header(scope, b"authorization"),
        }
        key = key_from_request(meta)
        if key is not None:
            scope = dict(scope)
            found = await database_sync_to_async(user_for_key)(key)
            if found is None:
                scope["user"], scope["api_key_id"] = AnonymousUser(), None
            else:
                scope["user"], scope["api_key_id"] = found[0], found[1].pk
        return await super().__call__(scope, receive, send)


def websocket_stack(inner: Any) -> Any:
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(AuthMiddlewareStack(ApiKeyAuthMiddleware(inner)), allowed_hosts)
