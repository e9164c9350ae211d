"""Cap the concurrent calls to one target across every worker process (DESIGN §6).

With Redis (``REDIS_URL``) the cap is a lease-based counting semaphore in a sorted set: a holder
adds itself with a timestamp, keeps the slot only if it ranks below the limit, and stale leases
(a worker killed mid-call) expire after ``lease_s``. Without Redis (the embedded runtime, one
process) a per-process semaphore does the same job.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cache
from typing import Any

from django.conf import settings

from tests_app.targets import TargetError

_local_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_local_lock = threading.Lock()
_POLL_S = 0.05


@cache
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def _local_semaphore(key: str, limit: int) -> threading.BoundedSemaphore:
    with _local_lock:
        return _local_semaphores.setdefault((key, limit), threading.BoundedSemaphore(limit))


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
            raise TargetError(f"No free slot for the target within {wait_s:g} s (cap {limit}).")
        try:
            yield
        finally:
            semaphore.release()
        return

    client = _redis_client(settings.REDIS_URL)
    redis_key = f"replaybench:target-slots:{key}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        now = time.time()
        pipe = client.pipeline()
        pipe.zremrangebyscore(redis_key, "-inf", now - lease_s)
        pipe.zadd(redis_key, {token: now})
        pipe.zrank(redis_key, token)
        pipe.expire(redis_key, int(lease_s) + 60)
        rank = pipe.execute()[2]
        if rank is not None and rank < limit:
            break
        # Over the cap: step back so that we do not block those ranked below us.
        client.zrem(redis_key, token)
        if time.monotonic() >= deadline:
            raise TargetError(f"No free slot for the target within {wait_s:g} s (cap {limit}).")
        time.sleep(_POLL_S)
    try:
        yield
    finally:
        client.zrem(redis_key, token)
