"""POST /api/v5/artifacts/test/end"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import (
    assert_error,
    claimed_invocation,
    force_invocation_status,
    invocation_ids,
    mark_replayed,
    post,
    started_test,
)
from tests_app.models import Grade, Test, TestInvocation, TestRun

pytestmark = pytest.mark.django_db


def replayed_twice(user: Any, test: Test) -> tuple[TestInvocation, TestInvocation]:
    """Both runs of ``test`` claimed and replayed."""
    first = mark_replayed(claimed_invocation(user, test))
    return first, mark_replayed(claimed_invocation(user, test))


def end_body(invocation: TestInvocation, **extra: Any) -> dict[str, Any]:
    return {**invocation_ids(invocation), **extra}


def test_it_ends_ungraded(
    client_for: Any, operator: Any, started: Test, replayed: TestInvocation
) -> None:
    response = post(client_for(operator), "end", end_body(replayed))

    assert response.status_code == 200
    assert response.json() == {
        "invocation_id": str(replayed.pk),
        "grade_id": None,
        "score": None,
        "passed": None,
        "feedback": None,
    }
    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.ENDED
    assert replayed.ended_at is not None
    run = TestRun.objects.get(pk=replayed.run_id)
    assert run.status == TestRun.Status.COMPLETED
    assert run.score is None
    started.refresh_from_db()
    assert started.completed_runs == 1
    assert started.graded_runs == 0
    assert started.current_invocation_id is None
    assert started.status == Test.Status.RUNNING  # one of two runs is still pending
    assert not Grade.objects.exists()


def test_an_agent_grade_is_stored_and_current(
    client_for: Any, operator: Any, started: Test, replayed: TestInvocation
) -> None:
    response = post(
        client_for(operator),
        "end",
        end_body(replayed, score=0.4, passed=True, feedback="Close enough."),
    )

    assert response.status_code == 200
    body = response.json()
    grade = Grade.objects.get()
    assert body == {
        "invocation_id": str(replayed.pk),
        "grade_id": str(grade.pk),
        "score": 0.4,
        "passed": True,
        "feedback": "Close enough.",
    }
    assert (grade.source, grade.status, grade.actor) == ("agent", "done", operator)
    assert (grade.score, grade.passed, grade.feedback) == (0.4, True, "Close enough.")
    run = TestRun.objects.get(pk=replayed.run_id)
    assert (run.score, run.passed) == (0.4, True)
    started.refresh_from_db()
    assert (started.graded_runs, started.passed_runs, started.score_sum) == (
        1,
        1,
        pytest.approx(0.4),
    )


@pytest.mark.parametrize(("score", "passed"), [(0.7, True), (0.69, False), (0.0, False)])
def test_passed_is_derived_from_the_rubric_threshold(
    client_for: Any, operator: Any, replayed: TestInvocation, score: float, passed: bool
) -> None:
    # The factory rubric's threshold is 0.7.
    body = post(client_for(operator), "end", end_body(replayed, score=score)).json()

    assert body["passed"] is passed
    assert body["feedback"] == ""
    assert Grade.objects.get().passed is passed


def test_the_last_run_completes_the_test(client_for: Any, operator: Any, started: Test) -> None:
    client = client_for(operator)
    first, second = replayed_twice(operator, started)

    post(client, "end", end_body(first, score=1.0))
    started.refresh_from_db()
    assert started.status == Test.Status.RUNNING
    post(client, "end", end_body(second, score=0.5))

    started.refresh_from_db()
    assert started.status == Test.Status.COMPLETED
    assert started.finished_at is not None
    assert (started.completed_runs, started.graded_runs, started.passed_runs) == (2, 2, 1)
    assert started.mean_score == pytest.approx(0.75)


def test_grade_true_creates_a_pending_grade_and_enqueues_the_judge(
    client_for: Any,
    operator: Any,
    replayed: TestInvocation,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client_for(operator), "end", end_body(replayed, grade=True))

    assert response.status_code == 200
    body = response.json()
    grade = Grade.objects.get()
    assert body == {
        "invocation_id": str(replayed.pk),
        "grade_id": str(grade.pk),
        "score": None,
        "passed": None,
        "feedback": None,
    }
    # No judge is configured in tests: the offline grader, named as such.
    assert (grade.source, grade.status) == ("reference", "pending")
    assert len(callbacks) == 1
    assert TestRun.objects.get(pk=replayed.run_id).status == TestRun.Status.COMPLETED


def test_grade_true_is_graded_after_commit(
    client_for: Any,
    operator: Any,
    replayed: TestInvocation,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        body = post(client_for(operator), "end", end_body(replayed, grade=True)).json()

    grade = Grade.objects.get(pk=body["grade_id"])
    assert grade.status == Grade.Status.DONE
    assert grade.score is not None
    assert TestRun.objects.get(pk=replayed.run_id).score == grade.score


@pytest.mark.parametrize(
    "status",
    [TestInvocation.Status.CREATED, TestInvocation.Status.RUNNING, TestInvocation.Status.ENDED],
)
def test_an_invocation_not_replayed_is_409(
    client_for: Any, operator: Any, started: Test, claimed: TestInvocation, status: str
) -> None:
    force_invocation_status(claimed, status)

    response = post(client_for(operator), "end", end_body(claimed, score=1.0))

    body = assert_error(response, 409, f"invocation_{status}")
    assert f"is {status}" in body["detail"]
    assert not Grade.objects.exists()
    started.refresh_from_db()
    assert started.completed_runs == 0
    claimed.refresh_from_db()
    assert claimed.status == status


def test_ending_twice_is_409(client_for: Any, operator: Any, replayed: TestInvocation) -> None:
    client = client_for(operator)
    post(client, "end", end_body(replayed, score=1.0))

    assert_error(post(client, "end", end_body(replayed, score=0.0)), 409, "invocation_ended")
    assert Grade.objects.get().score == 1.0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"score": 1.5}, "score"),
        ({"score": -0.1}, "score"),
        ({"score": "0.5"}, "score"),
        ({"grade": True, "score": 0.5}, "grade"),
        ({"passed": True}, "score"),
        ({"grade": "true"}, "grade"),
        ({"feedback": 3, "score": 0.5}, "feedback"),
        ({"test_invocation_id": "bad"}, "test_invocation_id"),
        ({"note": "hi"}, "note"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, replayed: TestInvocation, extra: dict[str, Any], field: str
) -> None:
    error = assert_error(
        post(client_for(operator), "end", end_body(replayed, **extra)), 400, "invalid"
    )

    assert field in error["fields"]
    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.REPLAYED


def test_ids_that_do_not_belong_together_are_400(
    client_for: Any, operator: Any, started: Test
) -> None:
    first, second = replayed_twice(operator, started)

    response = post(
        client_for(operator), "end", end_body(first, run_id=str(second.run_id), score=1.0)
    )

    assert_error(response, 400, "mismatch")
    first.refresh_from_db()
    assert first.status == TestInvocation.Status.REPLAYED


def test_it_requires_credentials(client: Any, replayed: TestInvocation) -> None:
    response = client.post(
        "/api/v5/artifacts/test/end", end_body(replayed), content_type="application/json"
    )

    assert_error(response, 401, "not_authenticated")


def test_it_validates_ownership(client_for: Any, outsider: Any, replayed: TestInvocation) -> None:
    assert_error(post(client_for(outsider), "end", end_body(replayed)), 404, "not_found")
    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.REPLAYED


def test_an_unknown_test_is_404(client_for: Any, operator: Any, replayed: TestInvocation) -> None:
    response = post(client_for(operator), "end", end_body(replayed, test_id=str(uuid.uuid4())))

    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_end(client_for: Any, viewer: Any, replayed: TestInvocation) -> None:
    assert_error(post(client_for(viewer), "end", end_body(replayed)), 403, "permission_denied")
    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.REPLAYED


def test_it_publishes_the_grade_and_the_completed_test_after_commit(
    client_for: Any,
    operator: Any,
    research: Any,
    django_capture_on_commit_callbacks: Any,
    events: list[dict[str, Any]],
) -> None:
    sent = events
    test = started_test(operator, factories.make_benchmark(department=research, entries=1))
    invocation = mark_replayed(claimed_invocation(operator, test))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post(client_for(operator), "end", end_body(invocation, score=0.9))
    assert sent == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()

    assert [event["event_type"] for event in sent] == ["grade.completed", "test.completed"]
    assert sent[0]["score"] == 0.9
    assert sent[0]["passed"] is True
    assert sent[0]["invocation_id"] == invocation.pk
    assert sent[1]["status"] == "completed"


def test_end_without_a_score_takes_empty_feedback_as_none(
    client_for: Any, operator: Any, replayed: Any
) -> None:
    body = {
        "test_id": str(replayed.test_id),
        "test_invocation_id": str(replayed.pk),
        "run_id": str(replayed.run_id),
        "feedback": "",
    }
    response = client_for(operator).post("/api/v5/artifacts/test/end", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["grade_id"] is None
    replayed.refresh_from_db()
    assert replayed.status == "ended"
    assert not replayed.grades.exists()
