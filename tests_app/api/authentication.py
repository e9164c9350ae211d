"""API keys (``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``) and browser sessions.

Keys are djangorestframework-api-key keys: only the prefix and a hash are stored. A key that is
unknown, revoked, expired or belongs to an inactive user is a 401.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tests_app.actors import Actor, client_kind
from tests_app.models import ApiKey

# last_used_at is a hint for operators; writing it on every request would make every read a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def key_from_request(meta: dict[str, Any]) -> str | None:
    """The key of ``X-Api-Key`` or of ``Authorization: Bearer``; None when neither is sent."""
    key = meta.get("HTTP_X_API_KEY")
    if key:
        return str(key).strip()
    authorization = str(meta.get("HTTP_AUTHORIZATION") or "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def user_for_key(key: str) -> tuple[Any, ApiKey] | None:
    """The active user and usable key for a raw key, or None. Shared by the API and websockets."""
    prefix, dot, _ = key.partition(".")
    if not dot or not prefix:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked=False).first()
    if api_key is None or api_key.has_expired or not api_key.user.is_active:
        return None
    if not api_key.is_valid(key):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key.user, api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        key = key_from_request(request.META)
        if key is None:
            return None
        found = user_for_key(key)
        if found is None:
            raise exceptions.AuthenticationFailed("The API key is unknown, revoked or expired.")
        return found

    def authenticate_header(self, request: Request) -> str:
        # Present so that DRF answers 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


class SessionAuthentication(authentication.SessionAuthentication):
    """Browser sessions, with CSRF enforced on every unsafe method."""


def actor_from_request(request: Request) -> Actor:
    return Actor(
        user=request.user,  # type: ignore[arg-type]  # only authenticated views build actors
        client=client_kind(
            api_key_used=isinstance(request.auth, ApiKey),
            mcp_header=request.META.get("HTTP_X_MCP"),
        ),
    )
