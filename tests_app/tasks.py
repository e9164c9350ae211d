"""Celery tasks: thin and idempotent. Each takes ids and calls one service.

The services claim their work with a conditional update, so a task delivered twice (the sweep
enqueued it again while the first delivery was still coming) does nothing the second time. A
message leaves Redis as a worker takes it (config/settings.py): what a dead worker held comes back
through the sweep, never through a redelivery. Only transient infrastructure errors (the
database or Redis unreachable) are retried automatically; a target or judge error is recorded by
the service on its row instead. Under the threads pool (what the I/O-bound replays use) Celery
cannot interrupt a thread, so the target's timeout and the reaper bound a replay instead.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from tests_app.outages import INFRASTRUCTURE_ERRORS
from tests_app.services import grading, refresh, replay, run_all, sweep

# Replays and grades: safe to deliver twice (their services claim the work with a conditional
# update) and retried only when the database or Redis blinked.
LONG_TASK_OPTIONS: dict[str, Any] = {
    "ignore_result": True,
    "soft_time_limit": settings.REPLAY_SOFT_TIME_LIMIT,
    "time_limit": settings.REPLAY_TIME_LIMIT,
    "autoretry_for": INFRASTRUCTURE_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="tests_app.tasks.replay_invocation", **LONG_TASK_OPTIONS)
def replay_invocation(invocation_id: str) -> None:
    replayed = replay.replay_invocation(invocation_id=invocation_id)
    # A run-all's replay moves its run-all on (ends it, claims the next); should this worker die
    # first, the sweep ticks the run-all instead.
    run_all.tick_after_replay(replayed)


@shared_task(name="tests_app.tasks.grade_invocation", **LONG_TASK_OPTIONS)
def grade_invocation(grade_id: str) -> None:
    grading.grade(grade_id=grade_id)


# Short and idempotent: a tick delivered twice claims nothing the first did not leave room for,
# and a lost one is redone by the sweep.
@shared_task(
    name="tests_app.tasks.tick_run_all",
    ignore_result=True,
    soft_time_limit=120,
    time_limit=180,
    autoretry_for=INFRASTRUCTURE_ERRORS,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def tick_run_all(run_all_id: str) -> None:
    run_all.tick_run_all(run_all_id=run_all_id)


# Periodic and cheap: a lost round is simply redone by the next beat, so no retries.
@shared_task(
    name="tests_app.tasks.sweep_stranded_work",
    ignore_result=True,
    soft_time_limit=120,
    time_limit=180,
)
def sweep_stranded_work() -> None:
    sweep.sweep()


@shared_task(
    name="tests_app.tasks.refresh_analytics",
    ignore_result=True,
    soft_time_limit=120,
    time_limit=180,
)
def refresh_analytics() -> None:
    refresh.refresh_analytics_views()
