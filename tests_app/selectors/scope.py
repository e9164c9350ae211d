"""The one place that decides what a user may see and operate (DESIGN §3 "Auth, scope").

A caller sees the tests, benchmarks and evals of the departments they belong to; staff see all.
Viewers may read; operators may also change. Something outside a caller's departments is reported
as not found, so that ids do not leak.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from tests_app.errors import NotFound, PermissionDenied
from tests_app.models import Benchmark, Department, Eval, Membership, Target, Test


def remember_memberships(user: Any, memberships: dict[uuid.UUID, str]) -> None:
    """Hand the user object memberships already read (API key authentication caches them)."""
    user._replaybench_memberships = memberships


def _membership_cache(user: Any) -> dict[uuid.UUID, str]:
    # Cached on the user object: one query per request, however many checks the request makes.
    cached = getattr(user, "_replaybench_memberships", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("department_id", "role"))
        user._replaybench_memberships = cached
    return cached


def visible_department_ids(user: Any) -> list[uuid.UUID] | None:
    """The departments the user may see, or None for all (staff)."""
    if user.is_staff:
        return None
    return list(_membership_cache(user))


def operable_department_ids(user: Any) -> list[uuid.UUID] | None:
    if user.is_staff:
        return None
    return [
        dept for dept, role in _membership_cache(user).items() if role == Membership.Role.OPERATOR
    ]


def can_operate_department(user: Any, department_id: uuid.UUID) -> bool:
    if user.is_staff:
        return True
    return _membership_cache(user).get(department_id) == Membership.Role.OPERATOR


def can_see_department(user: Any, department_id: uuid.UUID) -> bool:
    return bool(user.is_staff) or department_id in _membership_cache(user)


def is_operator_anywhere(user: Any) -> bool:
    return bool(user.is_staff) or Membership.Role.OPERATOR in _membership_cache(user).values()


def visible_departments(user: Any) -> QuerySet[Department]:
    ids = visible_department_ids(user)
    queryset = Department.objects.all()
    return queryset if ids is None else queryset.filter(id__in=ids)


def visible_evals(user: Any) -> QuerySet[Eval]:
    ids = visible_department_ids(user)
    queryset = Eval.objects.all()
    return queryset if ids is None else queryset.filter(department_id__in=ids)


def visible_benchmarks(user: Any) -> QuerySet[Benchmark]:
    ids = visible_department_ids(user)
    queryset = Benchmark.objects.all()
    return queryset if ids is None else queryset.filter(eval__department_id__in=ids)


def visible_targets(user: Any) -> QuerySet[Target]:
    ids = visible_department_ids(user)
    queryset = Target.objects.all()
    return queryset if ids is None else queryset.filter(department_id__in=ids)


def visible_tests(user: Any) -> QuerySet[Test]:
    ids = visible_department_ids(user)
    queryset = Test.objects.all()
    return queryset if ids is None else queryset.filter(department_id__in=ids)


def get_visible_test(
    *, user: Any, test_id: uuid.UUID | str, queryset: QuerySet[Test] | None = None
) -> Test:
    base = queryset if queryset is not None else Test.objects.all()
    test = base.filter(pk=test_id).first()
    if test is None or not can_see_department(user, test.department_id):
        raise NotFound("No test with that id is visible to you.")
    return test


def require_operator(*, user: Any, department_id: uuid.UUID, what: str = "this test") -> None:
    """Raise 403 for a caller who may see but not operate (a viewer)."""
    if not can_operate_department(user, department_id):
        raise PermissionDenied(f"You may view {what} but not operate it: operators only.")
