"""Targets that the system itself needs: the offline reference target of a department."""

from __future__ import annotations

from tests_app.models import Department, Target

REFERENCE_TARGET_NAME = "Reference (recorded answers)"


def reference_target(*, department: Department) -> Target:
    """The department's offline reference target (the one named REFERENCE_TARGET_NAME), created
    when it is missing; an operator's later edits of it are kept."""
    target, _ = Target.objects.get_or_create(
        department=department,
        name=REFERENCE_TARGET_NAME,
        defaults={"kind": Target.Kind.REFERENCE},
    )
    return target
