"""API keys (``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``) and browser sessions.

Keys are djangorestframework-api-key keys: only the prefix and a hash are stored. A key that is
unknown, revoked, expired or belongs to an inactive user is a 401.

Every API call authenticates, so with a shared cache (Redis) the key's row, its user and the
user's memberships are kept there for ``API_KEY_CACHE_SECONDS`` (30 s by default): one cache
read instead of two queries per call. The cache holds what the database holds (the prefix and
the hash, never the key), the key is still checked against the hash on every call, and every
change that matters deletes the entry at once, whichever process makes it: revoking keys
(``services.api_keys``), and saving or deleting a key, a user or a membership (the signals in
:mod:`tests_app.signals`). Only a bulk ``UPDATE`` written outside those paths waits out the TTL.
Without a shared cache (the embedded runtime, where a management command runs in another
process) the TTL is 0 and nothing is cached.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tests_app.actors import Actor, client_kind
from tests_app.api.throttling import count_failed_authentication
from tests_app.models import ApiKey, Membership
from tests_app.selectors.scope import remember_memberships

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


def _entry_key(prefix: str) -> str:
    return f"auth:apikey:{prefix}"


def _changed_key(prefix: str) -> str:
    return f"auth:apikey-changed:{prefix}"


def forget_key_prefixes(prefixes: list[str]) -> None:
    """Stop trusting cached entries of these keys (after a revoke, or a change of key, user or
    role). Besides deleting the entry, a marker lives for twice the TTL: a request that read the
    old rows just before the change and caches them just after it would otherwise leave a stale
    entry; while the marker lives, these keys are read from the database and not cached."""
    ttl = settings.API_KEY_CACHE_SECONDS
    if not prefixes or ttl <= 0:
        return
    cache.set_many({_changed_key(prefix): 1 for prefix in prefixes}, timeout=2 * ttl + 5)
    cache.delete_many([_entry_key(prefix) for prefix in prefixes])


def _load(prefix: str) -> tuple[ApiKey, dict[Any, str], bool] | None:
    """The usable key of this prefix with its user, the user's memberships, and whether the
    entry may be cached; from the cache when it holds them."""
    cacheable = settings.API_KEY_CACHE_SECONDS > 0
    if cacheable:
        found = cache.get_many([_entry_key(prefix), _changed_key(prefix)])
        cacheable = _changed_key(prefix) not in found
        if cacheable and _entry_key(prefix) in found:
            api_key, memberships = found[_entry_key(prefix)]
            return api_key, memberships, True
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked=False).first()
    if api_key is None:
        return None
    memberships = dict(
        Membership.objects.filter(user_id=api_key.user_id).values_list("department_id", "role")
    )
    if cacheable:
        _store(prefix, api_key, memberships)
    return api_key, memberships, cacheable


def _store(prefix: str, api_key: ApiKey, memberships: dict[Any, str]) -> None:
    cache.set(_entry_key(prefix), (api_key, memberships), timeout=settings.API_KEY_CACHE_SECONDS)


def user_for_key(key: str) -> tuple[Any, ApiKey] | None:
    """The active user and usable key for a raw key, or None. Shared by the API and websockets."""
    prefix, dot, _ = key.partition(".")
    if not dot or not prefix:
        return None
    loaded = _load(prefix)
    if loaded is None:
        return None
    api_key, memberships, cacheable = loaded
    if api_key.has_expired or not api_key.user.is_active:
        return None
    if not api_key.is_valid(key):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
        if cacheable:
            _store(prefix, api_key, memberships)
    remember_memberships(api_key.user, memberships)
    return api_key.user, api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        key = key_from_request(request.META)
        if key is None:
            return None
        found = user_for_key(key)
        if found is None:
            count_failed_authentication(request)
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
