"""Cap the concurrent calls to one target across every worker process (DESIGN §6).

With Redis (``REDIS_URL``) the cap is a lease-based counting semaphore in a sorted set: a script
takes a slot when fewer than ``limit`` leases are held, after dropping the leases that expired. A
lease lasts ``REPLAY_HEARTBEAT_TIMEOUT`` and the replay's heartbeat renews the one it holds, so the
slots of a killed worker come back within that time. Without Redis (the embedded runtime, one
process) a semaphore per process does the same job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings

from tests_app.outages import until_it_works
from tests_app.targets.base import TargetError

logger = logging.getLogger(__name__)

POLL_S = 0.05
# Atomic on the server, with the server's clock: expire stale leases, then take a slot if one is
# free. (Client clocks and a read-then-write from the client would both let too many in.)
_ACQUIRE = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', seconds - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], seconds, ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
  return 1
end
return 0
"""
# Move a held lease to the server's now; a lease that expired meanwhile stays gone.
_RENEW = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', seconds, ARGV[1])
"""

_local_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_local_lock = threading.Lock()


@dataclass(frozen=True)
class _Scripts:
    client: Any
    acquire: Any
    renew: Any


@cache
def _scripts(url: str) -> _Scripts:
    # Registered scripts are sent by their digest, and again in full if Redis lost them.
    client = redis.Redis.from_url(url)
    return _Scripts(client, client.register_script(_ACQUIRE), client.register_script(_RENEW))


def _local_semaphore(key: str, limit: int) -> threading.BoundedSemaphore:
    with _local_lock:
        return _local_semaphores.setdefault((key, limit), threading.BoundedSemaphore(limit))


@dataclass(frozen=True)
class Lease:
    """A slot held in Redis, for the heartbeat to renew."""

    redis_key: str
    token: str

    def renew(self) -> None:
        _scripts(settings.REDIS_URL).renew(keys=[self.redis_key], args=[self.token])


def _no_slot(wait_s: float, limit: int) -> TargetError:
    return TargetError(f"No free slot for the target within {wait_s:g} s (cap {limit}).")


@contextlib.contextmanager
def target_slot(key: str, *, wait_s: float, limit: int | None = None) -> Iterator[Lease | None]:
    """Hold one of ``limit`` slots of ``key`` (TARGET_MAX_CONCURRENCY) for the block; yields the
    lease to renew (None without Redis, or without a cap).

    Waits at most ``wait_s`` for a slot, then raises TargetError (the replay fails with it).
    Taking the slot outlasts a passing Redis outage (tests_app.outages); giving it back never
    fails the work: a lease left behind expires on its own.
    """
    limit = settings.TARGET_MAX_CONCURRENCY if limit is None else limit
    if limit <= 0:
        yield None
        return
    if not settings.REDIS_URL:
        semaphore = _local_semaphore(key, limit)
        if not semaphore.acquire(timeout=wait_s):
            raise _no_slot(wait_s, limit)
        try:
            yield None
        finally:
            semaphore.release()
        return

    scripts = _scripts(settings.REDIS_URL)
    lease = Lease(redis_key=f"replaybench:target-slots:{key}", token=uuid.uuid4().hex)
    lease_s = settings.REPLAY_HEARTBEAT_TIMEOUT
    deadline = time.monotonic() + wait_s
    while not until_it_works(
        lambda: scripts.acquire(keys=[lease.redis_key], args=[lease.token, limit, lease_s]),
        what=f"A slot of {key}",
    ):
        if time.monotonic() >= deadline:
            raise _no_slot(wait_s, limit)
        time.sleep(POLL_S)
    try:
        yield lease
    finally:
        try:
            scripts.client.zrem(lease.redis_key, lease.token)
        except redis.RedisError as error:
            logger.warning(
                "Could not give back a slot of %s; it expires on its own: %r", key, error
            )
