"""stop: cancel an invocation cooperatively and stop its test (DESIGN §3 "stop")."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from tests_app.actors import Actor
from tests_app.errors import NotFound
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.realtime.events import publish_on_commit
from tests_app.selectors.scope import can_see_department, get_visible_test, require_operator
from tests_app.services.run_all import stop_run_alls_of_test
from tests_app.services.test_state import lock_test

STOPPABLE_INVOCATION_STATUSES = (
    TestInvocation.Status.CREATED,
    TestInvocation.Status.RUNNING,
    TestInvocation.Status.REPLAYED,
)


@dataclass(frozen=True)
class StopResult:
    invocation: TestInvocation
    success: bool
    message: str | None


def stop_invocation(*, actor: Actor, invocation_id: uuid.UUID) -> StopResult:
    """Stop an unfinished invocation, its run and its test.

    A running replay is not killed: it sees ``stop_requested`` (and the status) before its next
    turn and stops writing; its in-flight model call is bounded by the target's timeout. Stopping
    an invocation that already ended, failed or stopped is not an error: ``success`` is False and
    ``message`` says why.
    """
    invocation = TestInvocation.objects.select_related("test").filter(pk=invocation_id).first()
    if invocation is None or not can_see_department(actor.user, invocation.test.department_id):
        raise NotFound("No invocation with that id is visible to you.")
    require_operator(user=actor.user, department_id=invocation.test.department_id)

    with transaction.atomic():
        lock_test(invocation.test_id)  # same lock order as end and the counters: test first
        now = timezone.now()
        stopped = TestInvocation.objects.filter(
            pk=invocation.pk, status__in=STOPPABLE_INVOCATION_STATUSES
        ).update(
            status=TestInvocation.Status.STOPPED,
            stop_requested=True,
            ended_at=now,
            updated_at=now,
        )
        if stopped != 1:
            current = TestInvocation.objects.values_list("status", flat=True).get(pk=invocation.pk)
            invocation.status = current
            return StopResult(
                invocation=invocation,
                success=False,
                message=f"The invocation is already {current}; there is nothing to stop.",
            )
        TestRun.objects.filter(
            pk=invocation.run_id,
            status__in=[TestRun.Status.PENDING, TestRun.Status.CLAIMED, TestRun.Status.RUNNING],
        ).update(status=TestRun.Status.STOPPED, updated_at=now)
        publish_on_commit(
            test_id=invocation.test_id,
            event_type="run.stopped",
            invocation_id=invocation.pk,
            run_id=invocation.run_id,
            status=TestInvocation.Status.STOPPED,
        )
        test_stopped = _stop_locked_test(test_id=invocation.test_id, now=now)
        Test.objects.filter(pk=invocation.test_id, current_invocation=invocation.pk).update(
            current_invocation=None
        )

    invocation.status = TestInvocation.Status.STOPPED
    invocation.stop_requested = True
    invocation.ended_at = now
    message = "The invocation is stopped; a running replay halts before its next turn."
    if test_stopped:
        message += " The test is stopped too, so next answers 409."
    return StopResult(invocation=invocation, success=True, message=message)


def _stop_locked_test(*, test_id: uuid.UUID, now: datetime) -> bool:
    """The test (locked by the caller) stops unless it had finished; a run-all driving it ends
    with it, and its other replays halt too. False when it had already finished."""
    stopped = Test.objects.filter(
        pk=test_id, status__in=[Test.Status.PENDING, Test.Status.RUNNING]
    ).update(status=Test.Status.STOPPED, finished_at=now, updated_at=now)
    if stopped:
        publish_on_commit(test_id=test_id, event_type="test.stopped", status=Test.Status.STOPPED)
        stop_run_alls_of_test(test_id=test_id, now=now)
    return bool(stopped)


def stop_test(*, actor: Actor, test_id: uuid.UUID) -> bool:
    """Stop a test that has nothing open to stop through ``stop_invocation`` (a run-all between
    two claims, or runs that wait for an agent). False when it had already finished."""
    test = get_visible_test(user=actor.user, test_id=test_id)
    require_operator(user=actor.user, department_id=test.department_id)
    with transaction.atomic():
        lock_test(test.pk)
        return _stop_locked_test(test_id=test.pk, now=timezone.now())
