"""POST /api/v5/artifacts/test/start"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import assert_error, post
from tests_app.models import Test, TestRun

pytestmark = pytest.mark.django_db


def test_it_creates_the_test_and_its_first_cycle(client_for: Any, operator: Any) -> None:
    research = operator.memberships.get().department
    benchmark = factories.make_benchmark(department=research, entries=3, runs_per_entry=2)

    response = post(client_for(operator), "start", {"benchmark_id": str(benchmark.pk)})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"test_id"}
    test = Test.objects.get(pk=body["test_id"])
    assert test.status == Test.Status.PENDING
    assert test.benchmark_id == benchmark.pk
    assert test.eval_id == benchmark.eval_id
    assert test.department_id == research.pk
    assert test.created_by == operator
    assert test.infinite_mode is False
    assert test.cycle == 1
    assert test.total_runs == 6
    runs = list(TestRun.objects.filter(test=test).order_by("ordinal"))
    assert [run.ordinal for run in runs] == [1, 2, 3, 4, 5, 6]
    assert {run.status for run in runs} == {TestRun.Status.PENDING}
    assert {run.cycle for run in runs} == {1}
    # Every entry once before any entry twice.
    positions = [run.entry.position for run in runs]
    assert positions == [1, 2, 3, 1, 2, 3]


def test_it_runs_against_the_default_target_with_a_frozen_snapshot(
    client_for: Any, operator: Any, research: Any
) -> None:
    target = factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b", price_in="0.5", price_out="1.5"
    )
    benchmark = factories.make_benchmark(department=research, entries=1, target=target)

    response = post(client_for(operator), "start", {"benchmark_id": str(benchmark.pk)})

    test = Test.objects.get(pk=response.json()["test_id"])
    assert test.target == target
    expected = {
        "kind": "openai",
        "model": "qwen2.5:7b",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "OPENAI_API_KEY",
        "temperature": 0.0,
        "max_tokens": None,
        "seed": None,
        "timeout_s": 60.0,
        "max_retries": 2,
        "id": str(target.pk),
        "name": "Local",
        "price_in": 0.5,
        "price_out": 1.5,
    }
    assert test.target_snapshot == expected
    # An edit of the target changes the tests started afterwards, not this one.
    target.model = "qwen2.5:14b"
    target.save()
    test.refresh_from_db()
    assert test.target_snapshot == expected


def test_it_takes_a_target_id(client_for: Any, operator: Any, benchmark: Any) -> None:
    other = factories.OpenAITargetFactory.create(
        department=benchmark.eval.department, model="other"
    )

    response = post(
        client_for(operator),
        "start",
        {"benchmark_id": str(benchmark.pk), "target_id": str(other.pk)},
    )

    test = Test.objects.get(pk=response.json()["test_id"])
    assert (test.target, test.target_snapshot["model"]) == (other, "other")
    assert benchmark.default_target != other


def test_a_target_the_caller_cannot_see_is_404(
    client_for: Any, operator: Any, benchmark: Any, support: Any
) -> None:
    hidden = factories.TargetFactory.create(department=support, name="Support secret model")

    for target_id in (str(hidden.pk), str(uuid.uuid4())):
        response = post(
            client_for(operator),
            "start",
            {"benchmark_id": str(benchmark.pk), "target_id": target_id},
        )
        body = assert_error(response, 404, "not_found")
        assert "Support secret model" not in body["detail"]
    assert not Test.objects.exists()


def test_a_target_of_another_department_is_400(
    client_for: Any, staff: Any, benchmark: Any, support: Any
) -> None:
    # Staff sees every target; a test still runs against one of its own department.
    foreign = factories.TargetFactory.create(department=support)

    response = post(
        client_for(staff),
        "start",
        {"benchmark_id": str(benchmark.pk), "target_id": str(foreign.pk)},
    )

    body = assert_error(response, 400, "target_department_mismatch")
    assert "target_id" in body["fields"]
    assert not Test.objects.exists()


def test_it_accepts_infinite_mode(client_for: Any, operator: Any, benchmark: Any) -> None:
    response = post(
        client_for(operator), "start", {"benchmark_id": str(benchmark.pk), "infinite_mode": True}
    )

    assert response.status_code == 200
    test = Test.objects.get(pk=response.json()["test_id"])
    assert test.infinite_mode is True
    assert test.runs.count() == 2


def test_staff_may_start_anywhere(client_for: Any, staff: Any, benchmark: Any) -> None:
    response = post(client_for(staff), "start", {"benchmark_id": str(benchmark.pk)})

    assert response.status_code == 200
    assert Test.objects.get(pk=response.json()["test_id"]).created_by == staff


def test_it_requires_credentials(client: Any, benchmark: Any) -> None:
    response = client.post(
        "/api/v5/artifacts/test/start",
        {"benchmark_id": str(benchmark.pk)},
        content_type="application/json",
    )

    assert_error(response, 401, "not_authenticated")
    assert not Test.objects.exists()


def test_it_validates_ownership(client_for: Any, outsider: Any, benchmark: Any) -> None:
    response = post(client_for(outsider), "start", {"benchmark_id": str(benchmark.pk)})

    assert_error(response, 404, "not_found")
    assert not Test.objects.exists()


def test_an_unknown_benchmark_is_404(client_for: Any, operator: Any) -> None:
    response = post(client_for(operator), "start", {"benchmark_id": str(uuid.uuid4())})

    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_start(client_for: Any, viewer: Any, benchmark: Any) -> None:
    response = post(client_for(viewer), "start", {"benchmark_id": str(benchmark.pk)})

    body = assert_error(response, 403, "permission_denied")
    assert "operators only" in body["detail"]
    assert not Test.objects.exists()


def test_a_benchmark_without_entries_is_400(client_for: Any, operator: Any, research: Any) -> None:
    empty = factories.make_benchmark(department=research, entries=0)

    response = post(client_for(operator), "start", {"benchmark_id": str(empty.pk)})

    body = assert_error(response, 400, "benchmark_empty")
    assert "no entries" in body["detail"]
    assert not Test.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "benchmark_id"),
        ({"benchmark_id": "not-a-uuid"}, "benchmark_id"),
        ({"benchmark_id": 42}, "benchmark_id"),
        ({"benchmark_id": None}, "benchmark_id"),
        ({"benchmark_id": "00000000-0000-0000-0000-000000000000", "extra": 1}, "extra"),
        (
            {"benchmark_id": "00000000-0000-0000-0000-000000000000", "infinite_mode": "yes"},
            "infinite_mode",
        ),
        ({"benchmark_id": "00000000-0000-0000-0000-000000000000", "target_id": 3}, "target_id"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, benchmark: Any, body: dict[str, Any], field: str
) -> None:
    response = post(client_for(operator), "start", body)

    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]
    assert not Test.objects.exists()


def test_a_non_object_body_is_400(client_for: Any, operator: Any) -> None:
    response = post(client_for(operator), "start", ["not", "an", "object"])

    assert_error(response, 400, "invalid")
