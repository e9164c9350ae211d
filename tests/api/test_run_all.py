"""POST /api/v5/artifacts/test/run_all"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.lifecycle_support import assert_error, post, started_test
from tests_app.models import Grade, RunAll, Test, TestInvocation, TestRun

pytestmark = pytest.mark.django_db


def test_it_works(
    client_for: Any,
    operator: Any,
    started: Test,
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client_for(operator), "run_all", {"test_id": str(started.pk), "concurrency": 2}
        )

    assert response.status_code == 200, response.content
    run_all = RunAll.objects.get(test=started)
    assert response.json() == {
        "test_id": str(started.pk),
        "status": "active",
        "concurrency": 2,
        "run_all_id": str(run_all.pk),
        # No judge is configured here: the offline reference grader, named as such.
        "grader": "reference",
        "max_runs": None,
    }
    # The workers drove the test to its end, with a grade for every run.
    started.refresh_from_db()
    assert (started.status, started.completed_runs, started.graded_runs) == ("completed", 2, 2)
    assert started.pending_grades == 0
    assert set(TestRun.objects.filter(test=started).values_list("status", flat=True)) == {
        "completed"
    }
    invocations = TestInvocation.objects.filter(test=started)
    assert {(i.status, i.actor_id, i.client, i.run_all_id) for i in invocations} == {
        ("ended", operator.pk, "agent", run_all.pk)
    }
    assert Grade.objects.filter(invocation__test=started, status="done").count() == 2
    run_all.refresh_from_db()
    assert (run_all.status, run_all.finish_reason) == ("finished", "completed")
    types = [event["event_type"] for event in events]
    assert types[0] == "run_all.started"
    assert "run_all.finished" in types
    assert "test.completed" in types


def test_it_takes_its_options_and_the_defaults(
    client_for: Any, operator: Any, benchmark: Any
) -> None:
    client = client_for(operator)
    infinite = started_test(operator, benchmark, infinite_mode=True)
    body = {"test_id": str(infinite.pk), "concurrency": 64, "grade": "none", "max_runs": 5}

    response = post(client, "run_all", body)

    assert response.status_code == 200, response.content
    assert response.json()["grader"] is None
    assert response.json()["max_runs"] == 5
    run_all = RunAll.objects.get(test=infinite)
    assert (run_all.concurrency, run_all.grade, run_all.max_runs) == (64, "none", 5)
    assert run_all.started_by == operator

    finite = started_test(operator, benchmark)
    response = post(client, "run_all", {"test_id": str(finite.pk)})
    assert response.status_code == 200, response.content
    assert response.json()["concurrency"] == 8
    run_all = RunAll.objects.get(test=finite)
    assert (run_all.concurrency, run_all.grade, run_all.max_runs) == (8, "ai", None)


def test_the_grader_is_the_judge_when_one_is_configured(
    client_for: Any, operator: Any, started: Test, settings: Any
) -> None:
    settings.JUDGE_MODEL = "judge-model"
    response = post(client_for(operator), "run_all", {"test_id": str(started.pk)})
    assert response.json()["grader"] == "ai"


def test_a_second_call_while_one_is_active_is_409_naming_it(
    client_for: Any, operator: Any, started: Test
) -> None:
    client = client_for(operator)
    first = post(client, "run_all", {"test_id": str(started.pk)}).json()

    error = assert_error(post(client, "run_all", {"test_id": str(started.pk)}), 409)

    assert error["code"] == "run_all_active"
    assert first["run_all_id"] in error["detail"]
    assert RunAll.objects.filter(test=started).count() == 1


def test_an_infinite_test_needs_max_runs(client_for: Any, operator: Any, benchmark: Any) -> None:
    test = started_test(operator, benchmark, infinite_mode=True)
    error = assert_error(post(client_for(operator), "run_all", {"test_id": str(test.pk)}), 400)
    assert error["fields"] == {"max_runs": ["Required for an infinite-mode test."]}
    assert not RunAll.objects.exists()


def test_a_stopped_or_completed_test_is_409(client_for: Any, operator: Any, started: Test) -> None:
    client = client_for(operator)
    Test.objects.filter(pk=started.pk).update(status=Test.Status.COMPLETED)
    assert_error(post(client, "run_all", {"test_id": str(started.pk)}), 409, "test_completed")
    Test.objects.filter(pk=started.pk).update(status=Test.Status.STOPPED)
    assert_error(post(client, "run_all", {"test_id": str(started.pk)}), 409, "test_stopped")
    assert not RunAll.objects.exists()


def test_it_requires_credentials(client: Any, started: Test) -> None:
    response = client.post(
        "/api/v5/artifacts/test/run_all",
        {"test_id": str(started.pk)},
        content_type="application/json",
    )
    assert_error(response, 401, "not_authenticated")


def test_it_validates_ownership(client_for: Any, outsider: Any, started: Test) -> None:
    assert_error(post(client_for(outsider), "run_all", {"test_id": str(started.pk)}), 404)
    assert not RunAll.objects.exists()


def test_an_unknown_test_is_404(client_for: Any, operator: Any) -> None:
    response = post(client_for(operator), "run_all", {"test_id": str(uuid.uuid4())})
    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_run_all(client_for: Any, viewer: Any, started: Test) -> None:
    response = post(client_for(viewer), "run_all", {"test_id": str(started.pk)})
    assert_error(response, 403, "permission_denied")
    assert not RunAll.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"test_id": None}, "test_id"),
        ({"test_id": "123"}, "test_id"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 65}, "concurrency"),
        ({"concurrency": "8"}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"grade": "human"}, "grade"),
        ({"grade": True}, "grade"),
        ({"max_runs": 0}, "max_runs"),
        ({"max_runs": 1.5}, "max_runs"),
        ({"invocation_id": str(uuid.UUID(int=5))}, "invocation_id"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, started: Test, body: dict[str, Any], field: str
) -> None:
    response = post(client_for(operator), "run_all", {"test_id": str(started.pk), **body})
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]
    assert not RunAll.objects.exists()
