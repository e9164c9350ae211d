"""POST /api/v5/artifacts/test/stop"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.api.lifecycle_support import (
    assert_error,
    force_invocation_status,
    post,
)
from tests_app.models import Test, TestInvocation, TestRun

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "status",
    [
        TestInvocation.Status.CREATED,
        TestInvocation.Status.RUNNING,
        TestInvocation.Status.REPLAYED,
    ],
)
def test_it_stops_the_invocation_its_run_and_its_test(
    client_for: Any, operator: Any, started: Test, claimed: TestInvocation, status: str
) -> None:
    force_invocation_status(claimed, status)

    response = post(client_for(operator), "stop", {"invocation_id": str(claimed.pk)})

    assert response.status_code == 200
    body = response.json()
    assert body["invocation_id"] == str(claimed.pk)
    assert body["success"] is True
    assert "stopped" in body["message"]
    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.STOPPED
    assert claimed.stop_requested is True
    assert claimed.ended_at is not None
    assert TestRun.objects.get(pk=claimed.run_id).status == TestRun.Status.STOPPED
    started.refresh_from_db()
    assert started.status == Test.Status.STOPPED
    assert started.finished_at is not None
    assert started.current_invocation_id is None
    # The other run is untouched, but the stopped test hands out no more work.
    assert started.runs.filter(status=TestRun.Status.PENDING).count() == 1
    assert_error(
        post(client_for(operator), "next", {"test_id": str(started.pk)}), 409, "test_stopped"
    )


def test_it_publishes_run_stopped_and_test_stopped(
    client_for: Any,
    operator: Any,
    claimed: TestInvocation,
    django_capture_on_commit_callbacks: Any,
    events: list[dict[str, Any]],
) -> None:
    sent = events

    with django_capture_on_commit_callbacks(execute=True):
        post(client_for(operator), "stop", {"invocation_id": str(claimed.pk)})

    assert [event["event_type"] for event in sent] == ["run.stopped", "test.stopped"]
    assert sent[0]["invocation_id"] == claimed.pk
    assert sent[0]["run_id"] == claimed.run_id


@pytest.mark.parametrize(
    "status",
    [TestInvocation.Status.ENDED, TestInvocation.Status.FAILED, TestInvocation.Status.STOPPED],
)
def test_stopping_something_finished_is_not_an_error(
    client_for: Any, operator: Any, started: Test, claimed: TestInvocation, status: str
) -> None:
    force_invocation_status(claimed, status)

    response = post(client_for(operator), "stop", {"invocation_id": str(claimed.pk)})

    assert response.status_code == 200
    assert response.json() == {
        "invocation_id": str(claimed.pk),
        "success": False,
        "message": f"The invocation is already {status}; there is nothing to stop.",
    }
    claimed.refresh_from_db()
    assert claimed.stop_requested is False
    started.refresh_from_db()
    assert started.status == Test.Status.RUNNING


def test_stopping_twice_answers_success_false(
    client_for: Any, operator: Any, claimed: TestInvocation
) -> None:
    client = client_for(operator)

    first = post(client, "stop", {"invocation_id": str(claimed.pk)}).json()
    second = post(client, "stop", {"invocation_id": str(claimed.pk)}).json()

    assert (first["success"], second["success"]) == (True, False)
    assert "already stopped" in second["message"]


def test_it_requires_credentials(client: Any, claimed: TestInvocation) -> None:
    response = client.post(
        "/api/v5/artifacts/test/stop",
        {"invocation_id": str(claimed.pk)},
        content_type="application/json",
    )

    assert_error(response, 401, "not_authenticated")


def test_it_validates_ownership(client_for: Any, outsider: Any, claimed: TestInvocation) -> None:
    response = post(client_for(outsider), "stop", {"invocation_id": str(claimed.pk)})

    assert_error(response, 404, "not_found")
    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.CREATED


def test_an_unknown_invocation_is_404(client_for: Any, operator: Any) -> None:
    response = post(client_for(operator), "stop", {"invocation_id": str(uuid.uuid4())})

    assert_error(response, 404, "not_found")


def test_a_viewer_cannot_stop(client_for: Any, viewer: Any, claimed: TestInvocation) -> None:
    response = post(client_for(viewer), "stop", {"invocation_id": str(claimed.pk)})

    assert_error(response, 403, "permission_denied")
    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.CREATED
    assert claimed.stop_requested is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "invocation_id"),
        ({"invocation_id": "123"}, "invocation_id"),
        ({"invocation_id": str(uuid.UUID(int=5)), "test_id": str(uuid.UUID(int=6))}, "test_id"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, body: dict[str, Any], field: str
) -> None:
    error = assert_error(post(client_for(operator), "stop", body), 400, "invalid")

    assert field in error["fields"]
