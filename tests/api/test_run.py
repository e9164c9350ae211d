"""POST /api/v5/artifacts/test/run"""

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
    post,
    started_test,
)
from tests_app.models import ReplayStep, Test, TestInvocation, TestRun

pytestmark = pytest.mark.django_db


run_body = invocation_ids


def test_it_enqueues_the_replay_after_commit(
    client_for: Any, operator: Any, claimed: TestInvocation, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client_for(operator), "run", run_body(claimed))

    assert response.status_code == 200
    assert response.json() == {
        "test_id": str(claimed.test_id),
        "invocation_id": str(claimed.pk),
        "run_id": str(claimed.run_id),
    }
    claimed.refresh_from_db()
    # Marked as enqueued, but nothing ran yet: the replay waits for the commit.
    assert claimed.task_id
    uuid.UUID(claimed.task_id)
    assert claimed.status == TestInvocation.Status.CREATED
    assert len(callbacks) == 1
    assert not ReplayStep.objects.exists()


def test_the_enqueued_replay_runs(
    client_for: Any, operator: Any, claimed: TestInvocation, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(operator), "run", run_body(claimed))

    assert response.status_code == 200
    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.REPLAYED
    assert claimed.steps_count == 3
    assert ReplayStep.objects.filter(invocation=claimed).count() == 3
    assert TestRun.objects.get(pk=claimed.run_id).status == TestRun.Status.RUNNING


def test_calling_it_twice_is_409(client_for: Any, operator: Any, claimed: TestInvocation) -> None:
    client = client_for(operator)
    post(client, "run", run_body(claimed))
    claimed.refresh_from_db()
    task_id = claimed.task_id

    response = post(client, "run", run_body(claimed))

    body = assert_error(response, 409, "already_enqueued")
    assert "already requested" in body["detail"]
    claimed.refresh_from_db()
    assert claimed.task_id == task_id


@pytest.mark.parametrize(
    "status",
    [
        TestInvocation.Status.RUNNING,
        TestInvocation.Status.REPLAYED,
        TestInvocation.Status.ENDED,
        TestInvocation.Status.STOPPED,
    ],
)
def test_an_invocation_past_created_is_409(
    client_for: Any, operator: Any, claimed: TestInvocation, status: str
) -> None:
    force_invocation_status(claimed, status)

    response = post(client_for(operator), "run", run_body(claimed))

    body = assert_error(response, 409, f"invocation_{status}")
    assert f"is {status}" in body["detail"]
    claimed.refresh_from_db()
    assert claimed.task_id == ""


def test_ids_that_do_not_belong_together_are_400(
    client_for: Any, operator: Any, started: Test, benchmark: Any
) -> None:
    first = claimed_invocation(operator, started)
    second = claimed_invocation(operator, started)
    other_test = started_test(operator, benchmark)
    client = client_for(operator)

    wrong_run = assert_error(
        post(client, "run", run_body(first) | {"run_id": str(second.run_id)}), 400, "mismatch"
    )
    wrong_test = assert_error(
        post(client, "run", run_body(first) | {"test_id": str(other_test.pk)}), 400, "mismatch"
    )

    assert "run_id" in wrong_run["fields"]
    assert "test_invocation_id" in wrong_test["fields"]
    assert not TestInvocation.objects.exclude(task_id="").exists()


def test_an_unknown_invocation_is_404(
    client_for: Any, operator: Any, claimed: TestInvocation
) -> None:
    response = post(
        client_for(operator),
        "run",
        run_body(claimed) | {"test_invocation_id": str(uuid.uuid4())},
    )

    assert_error(response, 404, "not_found")


def test_it_requires_credentials(client: Any, claimed: TestInvocation) -> None:
    response = client.post(
        "/api/v5/artifacts/test/run", run_body(claimed), content_type="application/json"
    )

    assert_error(response, 401, "not_authenticated")
    claimed.refresh_from_db()
    assert claimed.task_id == ""


def test_it_validates_ownership(client_for: Any, outsider: Any, claimed: TestInvocation) -> None:
    response = post(client_for(outsider), "run", run_body(claimed))

    assert_error(response, 404, "not_found")
    claimed.refresh_from_db()
    assert claimed.task_id == ""


def test_an_outsiders_invocation_in_my_test_call_is_404(
    client_for: Any, operator: Any, outsider: Any, benchmark: Any, support: Any
) -> None:
    # An invocation id of another department, sent with a test of mine: not found, not mismatch,
    # so the id does not leak.
    mine = claimed_invocation(operator, started_test(operator, benchmark))
    theirs = claimed_invocation(
        outsider, started_test(outsider, factories.make_benchmark(department=support))
    )

    response = post(
        client_for(operator), "run", run_body(mine) | {"test_invocation_id": str(theirs.pk)}
    )

    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_run(client_for: Any, viewer: Any, claimed: TestInvocation) -> None:
    response = post(client_for(viewer), "run", run_body(claimed))

    assert_error(response, 403, "permission_denied")
    claimed.refresh_from_db()
    assert claimed.task_id == ""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"run_id": "x"}, "run_id"),
        ({"test_invocation_id": None}, "test_invocation_id"),
        ({"invocation_id": str(uuid.UUID(int=3))}, "invocation_id"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, claimed: TestInvocation, change: dict[str, Any], field: str
) -> None:
    error = assert_error(
        post(client_for(operator), "run", run_body(claimed) | change), 400, "invalid"
    )

    assert field in error["fields"]


def test_a_stopped_test_runs_no_more_replays(client_for: Any, operator: Any, started: Test) -> None:
    # Another agent's invocation is still created when the test is stopped through this one.
    stopped, other = claimed_invocation(operator, started), claimed_invocation(operator, started)
    client = client_for(operator)
    post(client, "stop", {"invocation_id": str(stopped.pk)})

    body = assert_error(post(client, "run", run_body(other)), 409, "test_stopped")

    assert "stopped" in body["detail"]
    other.refresh_from_db()
    assert other.task_id == ""


def test_an_operator_elsewhere_who_only_views_this_department_cannot_run(
    client_for: Any, viewer: Any, support: Any, claimed: TestInvocation
) -> None:
    # The viewer operates another department: the one-statement path filters on the departments
    # the caller operates, which must not include this one.
    factories.MembershipFactory.create(user=viewer, department=support, role="operator")

    assert_error(post(client_for(viewer), "run", run_body(claimed)), 403, "permission_denied")

    claimed.refresh_from_db()
    assert claimed.task_id == ""


def test_an_archived_test_runs_no_replays(
    client_for: Any, operator: Any, claimed: TestInvocation
) -> None:
    client = client_for(operator)
    archived = post(client, "archive", {"test_ids": [str(claimed.test_id)]})
    assert archived.status_code == 200, archived.content

    assert_error(post(client, "run", run_body(claimed)), 409, "test_archived")

    claimed.refresh_from_db()
    assert claimed.task_id == ""
    assert claimed.status == TestInvocation.Status.CREATED


def test_a_staff_member_runs_any_departments_invocation(
    client_for: Any, staff: Any, claimed: TestInvocation
) -> None:
    response = post(client_for(staff), "run", run_body(claimed))

    assert response.status_code == 200, response.content
    claimed.refresh_from_db()
    assert claimed.task_id
