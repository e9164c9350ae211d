"""end: close a replayed invocation, with an agent's grade, an AI grade request, or none."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tests_app import judges, tasks
from tests_app.actors import Actor
from tests_app.background import enqueue_on_commit
from tests_app.errors import ValidationFailed
from tests_app.models import Grade, Test, TestInvocation, TestRun
from tests_app.selectors.scope import get_visible_test, require_operator
from tests_app.services.running import invocation_of_test
from tests_app.services.test_state import (
    complete_grade,
    conditional_status_update,
    count_completed_run,
    lock_test,
    maybe_complete_test,
)


@dataclass(frozen=True)
class EndResult:
    invocation: TestInvocation
    grade: Grade | None


def _validate_grade_request(
    *, grade: bool, score: float | None, passed: bool | None, feedback: str | None
) -> None:
    if grade and (score is not None or passed is not None or feedback is not None):
        raise ValidationFailed(
            "Choose one: grade=true asks the judge to grade, score/passed/feedback give your own.",
            code="invalid",
            fields={"grade": ["Cannot be combined with score, passed or feedback."]},
        )
    if score is not None and not 0 <= score <= 1:
        raise ValidationFailed(
            "The score must be between 0 and 1.",
            code="invalid",
            fields={"score": ["Ensure this value is between 0 and 1."]},
        )
    if score is None and (passed is not None or feedback is not None):
        # A grade without a score cannot count towards pass rates or mean scores.
        raise ValidationFailed(
            "An agent's grade needs a score (0..1); passed and feedback go with it.",
            code="invalid",
            fields={"score": ["Required when passed or feedback is given."]},
        )


def end_invocation(
    *,
    actor: Actor,
    test_id: uuid.UUID,
    invocation_id: uuid.UUID,
    run_id: uuid.UUID,
    grade: bool = False,
    score: float | None = None,
    passed: bool | None = None,
    feedback: str | None = None,
) -> EndResult:
    """End a ``replayed`` invocation: invocation → ended, run → completed.

    With ``score`` (and optionally ``passed``, ``feedback``) the agent's grade is stored as done
    and becomes current (``passed`` omitted: score ≥ the rubric's threshold). With ``grade=True``
    a pending grade is created and the judge grades it in the background after commit. The test
    completes when this was its last unfinished run.
    """
    _validate_grade_request(grade=grade, score=score, passed=passed, feedback=feedback)
    test = get_visible_test(
        user=actor.user, test_id=test_id, queryset=Test.objects.select_related("eval__rubric")
    )
    require_operator(user=actor.user, department_id=test.department_id)
    invocation = invocation_of_test(
        actor=actor, test=test, invocation_id=invocation_id, run_id=run_id
    )

    with transaction.atomic():
        # The test lock first, as every writer of the test's counters does, so locks are always
        # taken in the same order (test, then run) and cannot deadlock.
        locked_test = lock_test(test.pk)
        now = timezone.now()
        conditional_status_update(
            TestInvocation.objects.filter(pk=invocation.pk),
            allowed_from=[TestInvocation.Status.REPLAYED],
            what="invocation",
            status=TestInvocation.Status.ENDED,
            ended_at=now,
            updated_at=now,
        )
        conditional_status_update(
            TestRun.objects.filter(pk=invocation.run_id),
            allowed_from=[TestRun.Status.CLAIMED, TestRun.Status.RUNNING],
            what="run",
            status=TestRun.Status.COMPLETED,
            updated_at=now,
        )
        count_completed_run(test_id=test.pk)
        invocation.status = TestInvocation.Status.ENDED
        invocation.ended_at = now

        new_grade: Grade | None = None
        if score is not None:
            threshold = test.eval.rubric.pass_threshold
            new_grade = Grade.objects.create(
                invocation=invocation,
                source=Grade.Source.AGENT,
                status=Grade.Status.DONE,
                actor=actor.user,
                score=score,
                passed=(score >= threshold) if passed is None else passed,
                feedback=feedback or "",
                provenance={"client": actor.client, "pass_threshold": threshold},
            )
            complete_grade(grade=new_grade)
        elif grade:
            new_grade = Grade.objects.create(
                invocation=invocation,
                source=judges.default_source(),
                status=Grade.Status.PENDING,
                actor=actor.user,
            )
            enqueue_on_commit(tasks.grade_invocation, new_grade.pk)
            # Settled (done or failed) by the grading service, which counts it down.
            Test.objects.filter(pk=test.pk).update(pending_grades=F("pending_grades") + 1)
            locked_test.pending_grades += 1

        Test.objects.filter(pk=test.pk, current_invocation=invocation.pk).update(
            current_invocation=None, updated_at=now
        )
        maybe_complete_test(test=locked_test)
    return EndResult(invocation=invocation, grade=new_grade)
