"""POST /api/v5/artifacts/test/get"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.fields import DateTimeField
from rest_framework.renderers import JSONRenderer

from tests import factories
from tests.api.lifecycle_support import (
    agent,
    assert_error,
    claimed_invocation,
    force_invocation_status,
    post,
    started_test,
)
from tests_app.api.lifecycle_serializers import GetTestArtifactResponseSerializer
from tests_app.models import Grade, Test, TestInvocation, TestRun
from tests_app.selectors import test_detail
from tests_app.services.stopping import stop_invocation

pytestmark = pytest.mark.django_db


def get(client: Any, test: Test, **extra: Any) -> Any:
    return post(client, "get", {"test_id": str(test.pk), **extra})


def test_a_fresh_test(client_for: Any, operator: Any, started: Test, benchmark: Any) -> None:
    response = get(client_for(operator), started)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "test",
        "invocations",
        "status",
        "eval_name",
        "eval_description",
        "rubric_name",
        "infinite_mode",
        "runs",
        "status_summary",
        "show_controls",
        "current_invocation_id",
        "has_runs_or_groups",
        "entries",
        "resources",
    }
    evaluation, rubric = benchmark.eval, benchmark.eval.rubric
    assert body["test"] == {
        "id": str(started.pk),
        "benchmark_id": str(benchmark.pk),
        "benchmark_name": benchmark.name,
        "eval_id": str(evaluation.pk),
        "department_id": str(evaluation.department_id),
        "department_name": "Research",
        "status": "pending",
        "infinite_mode": False,
        "cycle": 1,
        "is_archived": False,
        "created_at": body["test"]["created_at"],
        "started_at": None,
        "finished_at": None,
        "created_by_name": "Olive Operator",
        "target": {
            "id": str(benchmark.default_target_id),
            "name": benchmark.default_target.name,
            "kind": "reference",
            "model": "",
        },
    }
    assert body["status"] == "pending"
    assert body["eval_name"] == evaluation.name
    assert body["eval_description"] == evaluation.description
    assert body["rubric_name"] == rubric.name
    assert body["infinite_mode"] is False
    assert body["invocations"] == []
    assert [(run["ordinal"], run["status"]) for run in body["runs"]] == [
        (2, "pending"),
        (1, "pending"),
    ]
    assert body["status_summary"] == {
        "total_runs": 2,
        "by_status": {
            "pending": 2,
            "claimed": 0,
            "running": 0,
            "completed": 0,
            "failed": 0,
            "stopped": 0,
        },
        "graded": 0,
        "passed": 0,
        "not_passed": 0,
        "pass_rate": None,
        "mean_score": None,
        "cycle": 1,
        "progress": 0.0,
        "mean_score_ci": None,
        "pass_rate_ci": None,
        "repetitions": None,
        "latency_ms": None,
        "tokens": {"prompt": None, "completion": None},
        "cost": None,
    }
    assert body["show_controls"] is True
    assert body["current_invocation_id"] is None
    assert body["has_runs_or_groups"] is True
    entries = list(benchmark.entries.order_by("position"))
    assert body["entries"] == {
        "total": 2,
        "items": [
            {"id": str(entry.pk), "position": entry.position, "title": entry.title, "turns": 3}
            for entry in entries
        ],
    }
    assert body["resources"] == {
        "benchmark": {"id": str(benchmark.pk), "name": benchmark.name},
        "eval": {"id": str(evaluation.pk), "name": evaluation.name},
        "rubric": {"id": str(rubric.pk), "name": rubric.name},
        "department": {"id": str(evaluation.department_id), "name": "Research"},
        "exports": [],
    }


def test_runs_invocations_grades_and_summary(client_for: Any, operator: Any, research: Any) -> None:
    benchmark = factories.make_benchmark(department=research, entries=4)
    test = started_test(operator, benchmark)
    graded = claimed_invocation(operator, test)
    pending_grade = claimed_invocation(operator, test)
    running = claimed_invocation(operator, test)
    force_invocation_status(graded, TestInvocation.Status.ENDED)
    force_invocation_status(pending_grade, TestInvocation.Status.ENDED)
    force_invocation_status(running, TestInvocation.Status.RUNNING)
    TestRun.objects.filter(pk__in=[graded.run_id, pending_grade.run_id]).update(
        status=TestRun.Status.COMPLETED
    )
    TestRun.objects.filter(pk=running.run_id).update(status=TestRun.Status.RUNNING)
    TestRun.objects.filter(pk=graded.run_id).update(score=0.9, passed=True)
    old = factories.GradeFactory.create(invocation=graded, score=0.2, passed=False)
    Grade.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    current = factories.GradeFactory.create(
        invocation=graded, score=0.9, passed=True, feedback="Yes"
    )
    # A newer pending regrade does not hide the current done grade.
    factories.GradeFactory.create(invocation=graded, status=Grade.Status.PENDING, score=None)
    pending = factories.GradeFactory.create(
        invocation=pending_grade, source="reference", status=Grade.Status.PENDING, score=None
    )
    factories.ReplayStepFactory.create(invocation=graded, turn=1)
    TestInvocation.objects.filter(pk=graded.pk).update(steps_count=1)

    body = get(client_for(operator), test).json()

    assert body["status"] == "running"
    assert body["current_invocation_id"] == str(running.pk)
    invocations = {item["id"]: item for item in body["invocations"]}
    assert [item["id"] for item in body["invocations"]] == [
        str(running.pk),
        str(pending_grade.pk),
        str(graded.pk),
    ]
    assert invocations[str(graded.pk)] | {"started_at": None, "ended_at": None} == {
        "id": str(graded.pk),
        "run_id": str(graded.run_id),
        "run_ordinal": 1,
        "cycle": 1,
        "status": "ended",
        "client": "agent",
        "actor_name": "Olive Operator",
        "started_at": None,
        "ended_at": None,
        "error": "",
        "steps_count": 1,
        "grade": {
            "id": str(current.pk),
            "source": "agent",
            "status": "done",
            "score": 0.9,
            "passed": True,
            "feedback": "Yes",
            "created_at": invocations[str(graded.pk)]["grade"]["created_at"],
        },
    }
    assert invocations[str(pending_grade.pk)]["grade"]["id"] == str(pending.pk)
    assert invocations[str(pending_grade.pk)]["grade"]["status"] == "pending"
    assert invocations[str(running.pk)]["grade"] is None

    runs = {run["ordinal"]: run for run in body["runs"]}
    assert [run["ordinal"] for run in body["runs"]] == [4, 3, 2, 1]
    first_entry = benchmark.entries.get(position=1)
    assert runs[1] == {
        "id": str(graded.run_id),
        "ordinal": 1,
        "cycle": 1,
        "entry_id": str(first_entry.pk),
        "entry_title": first_entry.title,
        "status": "completed",
        "invocation_id": str(graded.pk),
        "score": 0.9,
        "passed": True,
    }
    assert runs[4]["invocation_id"] is None
    summary = body["status_summary"]
    assert summary["by_status"] == {
        "pending": 1,
        "claimed": 0,
        "running": 1,
        "completed": 2,
        "failed": 0,
        "stopped": 0,
    }
    assert (summary["graded"], summary["passed"], summary["not_passed"]) == (1, 1, 0)
    assert summary["pass_rate"] == 1.0
    assert summary["mean_score"] == pytest.approx(0.9)
    assert summary["progress"] == 0.5


def test_infinite_mode_summarizes_the_current_cycle(
    client_for: Any, operator: Any, benchmark: Any
) -> None:
    test = started_test(operator, benchmark, infinite_mode=True)
    for _ in range(3):
        claimed_invocation(operator, test)  # the third claim opens cycle 2

    body = get(client_for(operator), test).json()

    assert body["test"]["cycle"] == 2
    assert body["status_summary"]["cycle"] == 2
    assert body["status_summary"]["total_runs"] == 2
    assert body["status_summary"]["by_status"]["claimed"] == 1
    assert body["status_summary"]["by_status"]["pending"] == 1
    assert [(run["cycle"], run["ordinal"]) for run in body["runs"]] == [
        (2, 2),
        (2, 1),
        (1, 2),
        (1, 1),
    ]


def test_exports_have_download_urls(client_for: Any, operator: Any, started: Test) -> None:
    upload = factories.UploadFactory.create(test=started, file_name="test-export.zip", row_count=7)

    body = get(client_for(operator), started).json()

    assert body["resources"]["exports"] == [
        {
            "upload_id": str(upload.pk),
            "file_name": "test-export.zip",
            "row_count": 7,
            "created_at": body["resources"]["exports"][0]["created_at"],
            "download_url": f"/api/v5/uploads/{upload.pk}/download",
        }
    ]


def test_paging_runs_and_invocations(client_for: Any, operator: Any, research: Any) -> None:
    benchmark = factories.make_benchmark(department=research, entries=5)
    test = started_test(operator, benchmark)
    invocations = [claimed_invocation(operator, test) for _ in range(3)]

    body = get(client_for(operator), test, runs_page_size=2, runs_page_offset=1).json()

    assert [run["ordinal"] for run in body["runs"]] == [4, 3]
    assert [item["id"] for item in body["invocations"]] == [
        str(invocations[1].pk),
        str(invocations[0].pk),
    ]
    assert body["status_summary"]["total_runs"] == 5


def test_show_controls_follows_role_and_state(
    client_for: Any, operator: Any, viewer: Any, started: Test
) -> None:
    assert get(client_for(viewer), started).json()["show_controls"] is False

    stop_invocation(actor=agent(operator), invocation_id=claimed_invocation(operator, started).pk)
    body = get(client_for(operator), started).json()

    assert body["status"] == "stopped"
    assert body["show_controls"] is False
    assert body["current_invocation_id"] is None


def test_the_query_count_does_not_grow_with_the_test(
    client_for: Any, operator: Any, research: Any, django_assert_max_num_queries: Any
) -> None:
    small = started_test(operator, factories.make_benchmark(department=research, entries=1))
    factories.GradeFactory.create(invocation=claimed_invocation(operator, small))
    big_benchmark = factories.make_benchmark(department=research, entries=30, runs_per_entry=10)
    big = started_test(operator, big_benchmark)
    for _ in range(120):
        invocation = claimed_invocation(operator, big)
        factories.GradeFactory.create(invocation=invocation)
    factories.UploadFactory.create(test=big)
    client = client_for(operator)
    get(client, small)  # warm up: the key's last_used_at is written on first use

    with CaptureQueriesContext(connection) as small_queries:
        assert get(client, small).status_code == 200
    with django_assert_max_num_queries(12):
        response = get(client, big, runs_page_size=500)

    body = response.json()
    assert len(body["runs"]) == 300
    assert len(body["invocations"]) == 120
    assert all(item["grade"] is not None for item in body["invocations"])
    with CaptureQueriesContext(connection) as big_queries:
        get(client, big, runs_page_size=500)
    assert len(big_queries) == len(small_queries)


def test_archived_tests_are_readable(client_for: Any, operator: Any, started: Test) -> None:
    Test.objects.filter(pk=started.pk).update(is_archived=True)

    body = get(client_for(operator), started).json()

    assert body["test"]["is_archived"] is True
    assert body["show_controls"] is False


def test_it_requires_credentials(client: Any, started: Test) -> None:
    response = client.post(
        "/api/v5/artifacts/test/get", {"test_id": str(started.pk)}, content_type="application/json"
    )

    assert_error(response, 401, "not_authenticated")


def test_it_validates_ownership(
    client_for: Any, operator: Any, outsider: Any, started: Test
) -> None:
    assert_error(get(client_for(outsider), started), 404, "not_found")
    assert_error(
        post(client_for(operator), "get", {"test_id": str(uuid.uuid4())}), 404, "not_found"
    )


def test_a_viewer_may_read(client_for: Any, viewer: Any, started: Test) -> None:
    body = get(client_for(viewer), started).json()

    assert body["test"]["id"] == str(started.pk)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"test_id": "abc"}, "test_id"),
        ({"runs_page_size": 0}, "runs_page_size"),
        ({"runs_page_size": 501}, "runs_page_size"),
        ({"runs_page_size": "10"}, "runs_page_size"),
        ({"runs_page_offset": -1}, "runs_page_offset"),
        ({"verbose": True}, "verbose"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, started: Test, extra: dict[str, Any], field: str
) -> None:
    error = assert_error(get(client_for(operator), started, **extra), 400, "invalid")

    assert field in error["fields"]


def test_the_answer_is_what_the_documented_serializer_renders(
    client_for: Any, operator: Any, research: Any
) -> None:
    # The view returns the selector's JSON-safe data without walking it through the output
    # serializer; the serializer still documents the shape, so both must render the same JSON.
    benchmark = factories.make_benchmark(department=research, entries=3)
    test = started_test(operator, benchmark)
    graded, running = claimed_invocation(operator, test), claimed_invocation(operator, test)
    force_invocation_status(graded, TestInvocation.Status.ENDED)
    force_invocation_status(running, TestInvocation.Status.RUNNING)
    TestInvocation.objects.filter(pk=running.pk).update(started_at=timezone.now())
    TestRun.objects.filter(pk=graded.run_id).update(
        status=TestRun.Status.COMPLETED, score=0.5, passed=False
    )
    factories.GradeFactory.create(invocation=graded, score=0.5, passed=False, feedback="Half.")
    factories.UploadFactory.create(test=test, file_name="export.zip", row_count=3)

    body = get(client_for(operator), test).json()

    native = test_detail.get_test_detail(user=operator, test_id=test.pk)
    documented = JSONRenderer().render(GetTestArtifactResponseSerializer(native).data)
    assert body == json.loads(documented)
    assert len(body["invocations"]) == 2
    assert body["invocations"][1]["grade"]["feedback"] == "Half."
    assert body["resources"]["exports"][0]["row_count"] == 3
    assert set(body["runs"][0]) == {
        "id",
        "ordinal",
        "cycle",
        "entry_id",
        "entry_title",
        "status",
        "invocation_id",
        "score",
        "passed",
    }
    test.refresh_from_db()
    assert body["test"]["created_at"] == DateTimeField().to_representation(test.created_at)
    assert body["test"]["created_at"].endswith("Z")


def test_a_completed_test_answers_the_same_from_the_cache(
    client_for: Any, operator: Any, research: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1)
    test = started_test(operator, benchmark)
    invocation = claimed_invocation(operator, test)
    force_invocation_status(invocation, TestInvocation.Status.ENDED)
    TestRun.objects.filter(pk=invocation.run_id).update(status=TestRun.Status.COMPLETED)
    Test.objects.filter(pk=test.pk).update(status=Test.Status.COMPLETED)
    client = client_for(operator)

    built, cached = get(client, test).json(), get(client, test).json()

    assert cached == built
    assert cached["invocations"][0]["id"] == str(invocation.pk)
    # Pages read the same selector with Python values (their templates format the dates); the
    # API's cached copy is kept as written, and is what the API answered.
    native = test_detail.get_test_detail(user=operator, test_id=test.pk)
    assert native["invocations"][0]["id"] == invocation.pk
    assert native["test"]["created_at"] == Test.objects.get(pk=test.pk).created_at
    written = test_detail.get_test_detail(user=operator, test_id=test.pk, wire=True)
    assert written == cached
    assert written["invocations"][0]["id"] == str(invocation.pk)


def test_entries_are_capped_and_counted_without_another_query(
    client_for: Any,
    operator: Any,
    research: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_max_num_queries: Any,
) -> None:
    monkeypatch.setattr(test_detail, "ENTRIES_LIMIT", 3)
    benchmark = factories.make_benchmark(department=research, entries=5)
    test = started_test(operator, benchmark)
    claimed_invocation(operator, test)
    factories.UploadFactory.create(test=test)
    client = client_for(operator)
    get(client, test)  # warm up: the key's last_used_at is written on first use

    # Authentication (key, memberships), the test, runs, invocations with the open one,
    # grades, the status summary, entries with their total, exports.
    with django_assert_max_num_queries(9):
        body = get(client, test).json()

    assert body["entries"]["total"] == 5
    assert [item["position"] for item in body["entries"]["items"]] == [1, 2, 3]


def test_a_page_past_the_end_still_names_the_current_invocation(
    client_for: Any, operator: Any, started: Test, claimed: TestInvocation
) -> None:
    body = get(client_for(operator), started, runs_page_size=5, runs_page_offset=10).json()

    assert body["invocations"] == []
    assert body["runs"] == []
    assert body["current_invocation_id"] == str(claimed.pk)
