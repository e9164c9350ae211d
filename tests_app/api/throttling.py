"""Per-caller rate limit (``API_THROTTLE_RATE``, e.g. ``6000/min``), shared by every web process,
and a budget of failed authentications per client address.

DRF's ``SimpleRateThrottle`` keeps each caller's request history as a list in the cache and
rewrites it on every request: at thousands of requests a minute that list is thousands of
timestamps read, pickled and written per call. A fixed window counted with one atomic ``incr``
(Redis in production; ``add`` only for the first call of a window) costs one round trip and
allows at most twice the rate across a window boundary, which is what a guard against runaway
clients needs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle

from tests_app.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.request import Request

logger = logging.getLogger(__name__)


class CallerRateThrottle(SimpleRateThrottle):
    """One budget per API key, else per user, else per client address."""

    scope = "caller"
    # Set by SimpleRateThrottle.__init__ from the rate; declared here for the type checker.
    num_requests: int | None
    duration: int | None
    wait_seconds: float | None = None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.num_requests is None or self.duration is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window = int(self.timer() // self.duration)
        count = self._count(f"{key}:{window}", self.duration + 1)
        if count is None:
            # Redis is down: a guard against runaway clients must not take the API down with it.
            logger.warning(
                "The rate limit cannot count while the cache is down; letting %s in", key
            )
            return True
        if count > self.num_requests:
            self.wait_seconds = (window + 1) * self.duration - self.timer()
            return False
        return True

    def _count(self, window_key: str, lifetime: int) -> int | None:
        """The call's count in its window; None when the cache cannot count (Redis down, which
        the cache answers with None rather than an error)."""
        try:
            count = self.cache.incr(window_key)  # the common case: the window exists
        except ValueError:  # the first call of this window: create it, or count if it raced
            if self.cache.add(window_key, 1, timeout=lifetime):
                count = 1
            else:
                try:
                    count = self.cache.incr(window_key)
                except ValueError:  # it expired in between: start it again
                    self.cache.set(window_key, 1, timeout=lifetime)
                    count = 1
        return None if count is None else int(count)

    def wait(self) -> float | None:
        return self.wait_seconds


class FailedAuthenticationThrottle(CallerRateThrottle):
    """Failed authentications (no credentials, an unknown, revoked or wrong key) per client
    address: one counter per address, never one per key tried, so a flood of invented keys
    cannot fill the cache. Only failures are counted and refused; a valid key from the same
    address still works, so one misbehaving client behind a shared address locks nobody out.
    """

    scope = "failed_authentication"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def count_failed_authentication(request: Request) -> None:
    """Count one failed authentication of this request's address; past the budget, a 429."""
    throttle = FailedAuthenticationThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(
            wait=throttle.wait(),
            detail="Too many failed authentications from your address; retry later with a "
            "valid key.",
        )
