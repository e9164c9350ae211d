"""The websocket stack: origin validation, then session authentication."""

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator


def websocket_stack(inner: Any) -> Any:
    return AllowedHostsOriginValidator(AuthMiddlewareStack(inner))
