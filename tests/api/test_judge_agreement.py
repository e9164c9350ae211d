"""POST /api/v5/artifacts/judge/agreement"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import assert_error
from tests_app.models import Grade, Test, TestInvocation

pytestmark = pytest.mark.django_db

URL = "/api/v5/artifacts/judge/agreement"

# (AI score, AI passed, human score, human passed): kappa 1/3, score MAE 0.125, rho 0.8286.
PAIRS = [
    (0.9, True, 0.8, True),
    (0.8, True, 0.9, True),
    (0.3, False, 0.2, False),
    (0.6, False, 0.75, True),
    (0.2, False, 0.4, False),
    (0.7, True, 0.6, False),
]


def agreement(client: Any, body: Any = None) -> Any:
    return client.post(URL, body if body is not None else {}, format="json")


def graded_test(department: Any, rubric: Any) -> Test:
    evaluation = factories.EvalFactory.create(department=department, rubric=rubric)
    benchmark = factories.make_benchmark(department=department, entries=1, eval=evaluation)
    return factories.TestFactory.create(benchmark=benchmark)


def invocation_of(test: Test) -> TestInvocation:
    run = factories.TestRunFactory.create(test=test, entry=test.benchmark.entries.get())
    return factories.TestInvocationFactory.create(run=run, test=test, status="ended")


def grade(invocation: Any, source: str, score: float, passed: bool, **extra: Any) -> Grade:
    return factories.GradeFactory.create(
        invocation=invocation, source=source, score=score, passed=passed, **extra
    )


def pair(test: Test, ai: tuple[float, bool], human: tuple[float, bool], judge: str) -> Any:
    invocation = invocation_of(test)
    grade(invocation, "ai", *ai, provenance={"model": judge, "is_ai": True})
    grade(invocation, "human", *human, reason="The judge missed the refund amount.")
    return invocation


@pytest.fixture
def world(research: Any, support: Any) -> dict[str, Any]:
    support_rubric = factories.RubricFactory.create(name="Support quality")
    test = graded_test(research, support_rubric)
    for ai_score, ai_passed, human_score, human_passed in PAIRS:
        pair(test, (ai_score, ai_passed), (human_score, human_passed), "judge-a")
    pair(test, (0.9, True), (0.1, False), "judge-b")
    # Only an AI grade, or only a human one: no pair.
    grade(invocation_of(test), "ai", 0.5, False, provenance={"model": "judge-a"})
    grade(invocation_of(test), "human", 0.5, False)
    hidden = graded_test(support, factories.RubricFactory.create(name="Hidden rubric"))
    pair(hidden, (1.0, True), (0.0, False), "judge-a")
    return {"rubric": support_rubric, "hidden": hidden}


def test_it_works(client_for: Any, viewer: Any, world: dict[str, Any]) -> None:
    response = agreement(client_for(viewer))

    assert response.status_code == 200, response.content
    rubric_id = str(world["rubric"].pk)
    assert response.json() == {
        "items": [
            {
                "rubric_id": rubric_id,
                "rubric_name": "Support quality",
                "judge_model": "judge-a",
                "pairs": 6,
                "kappa": 0.3333,
                "score_mae": 0.125,
                "spearman": 0.8286,
                "reason": None,
            },
            {
                "rubric_id": rubric_id,
                "rubric_name": "Support quality",
                "judge_model": "judge-b",
                "pairs": 1,
                "kappa": None,
                "score_mae": None,
                "spearman": None,
                "reason": "1 pair: at least 5 are needed.",
            },
        ]
    }


def test_it_validates_ownership(
    client_for: Any, outsider: Any, staff: Any, world: dict[str, Any]
) -> None:
    outsider_items = agreement(client_for(outsider)).json()["items"]
    assert [(item["rubric_name"], item["pairs"]) for item in outsider_items] == [
        ("Hidden rubric", 1)
    ]
    assert_error(agreement(client_for(outsider), {"rubric_id": str(world["rubric"].pk)}), 404)

    staff_items = agreement(client_for(staff)).json()["items"]
    assert [(item["rubric_name"], item["judge_model"]) for item in staff_items] == [
        ("Hidden rubric", "judge-a"),
        ("Support quality", "judge-a"),
        ("Support quality", "judge-b"),
    ]


def test_a_rubric_filter_keeps_that_rubric(
    client_for: Any, staff: Any, world: dict[str, Any]
) -> None:
    body = agreement(client_for(staff), {"rubric_id": str(world["hidden"].eval.rubric_id)}).json()

    assert [(item["rubric_name"], item["pairs"]) for item in body["items"]] == [
        ("Hidden rubric", 1)
    ]
    assert agreement(client_for(staff), {"rubric_id": None}).json()["items"][0]["pairs"] == 1


def test_the_newest_grade_of_each_side_makes_the_pair(
    client_for: Any, operator: Any, research: Any
) -> None:
    test = graded_test(research, factories.RubricFactory.create(name="Tone"))
    for index in range(5):
        invocation = invocation_of(test)
        grade(invocation, "ai", 0.1, False, provenance={"model": "judge"})
        grade(invocation, "ai", 0.2 * index, index > 2, provenance={"model": "judge"})
        grade(invocation, "human", 0.0, True)
        grade(invocation, "human", 0.2 * index, index > 2)

    [item] = agreement(client_for(operator)).json()["items"]

    assert (item["pairs"], item["kappa"], item["score_mae"], item["spearman"]) == (5, 1.0, 0, 1.0)


def test_figures_undefined_for_the_pairs_are_null_with_the_reason(
    client_for: Any, operator: Any, research: Any
) -> None:
    test = graded_test(research, factories.RubricFactory.create(name="Tone"))
    for index in range(5):
        pair(test, (0.8, True), (0.5 + 0.1 * index, True), "judge")

    [item] = agreement(client_for(operator)).json()["items"]

    assert item["pairs"] == 5
    assert item["kappa"] is None
    assert item["spearman"] is None
    assert item["score_mae"] == 0.14  # (0.3 + 0.2 + 0.1 + 0 + 0.1) / 5
    assert "kappa is undefined" in item["reason"]
    assert "Spearman's rho is undefined" in item["reason"]


def test_failed_pending_and_agent_grades_make_no_pair(
    client_for: Any, operator: Any, research: Any
) -> None:
    test = graded_test(research, factories.RubricFactory.create(name="Tone"))
    invocation = invocation_of(test)
    grade(invocation, "human", 0.5, True)
    factories.GradeFactory.create(
        invocation=invocation, source="ai", status="failed", score=None, passed=None
    )
    factories.GradeFactory.create(
        invocation=invocation, source="ai", status="pending", score=None, passed=None
    )
    grade(invocation, "agent", 0.4, False)

    assert agreement(client_for(operator)).json() == {"items": []}


def test_bad_bodies_and_no_credentials(client_for: Any, viewer: Any, world: Any) -> None:
    client = client_for(viewer)
    assert_error(agreement(client, {"rubric_id": "nope"}), 400)
    assert_error(agreement(client, {"rubric_id": 7}), 400)
    assert_error(agreement(client, {"judge": "x"}), 400)
    assert_error(agreement(client, {"rubric_id": str(uuid.uuid4())}), 404)
    from rest_framework.test import APIClient

    assert_error(agreement(APIClient()), 401)


def test_the_query_count_does_not_grow_with_the_pairs(
    client_for: Any, staff: Any, world: Any, django_assert_max_num_queries: Any
) -> None:
    client = client_for(staff)
    agreement(client)  # the key's first use writes its last_used_at
    with django_assert_max_num_queries(6):
        response = agreement(client, {"rubric_id": str(world["rubric"].pk)})
    assert response.json()["items"][0]["pairs"] == 6
