"""search and targets: items name what a test ran against, target_ids filters, and the
target_filter facet counts like the other two sections."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from tests import factories
from tests_app.actors import Actor
from tests_app.models import Test
from tests_app.selectors.search import search_tests
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


def search(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v5/artifacts/test/search", body, format="json")
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


def options(section: dict[str, Any]) -> dict[str, tuple[str, int, bool]]:
    return {
        option["id"]: (option["label"], option["count"], option["selected"])
        for option in section["options"]
    }


def at(day: int) -> datetime:
    return datetime(2026, 3, day, 12, tzinfo=UTC)


def test_items_name_the_target_and_the_model_that_ran(
    client_for: Any, operator: Any, research: Any
) -> None:
    target = factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b"
    )
    benchmark = factories.make_benchmark(department=research, entries=1, target=target)
    test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
    # Renamed and pointed at another model after the start: the name follows the row, the
    # model is what the test ran.
    target.name, target.model = "Local (old)", "qwen2.5:14b"
    target.save()

    body = search(client_for(operator))

    [item] = body["tests"]
    assert item["id"] == str(test.pk)
    assert (item["target_name"], item["model"]) == ("Local (old)", "qwen2.5:7b")
    assert body["target_filter"] == {
        "key": "target_ids",
        "label": "Target",
        "options": [{"id": str(target.pk), "label": "Local (old)", "count": 1, "selected": False}],
    }


def test_target_ids_filter_and_facet_leaves_out_its_own_filter(
    client_for: Any, staff: Any, research: Any
) -> None:
    alpha_eval = factories.EvalFactory.create(name="Alpha", department=research)
    beta_eval = factories.EvalFactory.create(name="Beta", department=research)
    first = factories.OpenAITargetFactory.create(department=research, name="First", model="m1")
    second = factories.OpenAITargetFactory.create(department=research, name="Second", model="m2")
    alpha = factories.make_benchmark(department=research, entries=1, eval=alpha_eval)
    beta = factories.make_benchmark(department=research, entries=1, eval=beta_eval)
    made = []
    for day, (benchmark, target) in enumerate(
        [(alpha, first), (alpha, first), (alpha, second), (beta, second)], start=1
    ):
        made.append(
            factories.TestFactory.create(benchmark=benchmark, target=target, created_at=at(day))
        )

    body = search(client_for(staff), target_ids=[str(first.pk)])

    assert body["total_count"] == 2
    assert {item["id"] for item in body["tests"]} == {str(made[0].pk), str(made[1].pk)}
    assert {item["model"] for item in body["tests"]} == {"m1"}
    # The target section ignores the target filter; the eval section applies it.
    assert options(body["target_filter"]) == {
        str(first.pk): ("First", 2, True),
        str(second.pk): ("Second", 2, False),
    }
    assert options(body["eval_filter"]) == {str(alpha_eval.pk): ("Alpha", 2, False)}

    # Combined with an eval: the target section counts within that eval.
    body = search(client_for(staff), target_ids=[str(first.pk)], eval_ids=[str(beta_eval.pk)])
    assert body["total_count"] == 0
    assert options(body["target_filter"]) == {
        str(second.pk): ("Second", 1, False),
        str(first.pk): ("First", 0, True),
    }


def test_a_selected_target_of_another_department_is_not_revealed(
    client_for: Any, operator: Any, research: Any, support: Any
) -> None:
    hidden = factories.TargetFactory.create(department=support, name="Support's private model")
    factories.TestFactory.create(
        benchmark=factories.make_benchmark(department=support, target=hidden)
    )
    factories.TestFactory.create(benchmark=factories.make_benchmark(department=research))

    body = search(client_for(operator), target_ids=[str(hidden.pk)])

    assert body["total_count"] == 0
    assert str(hidden.pk) not in options(body["target_filter"])
    assert "private" not in str(body)


def test_target_ids_are_validated(client_for: Any, operator: Any) -> None:
    response = client_for(operator).post(
        "/api/v5/artifacts/test/search", {"target_ids": ["nope"]}, format="json"
    )
    assert response.status_code == 400
    assert "target_ids" in response.json()["fields"]


def test_counts_match_a_brute_force_count(staff: Any, research: Any, support: Any) -> None:
    """Random tests over evals, targets, days and archive flags: every section's counts are
    the tests that pass the other filters, whatever is selected."""
    rng = random.Random(19)
    evals = [
        factories.EvalFactory.create(department=department) for department in (research, support)
    ]
    targets = {
        evaluation.pk: [
            factories.TargetFactory.create(department=evaluation.department) for _ in range(3)
        ]
        for evaluation in evals
    }
    benchmarks = {
        evaluation.pk: factories.make_benchmark(
            department=evaluation.department, entries=1, eval=evaluation
        )
        for evaluation in evals
    }
    for _ in range(40):
        evaluation = rng.choice(evals)
        factories.TestFactory.create(
            benchmark=benchmarks[evaluation.pk],
            target=rng.choice(targets[evaluation.pk]),
            created_at=at(rng.randint(1, 5)),
            is_archived=rng.random() < 0.3,
        )
    tests = list(Test.objects.all())
    all_targets = [target for group in targets.values() for target in group]
    for _ in range(12):
        chosen_targets = rng.sample(all_targets, rng.randint(0, 2))
        chosen_evals = rng.sample(evals, rng.randint(0, 1))
        archived = rng.choice([None, True, False])
        result = search_tests(
            actor=Actor(user=staff),
            target_ids=[target.pk for target in chosen_targets],
            eval_ids=[evaluation.pk for evaluation in chosen_evals],
            is_archived=archived,
        )
        target_ids = {target.pk for target in chosen_targets}
        eval_ids = {evaluation.pk for evaluation in chosen_evals}

        def passes(
            test: Test,
            *,
            by_target: bool = True,
            by_eval: bool = True,
            target_ids: set[Any] = target_ids,
            eval_ids: set[Any] = eval_ids,
            archived: bool | None = archived,
        ) -> bool:
            return (
                (archived is None or test.is_archived == archived)
                and (not by_target or not target_ids or test.target_id in target_ids)
                and (not by_eval or not eval_ids or test.eval_id in eval_ids)
            )

        assert result.total_count == sum(passes(test) for test in tests)
        expected = Counter(str(test.target_id) for test in tests if passes(test, by_target=False))
        assert {
            option.id: option.count for option in result.target_filter.options if option.count
        } == dict(expected)
        expected = Counter(str(test.eval_id) for test in tests if passes(test, by_eval=False))
        assert {
            option.id: option.count for option in result.eval_filter.options if option.count
        } == dict(expected)
