"""The websocket stack: origin validation, then session or API key authentication.

Order, outermost first:

1. :class:`BrowserOriginValidator`: a handshake that carries an ``Origin`` must come from an
   allowed origin, compared as scheme, host and port, or it is refused before anything else
   runs. Allowed, as Django's CSRF check allows for forms: the socket's own origin (its scheme,
   and its ``Host`` header, which must be in ``ALLOWED_HOSTS``), and the origins listed in
   ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` covers subdomains). A handshake without
   ``Origin`` is not a browser (browsers always send it), so it may not ride on a session
   cookie: its cookies are dropped and only an API key can authenticate it. This is what stops
   cross-site websocket hijacking while letting agents connect with a plain websockets client.
2. Channels' cookie, session and auth middleware: ``scope["user"]`` from the session cookie.
3. :class:`ApiKeyAuthMiddleware`: an ``X-Api-Key`` or ``Authorization: Bearer`` handshake header
   replaces the session user, as in the REST API (the key is checked first there too). An unknown,
   revoked or expired key makes the caller anonymous, never falls back to the cookie. Keys are
   never read from the URL: URLs end up in proxy logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

from tests_app.api.authentication import key_from_request, user_for_key


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for header_name, header_value in scope.get("headers", []):
        if header_name == name:
            return str(header_value.decode("latin1"))
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str  # lower case; a leading "." matches the domain and its subdomains
    port: int | None

    def matches(self, other: _Origin) -> bool:
        if (self.scheme, self.port) != (other.scheme, other.port):
            return False
        if self.host.startswith("."):
            return other.host == self.host[1:] or other.host.endswith(self.host)
        return other.host == self.host


def _parse_origin(origin: str) -> _Origin | None:
    try:
        parsed = urlparse(origin.strip())
        port = parsed.port
    except ValueError:
        return None
    scheme, host = parsed.scheme.lower(), (parsed.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if host.startswith("*."):
        host = host[1:]
    return _Origin(scheme=scheme, host=host, port=port or _DEFAULT_PORTS[scheme])


def _trusted_origins() -> list[_Origin]:
    return [
        origin for origin in map(_parse_origin, settings.CSRF_TRUSTED_ORIGINS) if origin is not None
    ]


def _own_origin(scope: dict[str, Any]) -> _Origin | None:
    """The origin of the page that may open this socket: its scheme, and its Host if allowed."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") in ("wss", "https")  # the MCP endpoint checks HTTP requests
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header is not None:
        # HTTP_X_FORWARDED_PROTO names the handshake header x-forwarded-proto.
        name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        secure = secure or _header(scope, name) == proxy_header[1]
    return _parse_origin(f"{'https' if secure else 'http'}://{host}")


def origin_allowed(scope: dict[str, Any], origin: str) -> bool:
    parsed = _parse_origin(origin)
    if parsed is None:
        return False
    own = _own_origin(scope)
    if own is not None and own.matches(parsed):
        return True
    return any(trusted.matches(parsed) for trusted in _trusted_origins())


class BrowserOriginValidator:
    """Refuse a foreign ``Origin``; strip cookies from a handshake that sends none."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        if origin is None:
            scope = dict(scope)
            scope["headers"] = [
                (name, value) for name, value in scope.get("headers", []) if name != b"cookie"
            ]
            return await self.application(scope, receive, send)
        if origin_allowed(scope, origin):
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
    return BrowserOriginValidator(AuthMiddlewareStack(ApiKeyAuthMiddleware(inner)))
