"""Who is acting, and through which client. Services take an Actor, never a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import User


CLIENT_BROWSER = "browser"
CLIENT_AGENT = "agent"
CLIENT_MCP = "mcp"

_FALSY = {"", "0", "false", "no", "off", "none", "null"}


@dataclass(frozen=True)
class Actor:
    user: User
    client: str = CLIENT_BROWSER

    @property
    def is_staff(self) -> bool:
        return bool(self.user.is_staff)

    @property
    def display_name(self) -> str:
        return display_name(self.user)


def display_name(user: Any) -> str:
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full or user.get_username()


def client_kind(*, api_key_used: bool, mcp_header: str | None) -> str:
    """``X-MCP: <truthy>`` marks an mcp client; otherwise keys are agents, sessions browsers."""
    if mcp_header is not None and mcp_header.strip().lower() not in _FALSY:
        return CLIENT_MCP
    return CLIENT_AGENT if api_key_used else CLIENT_BROWSER
