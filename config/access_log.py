"""The access log: one line per HTTP request and websocket handshake, written by the app.

Servers write the whole URL to their own access logs (daphne's includes the query string), so a
key that a client puts in a URL, though refused there, would be kept in clear by the log. The
server's access log is turned off (``daphne -v 0``; granian's is off by default and leaves the
query string out) and this one is written instead, after masking every query value that looks
like a credential: its name mentions a key, token, secret, password, auth or session, or the
value has the shape of an API key.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

logger = logging.getLogger("replaybench.access")

MASK = "***"
_SECRET_NAME = re.compile(r"key|token|secret|passw|auth|session|bearer|signature", re.IGNORECASE)
# djangorestframework-api-key's keys: an 8-character prefix, a dot, a 32-character secret.
_API_KEY_SHAPE = re.compile(r"^[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}$")


def mask_query(query: str) -> str:
    """The query string with the value of every credential-like parameter replaced by ***."""
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if equals and (
            _SECRET_NAME.search(unquote_plus(name))
            or _API_KEY_SHAPE.match(unquote_plus(value).strip())
        ):
            value = MASK
        pairs.append(f"{name}{equals}{value}")
    return "&".join(pairs)


def _target(scope: dict[str, Any]) -> str:
    path = scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{mask_query(query)}" if query else path


class AccessLog:
    """ASGI middleware: ``client "METHOD target" status bytes duration_ms``, as an INFO record of
    the ``replaybench.access`` logger; a websocket handshake logs as ``WS`` with 101 when
    accepted and 403 when refused."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] not in {"http", "websocket"}:
            return await self.application(scope, receive, send)
        started = time.monotonic()
        state = {"status": 0, "bytes": 0, "logged": False}
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"

        def write() -> None:
            if state["logged"]:
                return
            state["logged"] = True
            client = scope.get("client") or ("-", 0)
            logger.info(
                '%s "%s %s" %s %s %.1f',
                client[0],
                method,
                _target(scope),
                state["status"],
                state["bytes"],
                (time.monotonic() - started) * 1000,
            )

        async def logged_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = message["status"]
            elif kind == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            elif kind == "websocket.accept":
                state["status"] = 101
                write()
            elif kind == "websocket.close" and not state["status"]:
                state["status"] = 403
                write()
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                write()

        return await self.application(scope, receive, logged_send)
