"""run_all: the workers drive a whole test unattended (issue 20, docs/run-all.md).

A RunAll row holds what to do; ticks do it. A tick ends the run-all's replayed invocations (with
a grade from the configured judge, or the offline reference grader, when ``grade`` is ``ai``),
then claims pending runs as the starter would with next and hands them to the replay workers
with run, until ``concurrency`` of its invocations are in flight. It is ticked when it starts,
after each of its replays (by the replay task), when the sweep reaps one of its invocations, and
by the sweep when it has not been ticked for RUN_ALL_STALL_TIMEOUT. Ticks are idempotent: a tick
that finds nothing to do changes nothing but ``ticked_at``.

It finishes when none of its invocations is in flight and it cannot claim more: no run is
pending (runs that agents hold are theirs to finish), ``max_runs`` distinct runs were claimed,
or the test was stopped, completed or archived. Stopping the test stops it at once (see
:func:`stop_run_alls_of_test`).

Locks, in the order every service of a test takes them: the test row, then the run-all row,
then runs and invocations. Claiming under the test lock also keeps two ticks from both seeing
room for the same slot.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from tests_app import judges, tasks
from tests_app.actors import Actor, display_name
from tests_app.background import enqueue_on_commit
from tests_app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from tests_app.models import RunAll, Test, TestInvocation, TestRun
from tests_app.realtime.events import publish_on_commit
from tests_app.selectors.scope import get_visible_test, require_operator

# Modules rather than names: ending and running import the tasks, which import this module.
from tests_app.services import claiming, ending, running
from tests_app.services.test_state import lock_test, pending_grades_and_seq

logger = logging.getLogger(__name__)

MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 64
DEFAULT_CONCURRENCY = 8
GRADE_CHOICES = tuple(RunAll.Grading.values)

IN_FLIGHT_STATUSES = (
    TestInvocation.Status.CREATED,
    TestInvocation.Status.RUNNING,
    TestInvocation.Status.REPLAYED,
)


def grader_name(grade: str) -> str | None:
    """Who grades a run-all's runs: ``ai`` (the configured judge), ``reference`` (the offline
    reference grader, not an AI, when no judge is configured) or None (ended ungraded)."""
    return judges.default_source() if grade == RunAll.Grading.AI else None


def _validate(*, concurrency: Any, grade: Any, max_runs: Any) -> None:
    problems: dict[str, list[str]] = {}
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not MIN_CONCURRENCY <= concurrency <= MAX_CONCURRENCY
    ):
        problems["concurrency"] = [f"A whole number from {MIN_CONCURRENCY} to {MAX_CONCURRENCY}."]
    if grade not in GRADE_CHOICES:
        problems["grade"] = [f"One of {', '.join(GRADE_CHOICES)}."]
    if max_runs is not None and (
        isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1
    ):
        problems["max_runs"] = ["A positive whole number, or null."]
    if problems:
        raise ValidationFailed("The run-all request is not valid.", fields=problems)


def _refuse_unless_drivable(test: Test) -> None:
    if test.is_archived:
        raise InvalidTransition(
            "The test is archived; unarchive it before running it.", code="test_archived"
        )
    if test.status == Test.Status.STOPPED:
        raise InvalidTransition(
            "The test is stopped; start a new test to run this benchmark again.",
            code="test_stopped",
        )
    if test.status == Test.Status.COMPLETED:
        raise InvalidTransition(
            "The test is completed: every run has finished (retry its failed runs first).",
            code="test_completed",
        )


def _describe(run_all: RunAll) -> str:
    by = display_name(run_all.started_by) or "someone"
    return f"run-all {run_all.pk}, started by {by} at {run_all.created_at.isoformat()}"


def start_run_all(
    *,
    actor: Actor,
    test_id: uuid.UUID,
    concurrency: int = DEFAULT_CONCURRENCY,
    grade: str = RunAll.Grading.AI,
    max_runs: int | None = None,
) -> RunAll:
    """Start driving ``test_id``: the workers claim, replay and end its pending runs, at most
    ``concurrency`` at once, grading each when ``grade`` is ``ai``. Operators only.

    ``max_runs`` (required for an infinite-mode test) bounds the distinct runs it claims.
    Raises ValidationFailed (400), NotFound, PermissionDenied, and InvalidTransition (409) for a
    test that is archived, stopped or completed, or that a run-all drives already
    (code ``run_all_active``, naming it).
    """
    _validate(concurrency=concurrency, grade=grade, max_runs=max_runs)
    test = get_visible_test(user=actor.user, test_id=test_id)
    require_operator(user=actor.user, department_id=test.department_id)
    if test.infinite_mode and max_runs is None:
        raise ValidationFailed(
            "An infinite-mode test never runs out of runs: say how many to run with max_runs.",
            fields={"max_runs": ["Required for an infinite-mode test."]},
        )
    with transaction.atomic():
        locked = lock_test(test.pk)
        _refuse_unless_drivable(locked)
        active = (
            RunAll.objects.select_related("started_by")
            .filter(test=locked, status=RunAll.Status.ACTIVE)
            .first()
        )
        if active is not None:
            raise InvalidTransition(
                f"A run-all already drives this test ({_describe(active)}); it ends when no run "
                "is pending, or when the test is stopped.",
                code="run_all_active",
            )
        run_all = RunAll.objects.create(
            test=locked,
            concurrency=concurrency,
            grade=grade,
            max_runs=max_runs,
            started_by=actor.user,
            client=actor.client,
        )
        publish_on_commit(
            test_id=locked.pk,
            event_type="run_all.started",
            run_all_id=str(run_all.pk),
            concurrency=concurrency,
            grade=grade,
            grader=grader_name(grade),
            max_runs=max_runs,
            started_by=actor.display_name,
        )
        enqueue_on_commit(tasks.tick_run_all, run_all.pk)
    return run_all


def _invocations(run_all_id: uuid.UUID) -> QuerySet[TestInvocation]:
    return TestInvocation.objects.filter(run_all_id=run_all_id)


def claimed_run_count(run_all_id: uuid.UUID) -> int:
    """Distinct runs the run-all claimed: what ``max_runs`` bounds. A run given back by the sweep
    and claimed again counts once."""
    return _invocations(run_all_id).values("run_id").distinct().count()


def _end_replayed(run_all: RunAll, actor: Actor) -> None:
    """End the run-all's replayed invocations as its starter, through the agents' end."""
    replayed = _invocations(run_all.pk).filter(status=TestInvocation.Status.REPLAYED)
    for invocation_id, run_id in replayed.values_list("pk", "run_id")[:MAX_CONCURRENCY]:
        try:
            ending.end_invocation(
                actor=actor,
                test_id=run_all.test_id,
                invocation_id=invocation_id,
                run_id=run_id,
                grade=run_all.grade == RunAll.Grading.AI,
            )
        except InvalidTransition:
            # Someone ended it first (an agent, another tick), or it was stopped meanwhile.
            logger.info("Invocation %s was settled meanwhile; not ending it", invocation_id)
        except (NotFound, PermissionDenied) as error:
            logger.warning("Run-all %s cannot end %s: %s", run_all.pk, invocation_id, error)


def _finish(run_all: RunAll, *, test: Test, status: str, reason: str) -> None:
    """Mark it finished or stopped and say so on the socket. The caller holds the locks."""
    now = timezone.now()
    RunAll.objects.filter(pk=run_all.pk).update(
        status=status, finish_reason=reason, finished_at=now, ticked_at=now, updated_at=now
    )
    run_all.status, run_all.finish_reason, run_all.finished_at = status, reason, now
    pending_grades, seq = pending_grades_and_seq(test_id=test.pk)
    publish_on_commit(
        test_id=test.pk,
        event_type="run_all.finished",
        seq=seq,
        run_all_id=str(run_all.pk),
        status=status,
        reason=reason,
        claimed_runs=claimed_run_count(run_all.pk),
        pending_grades=pending_grades,
    )
    logger.info("Run-all %s %s: %s", run_all.pk, status, reason)


def _claim_and_run(*, actor: Actor, run_all: RunAll, room: int) -> tuple[int, str | None]:
    """Claim up to ``room`` runs and request their replays; (how many, why it stopped short)."""
    claimed = 0
    while claimed < room:
        try:
            # A savepoint per claim: a refused claim leaves the earlier ones in place.
            with transaction.atomic():
                claim = claiming.claim_next_run(
                    actor=actor, test_id=run_all.test_id, run_all_id=run_all.pk
                )
                running.request_replay(
                    actor=actor,
                    test_id=run_all.test_id,
                    invocation_id=claim.invocation.pk,
                    run_id=claim.run.pk,
                )
        except InvalidTransition as error:
            return claimed, error.code
        except (NotFound, PermissionDenied):
            return claimed, "starter_not_allowed"
        claimed += 1
    return claimed, None


def tick_run_all(*, run_all_id: uuid.UUID | str) -> RunAll | None:
    """Move a run-all on: end its replayed invocations, claim and run up to its concurrency,
    finish it when nothing is in flight and nothing more can be claimed. Idempotent; a missing
    or finished run-all is left alone. Returns the run-all as the tick left it."""
    run_all = RunAll.objects.select_related("started_by").filter(pk=run_all_id).first()
    if run_all is None:
        logger.warning("Run-all %s does not exist; nothing to tick", run_all_id)
        return None
    if run_all.status != RunAll.Status.ACTIVE:
        return run_all
    starter = run_all.started_by
    actor = Actor(user=starter, client=run_all.client) if starter is not None else None
    if actor is not None:
        _end_replayed(run_all, actor)

    with transaction.atomic():
        test = lock_test(run_all.test_id)
        run_all = RunAll.objects.select_for_update().get(pk=run_all.pk)
        if run_all.status != RunAll.Status.ACTIVE:
            return run_all
        if test.status == Test.Status.STOPPED:
            _finish(run_all, test=test, status=RunAll.Status.STOPPED, reason="test_stopped")
            return run_all
        in_flight = _invocations(run_all.pk).filter(status__in=IN_FLIGHT_STATUSES).count()
        room = run_all.concurrency - in_flight
        reached_max = False
        if run_all.max_runs is not None:
            left = run_all.max_runs - claimed_run_count(run_all.pk)
            reached_max = left <= 0
            room = min(room, left)
        claimed, refusal = 0, None
        if actor is None:
            refusal = "starter_not_allowed"
        elif room > 0:
            claimed, refusal = _claim_and_run(actor=actor, run_all=run_all, room=room)
        if refusal == "starter_not_allowed" or (in_flight == 0 and claimed == 0):
            reason = "max_runs" if reached_max else (refusal or "no_pending_runs")
            if reason == "test_completed":
                test.refresh_from_db(fields=["status"])
                # "No run pending" in a test still running: agents hold the rest.
                reason = "completed" if test.status == Test.Status.COMPLETED else "no_pending_runs"
            _finish(run_all, test=test, status=RunAll.Status.FINISHED, reason=reason)
            return run_all
        now = timezone.now()
        RunAll.objects.filter(pk=run_all.pk).update(ticked_at=now, updated_at=now)
        run_all.ticked_at = now
    return run_all


def tick_after_replay(invocation: TestInvocation | None) -> None:
    """After a replay ended its work (replayed, failed or stopped): tick the run-all that
    claimed it, if one did. ``invocation``: what the replay claimed (None: nothing)."""
    if invocation is not None and invocation.run_all_id is not None:
        tick_run_all(run_all_id=invocation.run_all_id)


def stop_run_alls_of_test(*, test_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """The test was stopped: its active run-all stops, and so do the replays it has in flight
    (cooperatively, at their next turn, as stop does). Runs in the caller's transaction, which
    holds the test lock. Returns the invocations it stopped."""
    stopped: list[uuid.UUID] = []
    for run_all in RunAll.objects.select_for_update().filter(
        test_id=test_id, status=RunAll.Status.ACTIVE
    ):
        open_invocations = list(
            _invocations(run_all.pk)
            .filter(status__in=IN_FLIGHT_STATUSES)
            .values_list("pk", "run_id")
        )
        if open_invocations:
            TestInvocation.objects.filter(
                pk__in=[pk for pk, _ in open_invocations], status__in=IN_FLIGHT_STATUSES
            ).update(
                status=TestInvocation.Status.STOPPED,
                stop_requested=True,
                ended_at=now,
                updated_at=now,
            )
            TestRun.objects.filter(
                pk__in=[run_id for _, run_id in open_invocations],
                status__in=[TestRun.Status.CLAIMED, TestRun.Status.RUNNING],
            ).update(status=TestRun.Status.STOPPED, updated_at=now)
        for invocation_id, run_id in open_invocations:
            publish_on_commit(
                test_id=test_id,
                event_type="run.stopped",
                invocation_id=invocation_id,
                run_id=run_id,
                status=TestInvocation.Status.STOPPED,
            )
            stopped.append(invocation_id)
        test = Test(pk=test_id)
        _finish(run_all, test=test, status=RunAll.Status.STOPPED, reason="test_stopped")
    return stopped


def active_run_all(*, test_id: uuid.UUID | str) -> RunAll | None:
    return RunAll.objects.filter(test_id=test_id, status=RunAll.Status.ACTIVE).first()
