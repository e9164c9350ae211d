"""next: claim the pending run with the lowest ordinal and open an invocation on it.

Concurrency. Many agents call next on one test at once, and every claim also writes the test row
(``current_invocation``, and pending → running on the first claim), so that row is the hot spot:
whatever a claimer does while holding its lock, every other claimer waits for. On PostgreSQL the
whole claim is therefore one statement (:func:`_claim_statement`): pick the run with
``FOR UPDATE SKIP LOCKED`` (concurrent callers pick different rows instead of queueing on one),
write the test row, mark the run, insert the invocation. Outside an explicit transaction it
commits on its own, so the test row is locked only while the server finishes that statement and
its commit, never while Python runs between round trips.

The test row is written only when a run was picked, and the run and invocation only when that
write matched an open test (running or pending, not archived): a stop or archive that commits
first makes the statement change nothing, and the claim is refused. On SQLite the IMMEDIATE
transaction holds the database write lock for the whole block, which serializes claims; there the
same steps run as ORM statements.

A cycle's run count is its highest ordinal (ordinals are 1..n within a cycle, see
``build_cycle_runs``): one probe of the (test, cycle, ordinal) index instead of a COUNT(*).
"""

from __future__ import annotations

import enum
import functools
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Field, Max, QuerySet
from django.utils import timezone

from tests_app.actors import Actor
from tests_app.errors import InvalidTransition
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.selectors.scope import (
    get_visible_test,
    operable_department_ids,
    require_operator,
)
from tests_app.services.starting import build_cycle_runs
from tests_app.services.test_state import lock_test


@dataclass(frozen=True)
class Claim:
    invocation: TestInvocation
    run: TestRun
    total_runs: int  # runs in the claimed run's cycle


class _Miss(enum.Enum):
    NO_FREE_RUN = "no_free_run"  # no pending run that another claimer is not taking right now
    TEST_CLOSED = "test_closed"  # a run was free, but the test was stopped or archived meanwhile


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


def _new_invocation(
    *, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None
) -> TestInvocation:
    now = timezone.now()
    return TestInvocation(
        id=uuid.uuid4(),
        test_id=test_id,
        client=actor.client,
        actor=actor.user,
        run_all_id=run_all_id,
        created_at=now,
        updated_at=now,
    )


def _stored(instance: Any) -> Any:
    """Mark an instance built in Python as one that exists in the database."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


# --- PostgreSQL: one statement ---------------------------------------------------------------


@functools.cache
def _claim_sql() -> tuple[str, tuple[Field[Any, Any], ...]]:
    """The claim statement and the invocation columns it inserts (besides the run's id).

    Built from the models once per process, so a column added to TestInvocation is inserted too.
    Every data-modifying step depends on the one before through the rows it returns: picked →
    opened (the test row) → claimed (the run) → inserted (the invocation).
    """
    run_table = TestRun._meta.db_table
    test_table = Test._meta.db_table
    invocation_table = TestInvocation._meta.db_table
    fields = tuple(
        field for field in TestInvocation._meta.concrete_fields if field.attname != "run_id"
    )
    column_list = ", ".join(f'"{field.column}"' for field in fields)
    placeholders = ", ".join(f"%(value_{index})s" for index in range(len(fields)))
    # Only table and column names from the models are formatted in; every value is a parameter.
    sql = f"""
        WITH picked AS MATERIALIZED (
            SELECT id, cycle, ordinal, entry_id, attempts FROM {run_table}
            WHERE test_id = %(test_id)s AND status = %(run_pending)s
                AND EXISTS (
                    SELECT 1 FROM {test_table}
                    WHERE id = %(test_id)s
                        AND status IN (%(test_pending)s, %(test_running)s)
                        AND NOT is_archived
                        AND (%(any_department)s OR department_id = ANY(%(department_ids)s::uuid[]))
                )
            ORDER BY cycle, ordinal LIMIT 1
            FOR UPDATE SKIP LOCKED
        ), opened AS (
            UPDATE {test_table} SET
                current_invocation_id = %(invocation_id)s,
                status = CASE WHEN status = %(test_pending)s THEN %(test_running)s ELSE status END,
                started_at = CASE WHEN status = %(test_pending)s THEN %(now)s ELSE started_at END,
                updated_at = %(now)s
            WHERE id = %(test_id)s
                AND status IN (%(test_pending)s, %(test_running)s)
                AND NOT is_archived
                AND EXISTS (SELECT 1 FROM picked)
            RETURNING id
        ), claimed AS (
            UPDATE {run_table} AS run SET
                status = %(run_claimed)s,
                attempts = run.attempts + 1,
                latest_invocation_id = %(invocation_id)s,
                updated_at = %(now)s
            FROM picked
            WHERE run.id = picked.id AND EXISTS (SELECT 1 FROM opened)
            RETURNING run.id
        ), inserted AS (
            INSERT INTO {invocation_table} ({column_list}, "run_id")
            SELECT {placeholders}, claimed.id FROM claimed
            RETURNING id
        )
        SELECT picked.id, picked.cycle, picked.ordinal, picked.entry_id, picked.attempts,
            (SELECT max(ordinal) FROM {run_table}
                WHERE test_id = %(test_id)s AND cycle = picked.cycle),
            (SELECT count(*) FROM inserted)
        FROM picked
    """  # noqa: S608
    return sql, fields


def _claim_statement(
    *, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None = None
) -> Claim | _Miss:
    """Claim in one statement, which also checks that the caller may operate the test and that
    it is open: NO_FREE_RUN covers those cases too, which the caller then tells apart."""
    sql, fields = _claim_sql()
    operable = operable_department_ids(actor.user)  # None: every department (staff)
    invocation = _new_invocation(actor=actor, test_id=test_id, run_all_id=run_all_id)
    parameters = {
        **{
            f"value_{index}": field.get_db_prep_save(getattr(invocation, field.attname), connection)
            for index, field in enumerate(fields)
        },
        "test_id": test_id,
        "any_department": operable is None,
        "department_ids": operable or [],
        "invocation_id": invocation.pk,
        "now": invocation.created_at,
        "run_pending": TestRun.Status.PENDING.value,
        "run_claimed": TestRun.Status.CLAIMED.value,
        "test_pending": Test.Status.PENDING.value,
        "test_running": Test.Status.RUNNING.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        row = cursor.fetchone()
    if row is None:
        return _Miss.NO_FREE_RUN
    run_id, cycle, ordinal, entry_id, attempts, total_runs, inserted = row
    if inserted != 1:
        return _Miss.TEST_CLOSED
    run = TestRun.from_db(
        connection.alias,
        ["id", "test_id", "entry_id", "cycle", "ordinal", "status", "attempts"],
        [run_id, test_id, entry_id, cycle, ordinal, TestRun.Status.CLAIMED, attempts + 1],
    )
    run.latest_invocation = invocation
    invocation.run = run
    return Claim(invocation=_stored(invocation), run=run, total_runs=int(total_runs))


# --- other databases (SQLite): the same steps as ORM statements ------------------------------


def _claim_orm(*, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None) -> Claim | _Miss:
    with transaction.atomic():
        run = _pending_runs(test_id).first()
        if run is None:
            return _Miss.NO_FREE_RUN
        invocation = _new_invocation(actor=actor, test_id=test_id, run_all_id=run_all_id)
        now = invocation.created_at
        opened = Test.objects.filter(
            pk=test_id, status__in=[Test.Status.PENDING, Test.Status.RUNNING], is_archived=False
        )
        # The first claim starts the test; the status condition makes that happen once.
        opened.filter(status=Test.Status.PENDING).update(
            status=Test.Status.RUNNING, started_at=now, updated_at=now
        )
        if opened.update(current_invocation_id=invocation.pk, updated_at=now) != 1:
            transaction.set_rollback(True)
            return _Miss.TEST_CLOSED
        # The write lock of the IMMEDIATE transaction is held: nobody took the run meanwhile.
        TestRun.objects.filter(pk=run.pk).update(
            status=TestRun.Status.CLAIMED,
            attempts=F("attempts") + 1,
            latest_invocation_id=invocation.pk,
            updated_at=now,
        )
        invocation.run = run
        invocation.save(force_insert=True)
        total_runs = TestRun.objects.filter(test_id=test_id, cycle=run.cycle).aggregate(
            last=Max("ordinal")
        )["last"]
    run.status = TestRun.Status.CLAIMED
    run.attempts += 1
    run.latest_invocation = invocation
    return Claim(invocation=invocation, run=run, total_runs=int(total_runs))


def _claim(*, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None) -> Claim | _Miss:
    if connection.vendor == "postgresql":
        return _claim_statement(actor=actor, test_id=test_id, run_all_id=run_all_id)
    return _claim_orm(actor=actor, test_id=test_id, run_all_id=run_all_id)


def _claim_in_new_cycle(
    *, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None
) -> Claim | _Miss:
    """Infinite mode: add the next cycle of runs unless a free pending run exists, and claim.

    The test row lock serializes cycle creation (one new cycle, not one per caller). Runs that
    other claimers hold locks on are not free (they are being claimed), so they are skipped here
    too; a free one found stays locked by us. Either that run or the new ones (invisible to others
    until we commit) are ours to claim in the same transaction.
    """
    with transaction.atomic():
        test = lock_test(test_id)
        if _pending_runs(test_id).values_list("pk", flat=True).first() is None:
            runs = build_cycle_runs(test=test, benchmark=test.benchmark, cycle=test.cycle + 1)
            Test.objects.filter(pk=test_id).update(
                cycle=F("cycle") + 1,
                total_runs=F("total_runs") + len(runs),
                updated_at=timezone.now(),
            )
        return _claim(actor=actor, test_id=test_id, run_all_id=run_all_id)


def claim_next_run(
    *, actor: Actor, test_id: uuid.UUID, run_all_id: uuid.UUID | None = None
) -> Claim:
    """Claim the next pending run of a test for ``actor`` and create its invocation (created).

    ``run_all_id``: the run-all claiming on the actor's behalf, recorded on the invocation.
    The first claim moves the test pending → running. Raises NotFound, PermissionDenied, and
    InvalidTransition (409) for an archived, stopped or completed test, or when no run is pending
    in a test that is not in infinite mode.
    """
    if connection.vendor == "postgresql":
        # The common case in one statement: it claims only for a caller who may operate an open
        # test. Anything else (an error to explain, a new cycle to add) takes the path below.
        outcome = _claim_statement(actor=actor, test_id=test_id, run_all_id=run_all_id)
        if isinstance(outcome, Claim):
            return outcome

    test = get_visible_test(user=actor.user, test_id=test_id)
    require_operator(user=actor.user, department_id=test.department_id)
    _refuse_unless_claimable(test)

    outcome = _claim(actor=actor, test_id=test.pk, run_all_id=run_all_id)
    if outcome is _Miss.NO_FREE_RUN and test.infinite_mode:
        outcome = _claim_in_new_cycle(actor=actor, test_id=test.pk, run_all_id=run_all_id)
    if outcome is _Miss.TEST_CLOSED:
        # A stop or archive committed after our first check; say which.
        _refuse_unless_claimable(Test.objects.get(pk=test.pk))
        raise InvalidTransition("The test can no longer be claimed.", code="test_closed")
    if outcome is _Miss.NO_FREE_RUN:
        in_flight = TestRun.objects.filter(
            test_id=test.pk, status__in=[TestRun.Status.CLAIMED, TestRun.Status.RUNNING]
        ).count()
        if in_flight:
            raise InvalidTransition(
                f"No run is pending: {in_flight} run{'s are' if in_flight > 1 else ' is'} still "
                "claimed or running, and the test completes when they end (a run whose worker "
                "is lost comes back to pending, so call next again later).",
                code="test_completed",
            )
        raise InvalidTransition(
            "The test is completed for claiming: every run has finished.", code="test_completed"
        )
    return outcome
