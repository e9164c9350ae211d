"""Constraints keep the data whole (on PostgreSQL); scope decides who sees and operates what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from tests import factories
from tests.conftest import require_service
from tests_app.errors import NotFound, PermissionDenied
from tests_app.models import Benchmark, Grade, Membership, Rubric, TestRun
from tests_app.selectors import scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def postgres(db: Any) -> None:
    if connection.vendor != "postgresql":
        require_service("constraint tests need PostgreSQL (set DATABASE_URL)")


def violates(write: Callable[[], Any]) -> None:
    # atomic() so the failed statement rolls back to a savepoint and the test can go on.
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


# --- constraints ------------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
class TestConstraints:
    def test_entry_position_is_unique_per_benchmark(self, benchmark: Benchmark) -> None:
        violates(lambda: factories.BenchmarkEntryFactory.create(benchmark=benchmark, position=1))
        other = factories.BenchmarkFactory.create()
        factories.BenchmarkEntryFactory.create(benchmark=other, position=1)  # fine elsewhere
        assert benchmark.entries.filter(position=1).count() == 1

    def test_run_ordinal_is_unique_per_test_and_cycle(self) -> None:
        run = factories.TestRunFactory.create(cycle=1, ordinal=1)
        violates(
            lambda: factories.TestRunFactory.create(
                test=run.test, entry=run.entry, cycle=1, ordinal=1
            )
        )
        # The same ordinal in the next cycle, or in another test, is allowed.
        factories.TestRunFactory.create(test=run.test, entry=run.entry, cycle=2, ordinal=1)
        factories.TestRunFactory.create(cycle=1, ordinal=1)
        assert TestRun.objects.filter(test=run.test, ordinal=1).count() == 2

    def test_membership_is_unique_per_user_and_department(
        self, operator: Any, research: Any
    ) -> None:
        violates(
            lambda: Membership.objects.create(
                user=operator, department=research, role=Membership.Role.VIEWER
            )
        )
        assert Membership.objects.get(user=operator, department=research).role == "operator"

    def test_membership_role_is_viewer_or_operator(self, research: Any) -> None:
        user = factories.UserFactory.create()
        violates(lambda: Membership.objects.create(user=user, department=research, role="owner"))

    @pytest.mark.parametrize("score", [-0.01, 1.01])
    def test_grade_score_is_between_0_and_1(self, score: float) -> None:
        grade = factories.GradeFactory.create(score=0.5)
        violates(lambda: factories.GradeFactory.create(invocation=grade.invocation, score=score))
        violates(lambda: Grade.objects.filter(pk=grade.pk).update(score=score))
        grade.refresh_from_db()
        assert grade.score == 0.5

    @pytest.mark.parametrize("score", [0.0, 1.0, None])
    def test_grade_score_bounds_and_null_are_allowed(self, score: float | None) -> None:
        grade = factories.GradeFactory.create(score=score)
        grade.refresh_from_db()
        assert grade.score == score

    @pytest.mark.parametrize("score", [-0.5, 1.5])
    def test_run_score_is_between_0_and_1(self, score: float) -> None:
        run = factories.TestRunFactory.create()
        violates(lambda: TestRun.objects.filter(pk=run.pk).update(score=score))
        TestRun.objects.filter(pk=run.pk).update(score=1.0)
        run.refresh_from_db()
        assert run.score == 1.0

    @pytest.mark.parametrize("threshold", [-0.1, 1.1])
    def test_rubric_threshold_is_between_0_and_1(self, threshold: float) -> None:
        violates(lambda: factories.RubricFactory.create(pass_threshold=threshold))
        assert not Rubric.objects.filter(pass_threshold=threshold).exists()

    def test_runs_per_entry_is_at_least_one(self, benchmark: Benchmark) -> None:
        violates(lambda: Benchmark.objects.filter(pk=benchmark.pk).update(runs_per_entry=0))
        violates(lambda: factories.BenchmarkFactory.create(runs_per_entry=0))
        benchmark.refresh_from_db()
        assert benchmark.runs_per_entry == 1


# --- scope --------------------------------------------------------------------------------------


@pytest.fixture
def two_tests(research: Any, support: Any) -> tuple[Any, Any]:
    research_test = factories.TestFactory.create(
        benchmark=factories.make_benchmark(department=research, entries=1)
    )
    support_test = factories.TestFactory.create(
        benchmark=factories.make_benchmark(department=support, entries=1)
    )
    return research_test, support_test


def test_staff_sees_everything(staff: Any, two_tests: tuple[Any, Any]) -> None:
    assert set(scope.visible_tests(staff)) == set(two_tests)
    assert scope.visible_department_ids(staff) is None
    assert scope.can_operate_department(staff, two_tests[1].department_id)
    assert scope.visible_benchmarks(staff).count() == 2
    assert scope.visible_evals(staff).count() == 2


def test_member_sees_only_own_department(
    operator: Any, viewer: Any, two_tests: tuple[Any, Any]
) -> None:
    research_test, support_test = two_tests
    for user in (operator, viewer):
        assert list(scope.visible_tests(user)) == [research_test]
        assert list(scope.visible_benchmarks(user)) == [research_test.benchmark]
        assert list(scope.visible_evals(user)) == [research_test.eval]
        assert [d.name for d in scope.visible_departments(user)] == ["Research"]
        assert scope.get_visible_test(user=user, test_id=research_test.pk) == research_test
        with pytest.raises(NotFound):
            scope.get_visible_test(user=user, test_id=support_test.pk)


def test_outsider_sees_nothing_of_research(outsider: Any, two_tests: tuple[Any, Any]) -> None:
    research_test, support_test = two_tests
    assert list(scope.visible_tests(outsider)) == [support_test]
    assert not scope.can_see_department(outsider, research_test.department_id)
    assert not scope.can_operate_department(outsider, research_test.department_id)
    with pytest.raises(NotFound, match="No test with that id is visible to you"):
        scope.get_visible_test(user=outsider, test_id=research_test.pk)


def test_user_without_memberships_sees_none(two_tests: tuple[Any, Any]) -> None:
    nobody = factories.UserFactory.create(username="nobody")
    assert scope.visible_tests(nobody).count() == 0
    assert scope.visible_benchmarks(nobody).count() == 0
    assert not scope.is_operator_anywhere(nobody)


def test_viewer_may_see_but_not_operate(
    operator: Any, viewer: Any, two_tests: tuple[Any, Any]
) -> None:
    research_id = two_tests[0].department_id
    assert scope.can_see_department(viewer, research_id)
    assert not scope.can_operate_department(viewer, research_id)
    assert scope.operable_department_ids(viewer) == []
    assert not scope.is_operator_anywhere(viewer)
    with pytest.raises(PermissionDenied, match="operators only"):
        scope.require_operator(user=viewer, department_id=research_id)

    assert scope.can_operate_department(operator, research_id)
    assert scope.operable_department_ids(operator) == [research_id]
    assert scope.is_operator_anywhere(operator)
    scope.require_operator(user=operator, department_id=research_id)  # does not raise
