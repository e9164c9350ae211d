from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.throttling import SimpleRateThrottle

from tests_app.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.request import Request


class CallerRateThrottle(SimpleRateThrottle):
    """One budget per API key, else per user, else per client address (rate: API_THROTTLE_RATE)."""

    scope = "caller"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
