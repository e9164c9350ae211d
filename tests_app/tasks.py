"""Celery tasks: thin and idempotent. Each takes ids and calls one service.

The services claim their work with a conditional update, so a task delivered twice (acks_late
after a worker died) does nothing the second time. Only transient infrastructure errors (the
database or Redis unreachable) are retried automatically; a target or judge error is recorded by
the service on its row instead. Time limits are enforced by the prefork pool; under the threads
pool (what the I/O-bound replays use) Celery cannot interrupt a thread, so the target's timeout
and the reaper bound a replay instead.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.signals import worker_shutdown
from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Loaded with the worker, not by its first tasks: 32 threads would queue on the import lock while
# one imports the replay service and the target SDK behind it.
from tests_app.services import replay as replay_service
from tests_app.services import replay_async

TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)

# Replays and grades: safe to deliver twice (their services claim the work with a conditional
# update), so they are acknowledged late and retried only when the database or Redis blinked.
LONG_TASK_OPTIONS: dict[str, Any] = {
    "ignore_result": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": settings.REPLAY_SOFT_TIME_LIMIT,
    "time_limit": settings.REPLAY_TIME_LIMIT,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(
    name="tests_app.tasks.replay_invocation",
    bind=True,
    **LONG_TASK_OPTIONS,
)
def replay_invocation(self: Task, invocation_id: str) -> None:
    # A worker replays on its process's event loop (the pool thread waits); an eager run (the
    # embedded runtime's threads, the suite's in-transaction tasks) stays on its thread and on
    # Django's connection, whose transaction it may have to see.
    if not self.request.is_eager and replay_async.enabled():
        replay_async.replay_invocation(invocation_id=invocation_id)
    else:
        replay_service.replay_invocation(invocation_id=invocation_id)


@worker_shutdown.connect
def close_replay_pool(**_: Any) -> None:
    # The asyncio engine's connections, closed rather than dropped when the worker stops.
    replay_async.close()


@shared_task(
    name="tests_app.tasks.grade_invocation",
    **LONG_TASK_OPTIONS,
)
def grade_invocation(grade_id: str) -> None:
    from tests_app.services.grading import grade as run_grade

    run_grade(grade_id=grade_id)


# Periodic and cheap: a lost round is simply redone by the next beat, so no retries.
@shared_task(
    name="tests_app.tasks.reap_stale_invocations",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
)
def reap_stale_invocations() -> None:
    from tests_app.services.reaper import reap_stale_invocations as reap

    reap()


@shared_task(
    name="tests_app.tasks.refresh_analytics",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
)
def refresh_analytics() -> None:
    from tests_app.services.refresh import refresh_analytics_views

    refresh_analytics_views()
