"""Shared pieces of the state machines that several use cases need.

Every function here expects to run inside the caller's transaction; the ones that move the Test's
denormalized counters take the test row lock first, so counters never drift under concurrency.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from tests_app import cache_tags
from tests_app.errors import InvalidTransition
from tests_app.models import Grade, Test, TestRun
from tests_app.realtime.events import next_seq, publish_on_commit

UNFINISHED_RUN_STATUSES = (
    TestRun.Status.PENDING,
    TestRun.Status.CLAIMED,
    TestRun.Status.RUNNING,
)


def lock_test(test_id: uuid.UUID | str) -> Test:
    """The test row, locked until the transaction ends (select_for_update is a no-op on SQLite,
    whose IMMEDIATE transactions already serialize writers)."""
    return Test.objects.select_for_update().get(pk=test_id)


def conditional_status_update(
    queryset: QuerySet[Any],
    *,
    allowed_from: Iterable[str],
    what: str,
    **changes: Any,
) -> None:
    """Move status with one conditional UPDATE; raise 409 naming the current state if it lost.

    ``queryset`` must select exactly one row. The UPDATE's WHERE clause is the lock: of two
    callers racing for the same transition, exactly one sees a row count of 1.
    """
    allowed = tuple(allowed_from)
    updated = queryset.filter(status__in=allowed).update(**changes)
    if updated == 1:
        return
    current = queryset.values_list("status", flat=True).first()
    if current is None:
        raise InvalidTransition(f"The {what} no longer exists.")
    raise InvalidTransition(
        f"The {what} is {current}; this needs it to be {' or '.join(allowed)}.",
        code=f"{what.replace(' ', '_')}_{current}",
    )


def maybe_complete_test(*, test: Test) -> bool:
    """Complete a running, non-infinite test once none of its runs is left unfinished.

    The caller holds the test's row lock (:func:`lock_test`). Publishes ``test.completed``.
    """
    if test.infinite_mode or test.status != Test.Status.RUNNING:
        return False
    if TestRun.objects.filter(test=test, status__in=UNFINISHED_RUN_STATUSES).exists():
        return False
    now = timezone.now()
    Test.objects.filter(pk=test.pk).update(
        status=Test.Status.COMPLETED, finished_at=now, updated_at=now
    )
    test.status = Test.Status.COMPLETED
    test.finished_at = now
    cache_tags.invalidate_on_commit(cache_tags.detail_tag(test.pk))
    # Grades asked for with end may still be on their way: a client waits for those too.
    pending_grades, seq = pending_grades_and_seq(test_id=test.pk)
    publish_on_commit(
        test_id=test.pk,
        event_type="test.completed",
        seq=seq,
        status=test.status,
        pending_grades=pending_grades,
    )
    return True


def count_settled_grade(*, test_id: uuid.UUID | str) -> None:
    """A pending grade became done or failed: one fewer pending on its test. Inside the
    transaction that settled it, so the count moves with the grade."""
    # The floor keeps a grade made pending outside end (by hand) from driving it below zero.
    Test.objects.filter(pk=test_id, pending_grades__gt=0).update(
        pending_grades=F("pending_grades") - 1
    )


def pending_grades_and_seq(*, test_id: uuid.UUID | str) -> tuple[int, int]:
    """The test's pending grades now, and the seq of the event that will say so.

    The seq is taken here, under the test row lock that the count's writers hold too, rather
    than after commit: events that carry the count then reach clients in the order the count
    moved, so the last one a client saw is the current count."""
    seq = next_seq(test_id)
    pending = Test.objects.values_list("pending_grades", flat=True).get(pk=test_id)
    return int(pending), seq


def count_completed_run(*, test_id: uuid.UUID | str) -> None:
    Test.objects.filter(pk=test_id).update(completed_runs=F("completed_runs") + 1)


def make_grade_current(*, grade: Grade) -> None:
    """Denormalize a finished grade onto its run and move the test's counters by the difference.

    The newest ``done`` grade of an invocation is current; when it belongs to the run's latest
    invocation it is the run's score. Older grades stay as history. Runs inside a transaction;
    takes the test lock so that two graders finishing at once do not lose an update.
    """
    if grade.status != Grade.Status.DONE or grade.score is None:
        return
    invocation = grade.invocation
    # Even a grade that does not become current shows in get's invocation list.
    cache_tags.invalidate_on_commit(cache_tags.detail_tag(invocation.test_id))
    test = lock_test(invocation.test_id)
    run = TestRun.objects.select_for_update().get(pk=invocation.run_id)
    if run.latest_invocation_id != invocation.pk:
        return
    newest = (
        Grade.objects.filter(invocation=invocation, status=Grade.Status.DONE)
        .order_by("-created_at")
        .values_list("pk", flat=True)
        .first()
    )
    if newest != grade.pk:
        return
    graded_delta, passed_delta, score_delta = 1, int(bool(grade.passed)), float(grade.score)
    if run.score is not None:
        graded_delta -= 1
        passed_delta -= int(bool(run.passed))
        score_delta -= float(run.score)
    TestRun.objects.filter(pk=run.pk).update(
        score=grade.score, passed=grade.passed, updated_at=timezone.now()
    )
    Test.objects.filter(pk=test.pk).update(
        graded_runs=F("graded_runs") + graded_delta,
        passed_runs=F("passed_runs") + passed_delta,
        score_sum=F("score_sum") + score_delta,
    )


def complete_grade(*, grade: Grade) -> None:
    """A grade just became ``done``: make it current and tell the socket (after commit).

    Every source of grades (agent, judge, human) ends here, so the counters and the
    ``grade.completed`` event cannot disagree.
    """
    make_grade_current(grade=grade)
    pending_grades, seq = pending_grades_and_seq(test_id=grade.invocation.test_id)
    publish_on_commit(
        test_id=grade.invocation.test_id,
        event_type="grade.completed",
        seq=seq,
        pending_grades=pending_grades,
        invocation_id=grade.invocation_id,
        run_id=grade.invocation.run_id,
        grade_id=str(grade.pk),
        source=grade.source,
        score=grade.score,
        passed=grade.passed,
        feedback=grade.feedback,
    )


def in_transaction() -> bool:
    return transaction.get_connection().in_atomic_block
