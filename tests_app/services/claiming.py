"""next: claim the pending run with the lowest ordinal and open an invocation on it.

Concurrency: many agents call next on one test at once. On PostgreSQL the candidate run is read
with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent callers pick different rows instead of
queueing on the same one; the claim itself is a conditional UPDATE (status still pending), so even
without the row lock a run is claimed at most once. On SQLite the IMMEDIATE transaction holds the
database write lock for the whole block, which serializes claims.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from tests_app.actors import Actor
from tests_app.errors import InvalidTransition
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.selectors.scope import get_visible_test, require_operator
from tests_app.services.starting import build_cycle_runs
from tests_app.services.test_state import lock_test


@dataclass(frozen=True)
class Claim:
    invocation: TestInvocation
    run: TestRun
    total_runs: int  # runs in the claimed run's cycle


def _refuse_unless_claimable(test: Test) -> None:
    if test.is_archived:
        raise InvalidTransition(
            "The test is archived; unarchive it before claiming runs.", code="test_archived"
        )
    if test.status == Test.Status.STOPPED:
        raise InvalidTransition(
            "The test is stopped; start a new test to run this benchmark again.",
            code="test_stopped",
        )
    if test.status == Test.Status.COMPLETED:
        raise InvalidTransition(
            "The test is completed: every run has finished.", code="test_completed"
        )


def _pending_runs(test_id: uuid.UUID) -> QuerySet[TestRun]:
    queryset = TestRun.objects.filter(test_id=test_id, status=TestRun.Status.PENDING).order_by(
        "cycle", "ordinal"
    )
    if connection.vendor == "postgresql":
        # Skip rows another claimer holds: it will take them; we take the next one.
        queryset = queryset.select_for_update(skip_locked=True)
    return queryset


def _take(test_id: uuid.UUID) -> TestRun | None:
    """Claim one pending run (pending → claimed), or None when no pending run is free."""
    # A few tries: without the row lock (SQLite) a candidate can be taken between the read and
    # the conditional update; with it (PostgreSQL) the first candidate is ours.
    for _ in range(5):
        run = _pending_runs(test_id).first()
        if run is None:
            return None
        claimed = TestRun.objects.filter(pk=run.pk, status=TestRun.Status.PENDING).update(
            status=TestRun.Status.CLAIMED,
            attempts=F("attempts") + 1,
            updated_at=timezone.now(),
        )
        if claimed == 1:
            run.status = TestRun.Status.CLAIMED
            run.attempts += 1
            return run
    return None


def _start_next_cycle(test_id: uuid.UUID) -> None:
    """Infinite mode: add the next cycle of runs unless a free pending run exists by now."""
    test = lock_test(test_id)  # serializes cycle creation: one new cycle, not one per caller
    # Runs that other claimers hold locks on are not free (they are being claimed), so skip
    # them here too; a free one found is locked for us and is what _take returns next.
    if _pending_runs(test_id).values_list("pk", flat=True).first() is not None:
        return
    runs = build_cycle_runs(test=test, benchmark=test.benchmark, cycle=test.cycle + 1)
    Test.objects.filter(pk=test_id).update(
        cycle=F("cycle") + 1, total_runs=F("total_runs") + len(runs), updated_at=timezone.now()
    )


def claim_next_run(*, actor: Actor, test_id: uuid.UUID) -> Claim:
    """Claim the next pending run of a test for ``actor`` and create its invocation (created).

    The first claim moves the test pending → running. Raises NotFound, PermissionDenied, and
    InvalidTransition (409) for an archived, stopped or completed test, or when no run is pending
    in a test that is not in infinite mode.
    """
    test = get_visible_test(user=actor.user, test_id=test_id)
    require_operator(user=actor.user, department_id=test.department_id)
    _refuse_unless_claimable(test)

    with transaction.atomic():
        run = _take(test.pk)
        for _ in range(3 if test.infinite_mode else 0):
            if run is not None:
                break
            # Once we hold the test lock nobody else adds cycles, so this ends in one or two
            # rounds: the runs we add are invisible to others until we commit.
            _start_next_cycle(test.pk)
            run = _take(test.pk)
        if run is None:
            raise InvalidTransition(
                "The test is completed for claiming: no run is pending, every run is already "
                "claimed or finished.",
                code="test_completed",
            )
        now = timezone.now()
        invocation = TestInvocation.objects.create(
            test_id=test.pk, run=run, client=actor.client, actor=actor.user
        )
        TestRun.objects.filter(pk=run.pk).update(latest_invocation=invocation)
        run.latest_invocation = invocation
        Test.objects.filter(pk=test.pk, status=Test.Status.PENDING).update(
            status=Test.Status.RUNNING, started_at=now, updated_at=now
        )
        # Conditional on the test still being claimable: a concurrent stop or archive that
        # committed after our first check makes this match nothing, and the claim rolls back.
        still_open = Test.objects.filter(
            pk=test.pk, status=Test.Status.RUNNING, is_archived=False
        ).update(current_invocation=invocation, updated_at=now)
        if still_open != 1:
            _refuse_unless_claimable(Test.objects.get(pk=test.pk))
            raise InvalidTransition("The test can no longer be claimed.", code="test_closed")
        total_runs = TestRun.objects.filter(test_id=test.pk, cycle=run.cycle).count()
    return Claim(invocation=invocation, run=run, total_runs=total_runs)
