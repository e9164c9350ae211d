"""Cap the concurrent calls to one target across every worker process (DESIGN §6).

With Redis (``REDIS_URL``) the cap is a lease-based counting semaphore in a sorted set: a script
takes a slot when fewer than ``limit`` leases are held, and stale leases (a worker killed
mid-call) expire after ``lease_s``. Without Redis (the embedded runtime, one
process) a per-process semaphore does the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

from django.conf import settings

from tests_app.targets import TargetError

logger = logging.getLogger(__name__)

_local_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_local_lock = threading.Lock()
_POLL_S = 0.05
# Atomic on the server, with the server's clock: expire stale leases, then take a slot if one is
# free. (Client clocks and a read-then-write from the client would both let too many in.)
_ACQUIRE = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', seconds - lease)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], seconds, ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 60)
  return 1
end
return 0
"""


@cache
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


# redis.asyncio clients belong to the loop that made them: one per loop.
_async_redis_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


def _async_redis(url: str) -> tuple[Any, Any]:
    """This event loop's redis.asyncio client (with its own connection pool) and the acquire
    script registered on it (sent by its SHA, like the threaded path's)."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    found = _async_redis_clients.get(loop)
    if found is None:
        client = redis.asyncio.Redis.from_url(url)
        found = _async_redis_clients[loop] = (client, client.register_script(_ACQUIRE))
    return found


async def close_async_redis() -> None:
    """Close the running loop's redis.asyncio client, if it made one."""
    loop = asyncio.get_running_loop()
    found = _async_redis_clients.pop(loop, None)
    # Let the releases under way reach Redis first.
    await asyncio.gather(
        *(task for task in list(_releasing) if task.get_loop() is loop), return_exceptions=True
    )
    if found is not None:
        await found[0].aclose()


def _local_semaphore(key: str, limit: int) -> threading.BoundedSemaphore:
    with _local_lock:
        return _local_semaphores.setdefault((key, limit), threading.BoundedSemaphore(limit))


def _slot_key(key: str) -> str:
    return f"replaybench:target-slots:{key}"


def _no_slot(wait_s: float, limit: int) -> TargetError:
    return TargetError(f"No free slot for the target within {wait_s:g} s (cap {limit}).")


@contextlib.contextmanager
def target_slot(
    key: str, *, limit: int | None = None, lease_s: float, wait_s: float
) -> Iterator[None]:
    """Hold one of ``limit`` slots of ``key`` for the duration of the block.

    Waits at most ``wait_s`` for a slot, then raises TargetError (the replay fails with it).
    """
    limit = limit if limit is not None else settings.TARGET_MAX_CONCURRENCY
    if limit <= 0:
        yield
        return
    if not settings.REDIS_URL:
        semaphore = _local_semaphore(key, limit)
        if not semaphore.acquire(timeout=wait_s):
            raise _no_slot(wait_s, limit)
        try:
            yield
        finally:
            semaphore.release()
        return

    client = _redis_client(settings.REDIS_URL)
    acquire = client.register_script(_ACQUIRE)
    redis_key = _slot_key(key)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while not acquire(keys=[redis_key], args=[token, limit, lease_s]):
        if time.monotonic() >= deadline:
            raise _no_slot(wait_s, limit)
        time.sleep(_POLL_S)
    try:
        yield
    finally:
        client.zrem(redis_key, token)


# Releases under way on a loop (the loop keeps only weak references to its tasks).
_releasing: set[asyncio.Task[Any]] = set()


def _released(task: asyncio.Task[Any]) -> None:
    _releasing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # The lease then expires on its own after lease_s; the cap is briefly one lower.
        logger.warning("Could not release a target slot: %r", task.exception())


@contextlib.asynccontextmanager
async def async_target_slot(
    key: str, *, limit: int | None = None, lease_s: float, wait_s: float
) -> AsyncIterator[None]:
    """:func:`target_slot` on the running event loop, on the same Redis leases (so threaded and
    asyncio workers share one cap). Needs ``REDIS_URL``, like the asyncio engine that uses it.

    The slot is given back without waiting for Redis to confirm: the replay goes on to record
    its step while the release is on its way (a round trip less on every turn's path). Until
    Redis has run it the slot still counts, so the cap errs on the side of fewer calls."""
    limit = limit if limit is not None else settings.TARGET_MAX_CONCURRENCY
    if limit <= 0:
        yield
        return
    client, acquire = _async_redis(settings.REDIS_URL)
    redis_key = _slot_key(key)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while not await acquire(keys=[redis_key], args=[token, limit, lease_s]):
        if time.monotonic() >= deadline:
            raise _no_slot(wait_s, limit)
        await asyncio.sleep(_POLL_S)
    try:
        yield
    finally:
        release = asyncio.get_running_loop().create_task(client.zrem(redis_key, token))
        _releasing.add(release)
        release.add_done_callback(_released)
