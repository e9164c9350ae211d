"""The sweep: work that a dead worker or a lost task left behind goes back to work (DESIGN §6).

Run by the beat every REAPER_INTERVAL_S; each part is a conditional update, so two sweeps at
once (two beats, or a manual run) do the work once.

* A replay refreshes ``heartbeat_at`` after every turn and, from its process's heartbeat
  thread, during every model call; an invocation still ``running`` with a heartbeat older than
  REPLAY_HEARTBEAT_TIMEOUT lost its worker. It fails with that reason; its run goes back to
  ``pending`` to be claimed again (its ``attempts`` kept) while attempts < REPLAY_MAX_ATTEMPTS,
  else the run fails and the test may complete. (A replay that only lost its connections does
  not go stale: it retries them, see tests_app.services.replay.)
* An invocation whose replay was requested (``run``) more than REPLAY_START_TIMEOUT ago and has
  not started lost its task: to a worker killed before it claimed it, to Redis restarted empty,
  or to a publish that failed after ``run`` committed. Its replay is enqueued again; a second
  delivery of the first task, should it still come, finds nothing to claim.
* A grade still pending GRADE_TIMEOUT after it was created or its judge last started lost its
  task the same ways, or its worker died while the judge answered: it is enqueued again. Should
  the first judge still answer, the grade keeps whichever result is stored first.
* An active run-all not ticked for RUN_ALL_STALL_TIMEOUT is ticked: the worker whose replay
  would have ticked it died, or its tick was lost. A reaped invocation's run-all is ticked at
  once, so that it claims the run that went back to pending.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from tests_app import tasks
from tests_app.background import enqueue_on_commit
from tests_app.models import Grade, RunAll, Test, TestInvocation, TestRun
from tests_app.realtime.events import publish_on_commit
from tests_app.services import test_state

logger = logging.getLogger(__name__)

# Per call and part; the beat sweeps every REAPER_INTERVAL_S, so a backlog drains in a few rounds.
REAP_BATCH = 200


def _stale(cutoff: object) -> Q:
    # A running invocation always has a heartbeat (the claim sets it); the null branch covers rows
    # moved by hand.
    return Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, updated_at__lt=cutoff)


def reap_stale_invocations() -> int:
    """Fail stale running invocations; returns how many were reaped by this call."""
    cutoff = timezone.now() - timedelta(seconds=settings.REPLAY_HEARTBEAT_TIMEOUT)
    candidates = list(
        TestInvocation.objects.filter(_stale(cutoff), status=TestInvocation.Status.RUNNING)
        .order_by("heartbeat_at")
        .values_list("pk", "test_id", "run_id", "heartbeat_at", "run_all_id")[:REAP_BATCH]
    )
    reaped = 0
    for invocation_id, test_id, run_id, heartbeat_at, run_all_id in candidates:
        since = heartbeat_at.isoformat() if heartbeat_at else "never"
        error = f"worker lost: heartbeat stale since {since}"
        now = timezone.now()
        with transaction.atomic():
            test = test_state.lock_test(test_id)
            # Re-checked under the conditional UPDATE: a heartbeat that arrived meanwhile wins.
            failed = TestInvocation.objects.filter(
                _stale(cutoff), pk=invocation_id, status=TestInvocation.Status.RUNNING
            ).update(status=TestInvocation.Status.FAILED, error=error, ended_at=now, updated_at=now)
            if failed != 1:
                continue
            reaped += 1
            run = TestRun.objects.select_for_update().get(pk=run_id)
            requeued = False
            if run.status in (TestRun.Status.CLAIMED, TestRun.Status.RUNNING) and (
                run.latest_invocation_id in (None, invocation_id)
            ):
                requeued = run.attempts < settings.REPLAY_MAX_ATTEMPTS
                TestRun.objects.filter(pk=run.pk).update(
                    status=TestRun.Status.PENDING if requeued else TestRun.Status.FAILED,
                    updated_at=now,
                )
            Test.objects.filter(pk=test_id, current_invocation_id=invocation_id).update(
                current_invocation=None, updated_at=now
            )
            publish_on_commit(
                test_id=test_id,
                event_type="run.failed",
                invocation_id=invocation_id,
                run_id=run_id,
                error=error,
                requeued=requeued,
            )
            if not requeued:
                test_state.maybe_complete_test(test=test)
            if run_all_id is not None:
                enqueue_on_commit(tasks.tick_run_all, run_all_id)
        logger.warning("Reaped invocation %s (%s); requeued: %s", invocation_id, error, requeued)
    return reaped


def _enqueue_again(
    waiting: QuerySet[Any], *, stamp: str, task: Any, level: int, message: str
) -> int:
    """Enqueue ``task`` again for each row of ``waiting`` (oldest ``stamp`` first, a batch at a
    time), each claimed by moving its ``stamp`` to now; returns how many."""
    enqueued = 0
    for pk in waiting.order_by(stamp).values_list("pk", flat=True)[:REAP_BATCH]:
        # Another sweep, or the work starting, may have come first: only an update wins.
        if waiting.filter(pk=pk).update(**{stamp: timezone.now()}) != 1:
            continue
        enqueue_on_commit(task, pk)
        enqueued += 1
        logger.log(level, message, pk)
    return enqueued


def enqueue_unstarted_invocations() -> int:
    """Enqueue again the replays requested more than REPLAY_START_TIMEOUT ago that have not
    started; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.REPLAY_START_TIMEOUT)
    return _enqueue_again(
        TestInvocation.objects.filter(
            status=TestInvocation.Status.CREATED, enqueued_at__lt=cutoff
        ).exclude(task_id=""),
        stamp="enqueued_at",
        task=tasks.replay_invocation,
        level=logging.WARNING,
        message="Invocation %s waited for its replay; enqueued again",
    )


def enqueue_stranded_grades() -> int:
    """Enqueue again the grades left pending GRADE_TIMEOUT; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.GRADE_TIMEOUT)
    return _enqueue_again(
        Grade.objects.filter(status=Grade.Status.PENDING, updated_at__lt=cutoff),
        stamp="updated_at",
        task=tasks.grade_invocation,
        level=logging.WARNING,
        message="Grade %s waited for its judge; enqueued again",
    )


def tick_stalled_run_alls() -> int:
    """Tick the active run-alls not ticked for RUN_ALL_STALL_TIMEOUT; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_ALL_STALL_TIMEOUT)
    return _enqueue_again(
        RunAll.objects.filter(status=RunAll.Status.ACTIVE, ticked_at__lt=cutoff),
        stamp="ticked_at",
        task=tasks.tick_run_all,
        level=logging.INFO,
        message="Run-all %s had not moved on; ticked",
    )


def sweep() -> tuple[int, int, int, int]:
    """Every part: (invocations reaped, replays enqueued again, grades enqueued again, run-alls
    ticked)."""
    return (
        reap_stale_invocations(),
        enqueue_unstarted_invocations(),
        enqueue_stranded_grades(),
        tick_stalled_run_alls(),
    )
