"""run: hand a created invocation to the replay worker, once (DESIGN §3 "run")."""

from __future__ import annotations

import uuid

from django.db.models import Exists, OuterRef
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


def request_replay(
    *, actor: Actor, test_id: uuid.UUID, invocation_id: uuid.UUID, run_id: uuid.UUID
) -> TestInvocation:
    """Mark a ``created`` invocation as enqueued and enqueue its replay after commit.

    Returns at once: the replay runs in the background (Celery, or a thread when embedded). A
    second call for the same invocation is a 409, so a replay is never enqueued twice.
    """
    task_id = str(uuid.uuid4())
    # The usual call (ids that belong together, an operator, a created invocation of a live
    # test) is one conditional UPDATE; when it matches nothing, the reads below say why.
    live_test = Test.objects.filter(pk=OuterRef("test_id"), is_archived=False).exclude(
        status=Test.Status.STOPPED
    )
    operable = operable_department_ids(actor.user)
    if operable is not None:
        live_test = live_test.filter(department_id__in=operable)
    usual = TestInvocation.objects.filter(
        Exists(live_test),
        pk=invocation_id,
        test_id=test_id,
        run_id=run_id,
        status=TestInvocation.Status.CREATED,
        task_id="",
    )
    if usual.update(task_id=task_id, enqueued_at=timezone.now()) == 1:
        marked = TestInvocation(id=invocation_id, test_id=test_id, run_id=run_id, task_id=task_id)
        enqueue_on_commit(tasks.replay_invocation, marked.pk)
        return marked
    # When the ids belong together one query reads the invocation and its test; otherwise the
    # slower path decides which id is wrong (404 test, 404 invocation, 400).
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
    ).update(task_id=task_id, enqueued_at=timezone.now())
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
