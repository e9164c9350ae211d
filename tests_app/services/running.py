"""run: hand a created invocation to the replay worker, once (DESIGN §3 "run")."""

from __future__ import annotations

import uuid

from django.db import connection
from django.utils import timezone

from tests_app import tasks
from tests_app.actors import Actor
from tests_app.background import enqueue_on_commit
from tests_app.errors import InvalidTransition, NotFound, ValidationFailed
from tests_app.models import Test, TestInvocation
from tests_app.selectors.scope import (
    can_see_department,
    get_visible_test,
    operable_department_ids,
    require_operator,
    visible_tests,
)


def invocation_of_test(
    *, actor: Actor, test: Test, invocation_id: uuid.UUID, run_id: uuid.UUID
) -> TestInvocation:
    """The invocation ``invocation_id`` of ``test`` on run ``run_id``.

    Ids that exist but do not belong together are a 400 ("mismatch"); an invocation that the
    caller cannot see at all is a 404, so ids of other departments do not leak.
    """
    invocation = TestInvocation.objects.filter(pk=invocation_id).first()
    if invocation is None or not visible_tests(actor.user).filter(pk=invocation.test_id).exists():
        raise NotFound("No invocation with that id is visible to you.")
    if invocation.test_id != test.pk:
        raise ValidationFailed(
            "The invocation does not belong to that test.",
            code="mismatch",
            fields={"test_invocation_id": ["Not an invocation of this test."]},
        )
    _require_run(invocation, run_id)
    return invocation


def _require_run(invocation: TestInvocation, run_id: uuid.UUID) -> None:
    if invocation.run_id != run_id:
        raise ValidationFailed(
            "The invocation does not belong to that run.",
            code="mismatch",
            fields={"run_id": ["Not the run of this invocation."]},
        )


def _mark_statement(departments: int | None) -> str:
    """Mark the invocation enqueued when everything run needs holds, in one statement: the ids
    belong together, it is created and not yet enqueued, its test is live and (for ``departments``
    ids, None for staff) the caller operates its department. The same SQL on PostgreSQL and
    SQLite.

    Raw because a run call's CPU is mostly this write through the ORM, and the run calls gate how
    fast replays start (bench/README.md: replay and concurrency)."""
    quote = connection.ops.quote_name
    invocation_table = quote(TestInvocation._meta.db_table)
    in_department = (
        ""
        if departments is None
        else f" AND test.department_id IN ({', '.join(['%s'] * departments)})"
    )
    return f"""
        UPDATE {invocation_table} SET task_id = %s, enqueued_at = %s
        WHERE id = %s AND test_id = %s AND run_id = %s AND status = %s AND task_id = ''
            AND EXISTS (
                SELECT 1 FROM {quote(Test._meta.db_table)} AS test
                WHERE test.id = {invocation_table}.test_id AND NOT test.is_archived
                    AND test.status <> %s{in_department}
            )
    """  # noqa: S608


def request_replay(
    *, actor: Actor, test_id: uuid.UUID, invocation_id: uuid.UUID, run_id: uuid.UUID
) -> TestInvocation:
    """Mark a ``created`` invocation as enqueued and enqueue its replay after commit.

    Returns at once: the replay runs in the background (Celery, or a thread when embedded). A
    second call for the same invocation is a 409, so a replay is never enqueued twice: the mark is
    one conditional UPDATE (task_id "" means not yet enqueued), and when it matches nothing the
    reads of :func:`_refusal` say why.
    """
    task_id = str(uuid.uuid4())
    operable = operable_department_ids(actor.user)
    if operable == []:
        raise _refusal(actor=actor, test_id=test_id, invocation_id=invocation_id, run_id=run_id)
    uuid_field = TestInvocation._meta.pk
    ids = [
        uuid_field.get_db_prep_value(value, connection)
        for value in (invocation_id, test_id, run_id, *(operable or []))
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            _mark_statement(None if operable is None else len(operable)),
            [
                task_id,
                timezone.now(),
                *ids[:3],
                TestInvocation.Status.CREATED.value,
                Test.Status.STOPPED.value,
                *ids[3:],
            ],
        )
        marked = cursor.rowcount == 1
    if not marked:
        raise _refusal(actor=actor, test_id=test_id, invocation_id=invocation_id, run_id=run_id)
    invocation = TestInvocation(id=invocation_id, test_id=test_id, run_id=run_id, task_id=task_id)
    enqueue_on_commit(tasks.replay_invocation, invocation.pk)
    return invocation


def _refusal(
    *, actor: Actor, test_id: uuid.UUID, invocation_id: uuid.UUID, run_id: uuid.UUID
) -> Exception:
    """Why run could not mark the invocation: the error to raise, read from the rows."""
    # When the ids belong together one query reads the invocation and its test; otherwise the
    # slower path decides which id is wrong (404 test, 404 invocation, 400).
    invocation = TestInvocation.objects.select_related("test").filter(pk=invocation_id).first()
    if invocation is not None and invocation.test_id == test_id:
        test = invocation.test
        if not can_see_department(actor.user, test.department_id):
            return NotFound("No test with that id is visible to you.")
        require_operator(user=actor.user, department_id=test.department_id)
        _require_run(invocation, run_id)
    else:
        test = get_visible_test(user=actor.user, test_id=test_id)
        require_operator(user=actor.user, department_id=test.department_id)
        invocation = invocation_of_test(
            actor=actor, test=test, invocation_id=invocation_id, run_id=run_id
        )
    if test.is_archived:
        return InvalidTransition(
            "The test is archived; unarchive it before running replays.", code="test_archived"
        )
    if invocation.status != TestInvocation.Status.CREATED:
        return InvalidTransition(
            f"The invocation is {invocation.status}; run needs it to be created "
            "(call next for a new invocation).",
            code=f"invocation_{invocation.status}",
        )
    if test.status == Test.Status.STOPPED:
        return InvalidTransition(
            "The test is stopped; no more replays run in it.", code="test_stopped"
        )
    if invocation.task_id:
        return InvalidTransition(
            "The replay of this invocation was already requested; follow its progress "
            "with get or the websocket.",
            code="already_enqueued",
        )
    # Something changed between the mark and these reads (a test unarchived, a membership given).
    return InvalidTransition(
        "The invocation changed while run was marking it; call run again.", code="conflict"
    )
