"""POST /api/v5/artifacts/test/retry"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.lifecycle_support import (
    assert_error,
    claimed_invocation,
    force_invocation_status,
    post,
)
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.replay import fail_invocation

pytestmark = pytest.mark.django_db


def fail_next_run(operator: Any, test: Test) -> TestInvocation:
    """Claim the next run and let its target fail for good, as a replay would."""
    invocation = claimed_invocation(operator, test)
    TestRun.objects.filter(pk=invocation.run_id).update(status=TestRun.Status.RUNNING)
    force_invocation_status(invocation, TestInvocation.Status.RUNNING)
    assert fail_invocation(invocation_id=invocation.pk, error="The target answered 500.")
    return invocation


def test_it_works(client_for: Any, operator: Any, started: Test) -> None:
    failed = [fail_next_run(operator, started) for _ in range(2)]
    started.refresh_from_db()
    assert started.status == Test.Status.COMPLETED

    response = post(client_for(operator), "retry", {"test_id": str(started.pk)})

    assert response.status_code == 200, response.content
    assert response.json() == {"requeued_count": 2}
    started.refresh_from_db()
    assert (started.status, started.finished_at) == ("running", None)
    for invocation in failed:
        run = TestRun.objects.get(pk=invocation.run_id)
        assert (run.status, run.attempts) == ("pending", 0)
        # The failed attempt stays as history.
        invocation.refresh_from_db()
        assert (invocation.status, invocation.error) == ("failed", "The target answered 500.")
    # get shows the runs pending again and the failed invocations still listed.
    body = post(client_for(operator), "get", {"test_id": str(started.pk)}).json()
    assert body["status"] == "running"
    assert body["status_summary"]["by_status"]["pending"] == 2
    assert {item["status"] for item in body["invocations"]} == {"failed"}
    # And next claims one of them again.
    claimed = post(client_for(operator), "next", {"test_id": str(started.pk)}).json()
    assert claimed["run_id"] == str(failed[0].run_id)


def test_it_retries_stopped_runs_when_asked(client_for: Any, operator: Any, started: Test) -> None:
    # A stopped run in a test that is not stopped: stopped by hand while the test went on.
    stopped = claimed_invocation(operator, started)
    TestRun.objects.filter(pk=stopped.run_id).update(status=TestRun.Status.STOPPED)
    failed = fail_next_run(operator, started)
    client = client_for(operator)

    only_failed = post(client, "retry", {"test_id": str(started.pk), "statuses": ["failed"]})
    assert only_failed.json() == {"requeued_count": 1}
    assert TestRun.objects.get(pk=stopped.run_id).status == "stopped"
    assert TestRun.objects.get(pk=failed.run_id).status == "pending"

    both = post(client, "retry", {"test_id": str(started.pk), "statuses": ["failed", "stopped"]})
    assert both.json() == {"requeued_count": 1}
    assert TestRun.objects.get(pk=stopped.run_id).status == "pending"


def test_nothing_to_retry_is_zero(client_for: Any, operator: Any, started: Test) -> None:
    response = post(client_for(operator), "retry", {"test_id": str(started.pk)})
    assert response.json() == {"requeued_count": 0}
    started.refresh_from_db()
    assert started.status == Test.Status.PENDING


def test_a_stopped_test_is_409(client_for: Any, operator: Any, started: Test) -> None:
    failed = fail_next_run(operator, started)
    client = client_for(operator)
    post(client, "stop", {"invocation_id": str(claimed_invocation(operator, started).pk)})

    error = assert_error(post(client, "retry", {"test_id": str(started.pk)}), 409)

    assert error["code"] == "test_stopped"
    assert TestRun.objects.get(pk=failed.run_id).status == "failed"


def test_it_requires_credentials(client: Any, started: Test) -> None:
    response = client.post(
        "/api/v5/artifacts/test/retry",
        {"test_id": str(started.pk)},
        content_type="application/json",
    )
    assert_error(response, 401, "not_authenticated")


def test_it_validates_ownership(client_for: Any, outsider: Any, started: Test) -> None:
    assert_error(post(client_for(outsider), "retry", {"test_id": str(started.pk)}), 404)


def test_an_unknown_test_is_404(client_for: Any, operator: Any) -> None:
    response = post(client_for(operator), "retry", {"test_id": str(uuid.uuid4())})
    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_retry(client_for: Any, viewer: Any, operator: Any, started: Test) -> None:
    failed = fail_next_run(operator, started)
    response = post(client_for(viewer), "retry", {"test_id": str(started.pk)})
    assert_error(response, 403, "permission_denied")
    assert TestRun.objects.get(pk=failed.run_id).status == "failed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"test_id": "123"}, "test_id"),
        ({"statuses": []}, "statuses"),
        ({"statuses": ["completed"]}, "statuses"),
        ({"statuses": ["failed", "pending"]}, "statuses"),
        ({"statuses": "failed"}, "statuses"),
        ({"grade": True}, "grade"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, started: Test, body: dict[str, Any], field: str
) -> None:
    response = post(client_for(operator), "retry", {"test_id": str(started.pk), **body})
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]
