"""Celery tasks: thin and idempotent. Each takes ids and calls one service.

The services claim their work with a conditional update, so a task delivered twice (acks_late
after a worker died) does nothing the second time.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="tests_app.tasks.replay_invocation", ignore_result=True)
def replay_invocation(invocation_id: str) -> None:
    from tests_app.services.replay import replay_invocation as run_replay

    run_replay(invocation_id=invocation_id)


@shared_task(name="tests_app.tasks.grade_invocation", ignore_result=True)
def grade_invocation(grade_id: str) -> None:
    from tests_app.services.grading import grade as run_grade

    run_grade(grade_id=grade_id)


@shared_task(name="tests_app.tasks.reap_stale_invocations", ignore_result=True)
def reap_stale_invocations() -> None:
    from tests_app.services.reaper import reap_stale_invocations as reap

    reap()


@shared_task(name="tests_app.tasks.refresh_analytics", ignore_result=True)
def refresh_analytics() -> None:
    from tests_app.services.refresh import refresh_analytics_views

    refresh_analytics_views()
