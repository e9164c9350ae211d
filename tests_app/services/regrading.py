"""A human regrade: an operator overrides the current grade of an ended invocation.

The new grade is stored next to the earlier ones (source ``human``, with the actor and the reason),
so the history of who graded what stays readable; the newest ``done`` grade is the current one.
"""

from __future__ import annotations

import uuid

from django.db import transaction

from tests_app.actors import Actor
from tests_app.errors import InvalidTransition, ValidationFailed
from tests_app.models import Grade, TestInvocation
from tests_app.selectors.scope import get_visible_test, require_operator
from tests_app.services.test_state import complete_grade

# Only an ended invocation has a settled transcript and grade worth overriding.
REGRADABLE_STATUSES = (TestInvocation.Status.ENDED,)


def regrade_invocation(
    *,
    actor: Actor,
    invocation_id: uuid.UUID | str,
    score: float,
    passed: bool,
    feedback: str,
    reason: str,
) -> Grade:
    """Store a human grade for ``invocation_id`` and make it current. Operators only."""
    errors: dict[str, list[str]] = {}
    if not 0 <= score <= 1:
        errors["score"] = ["The score must be between 0 and 1."]
    if not reason.strip():
        errors["reason"] = ["Say why you override the earlier grade."]
    if errors:
        raise ValidationFailed("The regrade is not valid.", fields=errors)

    invocation = TestInvocation.objects.filter(pk=invocation_id).first()
    if invocation is None:
        raise ValidationFailed("No such invocation.", fields={"invocation_id": ["Unknown id."]})
    test = get_visible_test(user=actor.user, test_id=invocation.test_id)
    require_operator(user=actor.user, department_id=test.department_id)

    with transaction.atomic():
        invocation = TestInvocation.objects.select_for_update().get(pk=invocation.pk)
        if invocation.status not in REGRADABLE_STATUSES:
            raise InvalidTransition(
                f"The invocation is {invocation.status}; only an ended invocation can be regraded.",
                code=f"invocation_{invocation.status}",
            )
        previous = (
            Grade.objects.filter(invocation=invocation, status=Grade.Status.DONE)
            .order_by("-created_at")
            .first()
        )
        grade = Grade.objects.create(
            invocation=invocation,
            source=Grade.Source.HUMAN,
            status=Grade.Status.DONE,
            score=score,
            passed=passed,
            feedback=feedback.strip(),
            reason=reason.strip(),
            actor=actor.user,
            provenance={
                "grader": "human",
                "actor": actor.display_name,
                "client": actor.client,
                "overrides_grade_id": str(previous.pk) if previous else None,
                "overrides_source": previous.source if previous else None,
            },
        )
        complete_grade(grade=grade)
    return grade
