"""run: hand a created invocation to the replay worker, once (DESIGN §3 "run")."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

from django.db import connection

from tests_app import tasks
from tests_app.actors import Actor
from tests_app.background import enqueue_on_commit
from tests_app.db import hot_cursor
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


@cache
def _mark_sql(*, every_department: bool) -> str:
    """Mark the invocation enqueued when everything the call needs holds, in one statement."""
    invocation_table = connection.ops.quote_name(TestInvocation._meta.db_table)
    test_table = connection.ops.quote_name(Test._meta.db_table)
    departments = "" if every_department else " AND test.department_id = ANY(%(departments)s)"
    return f"""
        UPDATE {invocation_table} AS invocation SET task_id = %(task_id)s
        FROM {test_table} AS test
        WHERE invocation.id = %(invocation_id)s AND invocation.test_id = %(test_id)s
            AND invocation.run_id = %(run_id)s AND invocation.status = %(created)s
            AND invocation.task_id = '' AND test.id = invocation.test_id
            AND NOT test.is_archived AND test.status <> %(stopped)s{departments}
        RETURNING invocation.id
    """  # noqa: S608


def _mark_usual_call(
    *, actor: Actor, test_id: uuid.UUID, invocation_id: uuid.UUID, run_id: uuid.UUID, task_id: str
) -> bool:
    """The usual call (ids that belong together, an operator, a created invocation of a live
    test) as one UPDATE on PostgreSQL instead of a read and an update. False when anything does
    not hold, and then nothing changed: the caller's checks find out what and say so."""
    if connection.vendor != "postgresql":
        return False
    departments = operable_department_ids(actor.user)
    if departments is not None and not departments:
        return False
    parameters: dict[str, Any] = {
        "task_id": task_id,
        "invocation_id": invocation_id,
        "test_id": test_id,
        "run_id": run_id,
        "created": TestInvocation.Status.CREATED.value,
        "stopped": Test.Status.STOPPED.value,
        "departments": departments,
    }
    with hot_cursor() as cursor:
        cursor.execute(_mark_sql(every_department=departments is None), parameters)
        return cursor.fetchone() is not None


def request_replay(
    *, actor: Actor, test_id: uuid.UUID, invocation_id: uuid.UUID, run_id: uuid.UUID
) -> TestInvocation:
    """Mark a ``created`` invocation as enqueued and enqueue its replay after commit.

    Returns at once: the replay runs in the background (Celery, or a thread when embedded). A
    second call for the same invocation is a 409, so a replay is never enqueued twice.
    """
    task_id = str(uuid.uuid4())
    if _mark_usual_call(
        actor=actor, test_id=test_id, invocation_id=invocation_id, run_id=run_id, task_id=task_id
    ):
        marked = TestInvocation(id=invocation_id, test_id=test_id, run_id=run_id, task_id=task_id)
        enqueue_on_commit(tasks.replay_invocation, marked.pk)
        return marked
    # Otherwise (or on SQLite) the checks below find what does not hold and say so. When the ids
    # belong together one query reads the invocation and its test; otherwise the slower path
    # decides which id is wrong (404 test, 404 invocation, 400).
    invocation = TestInvocation.objects.select_related("test").filter(pk=invocation_id).first()
    if invocation is not None and invocation.test_id == test_id:
        test = invocation.test
        if not can_see_department(actor.user, test.department_id):
            raise NotFound("No test with that id is visible to you.")
        require_operator(user=actor.user, department_id=test.department_id)
        _require_run(invocation, run_id)
    else:
        test = get_visible_test(user=actor.user, test_id=test_id)
        require_operator(user=actor.user, department_id=test.department_id)
        invocation = invocation_of_test(
            actor=actor, test=test, invocation_id=invocation_id, run_id=run_id
        )
    if test.is_archived:
        raise InvalidTransition(
            "The test is archived; unarchive it before running replays.", code="test_archived"
        )
    if invocation.status != TestInvocation.Status.CREATED:
        raise InvalidTransition(
            f"The invocation is {invocation.status}; run needs it to be created "
            "(call next for a new invocation).",
            code=f"invocation_{invocation.status}",
        )
    if test.status == Test.Status.STOPPED:
        raise InvalidTransition(
            "The test is stopped; no more replays run in it.", code="test_stopped"
        )
    # task_id "" means "not yet enqueued"; the WHERE clause makes exactly one caller win. One
    # statement needs no transaction of its own: once it has committed, the task is sent.
    updated = TestInvocation.objects.filter(
        pk=invocation.pk, status=TestInvocation.Status.CREATED, task_id=""
    ).update(task_id=task_id)
    if updated != 1:
        current = (
            TestInvocation.objects.filter(pk=invocation.pk).values_list("status", flat=True).get()
        )
        if current != TestInvocation.Status.CREATED:
            raise InvalidTransition(
                f"The invocation is {current}; run needs it to be created.",
                code=f"invocation_{current}",
            )
        raise InvalidTransition(
            "The replay of this invocation was already requested; follow its progress "
            "with get or the websocket.",
            code="already_enqueued",
        )
    invocation.task_id = task_id
    enqueue_on_commit(tasks.replay_invocation, invocation.pk)
    return invocation
