"""Per-caller rate limit (``API_THROTTLE_RATE``, e.g. ``6000/min``), shared by every web process.

DRF's ``SimpleRateThrottle`` keeps each caller's request history as a list in the cache and
rewrites it on every request: at thousands of requests a minute that list is thousands of
timestamps read, pickled and written per call. A fixed window counted with one atomic ``incr``
(Redis in production; ``add`` only for the first call of a window) costs one round trip and
allows at most twice the rate across a window boundary, which is what a guard against runaway
clients needs.

An API-key caller's call is counted by the authentication, in the same Redis round trip that reads
the key's cached entry (:mod:`tests_app.api.authentication`): the throttle then reads that count
instead of sending an ``incr`` of its own. That counter is named by the key's prefix and a digest
of the whole key, because it is taken before the key is checked: calls with a wrong secret count
on a budget of their own and cannot use up the key's. Sessions and the embedded runtime count
here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rest_framework.throttling import SimpleRateThrottle

from tests_app.models import ApiKey

if TYPE_CHECKING:
    from rest_framework.request import Request


# Where the authentication leaves the counter it counted on.
_COUNTED = "replaybench_counted_call"


@dataclass
class Counter:
    """A caller's counter in the current window: its cache key, how long it lives, when the
    window ends, and this call's count once taken."""

    key: str
    lifetime: int
    window_end: float
    count: int | None = None


def counted_call(request: Request) -> Counter | None:
    """The counter the authentication already counted this request on (see the module doc)."""
    counter = getattr(request, _COUNTED, None)
    return counter if isinstance(counter, Counter) and counter.count is not None else None


def remember_count(request: Request, counter: Counter) -> None:
    setattr(request, _COUNTED, counter)


def api_key_ident(raw_key: str) -> str:
    """The rate limit's name for a key sent by a caller, checked or not (see the module doc)."""
    prefix = raw_key.partition(".")[0]
    return f"key:{prefix}:{hashlib.sha256(raw_key.encode()).hexdigest()[:16]}"


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
        return self.key_of(ident)

    def key_of(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def window(self, key: str) -> Counter | None:
        """The counter of ``key`` in the current window (not yet counted on); None when no rate
        is set."""
        if self.rate is None or self.num_requests is None or self.duration is None:
            return None
        window = int(self.timer() // self.duration)
        return Counter(f"{key}:{window}", self.duration + 1, (window + 1) * self.duration)

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.num_requests is None:
            return True
        counter = counted_call(request)
        if counter is None:
            key = self.get_cache_key(request, view)
            counter = self.window(key) if key is not None else None
            if counter is None:
                return True
            counter.count = self._count(counter.key, counter.lifetime)
        if counter.count is not None and counter.count > self.num_requests:
            self.wait_seconds = counter.window_end - self.timer()
            return False
        return True

    def _count(self, window_key: str, lifetime: int) -> int:
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
        return int(count)

    def wait(self) -> float | None:
        return self.wait_seconds
