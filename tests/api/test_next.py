"""POST /api/v5/artifacts/test/next"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection

from tests import factories
from tests.api.lifecycle_support import agent, assert_error, post, started_test
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.archiving import set_archived

pytestmark = pytest.mark.django_db


def test_it_claims_the_lowest_pending_run(client_for: Any, operator: Any, started: Test) -> None:
    first = started.runs.get(ordinal=1)

    response = post(client_for(operator), "next", {"test_id": str(started.pk)})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"invocation_id", "run_id", "current_run", "total_runs", "cycle"}
    assert body["run_id"] == str(first.pk)
    assert body["current_run"] == 1
    assert body["total_runs"] == 2
    assert body["cycle"] == 1
    invocation = TestInvocation.objects.get(pk=body["invocation_id"])
    assert invocation.status == TestInvocation.Status.CREATED
    assert invocation.run_id == first.pk
    assert invocation.test_id == started.pk
    assert invocation.client == "agent"
    assert invocation.actor == operator
    assert invocation.task_id == ""
    first.refresh_from_db()
    assert first.status == TestRun.Status.CLAIMED
    assert first.attempts == 1
    assert first.latest_invocation_id == invocation.pk
    started.refresh_from_db()
    assert started.status == Test.Status.RUNNING
    assert started.started_at is not None
    assert started.current_invocation_id == invocation.pk
    assert started.runs.get(ordinal=2).status == TestRun.Status.PENDING


def test_the_second_call_claims_the_next_run(client_for: Any, operator: Any, started: Test) -> None:
    client = client_for(operator, mcp=True)

    first = post(client, "next", {"test_id": str(started.pk)}).json()
    started.refresh_from_db()
    started_at = started.started_at
    second = post(client, "next", {"test_id": str(started.pk)}).json()

    assert (first["current_run"], second["current_run"]) == (1, 2)
    assert first["run_id"] != second["run_id"]
    assert TestInvocation.objects.get(pk=second["invocation_id"]).client == "mcp"
    started.refresh_from_db()
    assert started.started_at == started_at  # only the first claim starts the test
    assert started.current_invocation_id == uuid.UUID(second["invocation_id"])


def test_no_pending_run_is_409_completed(client_for: Any, operator: Any, started: Test) -> None:
    client = client_for(operator)
    post(client, "next", {"test_id": str(started.pk)})
    post(client, "next", {"test_id": str(started.pk)})

    response = post(client, "next", {"test_id": str(started.pk)})

    body = assert_error(response, 409, "test_completed")
    # Both runs are claimed, not finished: the sentence says so, and that they may come back.
    assert body["detail"].startswith("No run is pending: 2 runs are still claimed or running")
    assert "comes back to pending" in body["detail"]
    assert TestInvocation.objects.filter(test=started).count() == 2


def test_no_pending_run_with_every_run_finished_says_so(
    client_for: Any, operator: Any, started: Test
) -> None:
    client = client_for(operator)
    post(client, "next", {"test_id": str(started.pk)})
    post(client, "next", {"test_id": str(started.pk)})
    TestRun.objects.filter(test=started).update(status=TestRun.Status.FAILED)

    response = post(client, "next", {"test_id": str(started.pk)})

    body = assert_error(response, 409, "test_completed")
    assert body["detail"] == "The test is completed for claiming: every run has finished."


def test_a_completed_test_is_409(client_for: Any, operator: Any, started: Test) -> None:
    Test.objects.filter(pk=started.pk).update(status=Test.Status.COMPLETED)

    response = post(client_for(operator), "next", {"test_id": str(started.pk)})

    body = assert_error(response, 409, "test_completed")
    assert "completed" in body["detail"]
    assert not TestInvocation.objects.exists()


def test_infinite_mode_starts_the_next_cycle(
    client_for: Any, operator: Any, benchmark: Any
) -> None:
    test = started_test(operator, benchmark, infinite_mode=True)
    client = client_for(operator)
    claims = [post(client, "next", {"test_id": str(test.pk)}).json() for _ in range(5)]

    assert [(c["cycle"], c["current_run"], c["total_runs"]) for c in claims] == [
        (1, 1, 2),
        (1, 2, 2),
        (2, 1, 2),
        (2, 2, 2),
        (3, 1, 2),
    ]
    test.refresh_from_db()
    assert test.cycle == 3
    assert test.total_runs == 6
    assert test.runs.count() == 6
    assert test.runs.filter(cycle=3, status=TestRun.Status.PENDING).count() == 1
    assert len({c["run_id"] for c in claims}) == 5


def test_a_run_put_back_to_pending_is_claimed_again(
    client_for: Any, operator: Any, started: Test
) -> None:
    # The reaper puts a run whose worker died back to pending; next hands it out again.
    client = client_for(operator)
    first = post(client, "next", {"test_id": str(started.pk)}).json()
    TestRun.objects.filter(pk=first["run_id"]).update(status=TestRun.Status.PENDING)

    again = post(client, "next", {"test_id": str(started.pk)}).json()

    assert again["run_id"] == first["run_id"]
    assert again["invocation_id"] != first["invocation_id"]
    run = TestRun.objects.get(pk=first["run_id"])
    assert run.attempts == 2
    assert str(run.latest_invocation_id) == again["invocation_id"]


def test_a_stopped_test_is_409(client_for: Any, operator: Any, started: Test) -> None:
    Test.objects.filter(pk=started.pk).update(status=Test.Status.STOPPED)

    response = post(client_for(operator), "next", {"test_id": str(started.pk)})

    body = assert_error(response, 409, "test_stopped")
    assert "stopped" in body["detail"]
    assert started.runs.filter(status=TestRun.Status.PENDING).count() == 2


def test_an_archived_test_is_409(client_for: Any, operator: Any, started: Test) -> None:
    set_archived(actor=agent(operator), test_ids=[started.pk], archived=True)

    response = post(client_for(operator), "next", {"test_id": str(started.pk)})

    body = assert_error(response, 409, "test_archived")
    assert "archived" in body["detail"]
    assert not TestInvocation.objects.exists()


def test_it_requires_credentials(client: Any, started: Test) -> None:
    response = client.post(
        "/api/v5/artifacts/test/next", {"test_id": str(started.pk)}, content_type="application/json"
    )

    assert_error(response, 401, "not_authenticated")
    assert not TestInvocation.objects.exists()


def test_it_validates_ownership(client_for: Any, outsider: Any, started: Test) -> None:
    response = post(client_for(outsider), "next", {"test_id": str(started.pk)})

    assert_error(response, 404, "not_found")
    assert not TestInvocation.objects.exists()


def test_an_unknown_test_is_404(client_for: Any, operator: Any) -> None:
    assert_error(post(client_for(operator), "next", {"test_id": str(uuid.uuid4())}), 404)


def test_a_viewer_cannot_claim(client_for: Any, viewer: Any, started: Test) -> None:
    response = post(client_for(viewer), "next", {"test_id": str(started.pk)})

    assert_error(response, 403, "permission_denied")
    assert not TestInvocation.objects.exists()
    assert started.runs.filter(status=TestRun.Status.PENDING).count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "test_id"),
        ({"test_id": "nope"}, "test_id"),
        ({"test_id": str(uuid.UUID(int=1)), "cycle": 2}, "cycle"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, body: dict[str, Any], field: str
) -> None:
    error = assert_error(post(client_for(operator), "next", body), 400, "invalid")
    assert field in error["fields"]


def test_staff_sees_other_departments(client_for: Any, staff: Any, support: Any) -> None:
    benchmark = factories.make_benchmark(department=support, entries=1)
    test = started_test(staff, benchmark)

    response = post(client_for(staff), "next", {"test_id": str(test.pk)})

    assert response.status_code == 200
    assert TestInvocation.objects.get(pk=response.json()["invocation_id"]).actor == staff


def test_a_claim_is_one_statement_after_authentication(
    client_for: Any, operator: Any, started: Test, django_assert_max_num_queries: Any
) -> None:
    # On PostgreSQL the pick, the test row, the run and the invocation are one statement, so
    # concurrent claimers never hold the test row lock while Python runs between statements.
    client = client_for(operator)
    post(client, "next", {"test_id": str(started.pk)})  # warm up: the key's last_used_at is written

    # The key, the caller's memberships, then the claim (more statements on other databases).
    with django_assert_max_num_queries(3 if connection.vendor == "postgresql" else 12):
        body = post(client, "next", {"test_id": str(started.pk)}).json()

    assert body["current_run"] == 2
    assert body["total_runs"] == 2
    run = TestRun.objects.get(pk=body["run_id"])
    assert (run.status, run.attempts, str(run.latest_invocation_id)) == (
        TestRun.Status.CLAIMED,
        1,
        body["invocation_id"],
    )
    assert str(Test.objects.get(pk=started.pk).current_invocation_id) == body["invocation_id"]


def test_the_run_count_is_that_of_the_claimed_runs_cycle(
    client_for: Any, operator: Any, research: Any
) -> None:
    # A run of an older cycle put back to pending reports its own cycle's size, even after
    # entries were added to the benchmark for later cycles.
    benchmark = factories.make_benchmark(department=research, entries=2)
    test = started_test(operator, benchmark, infinite_mode=True)
    client = client_for(operator)
    first = post(client, "next", {"test_id": str(test.pk)}).json()
    post(client, "next", {"test_id": str(test.pk)})
    factories.BenchmarkEntryFactory.create(benchmark=benchmark, position=3)
    third = post(client, "next", {"test_id": str(test.pk)}).json()  # opens cycle 2 of 3 runs
    TestRun.objects.filter(pk=first["run_id"]).update(status=TestRun.Status.PENDING)

    again = post(client, "next", {"test_id": str(test.pk)}).json()

    assert (third["cycle"], third["current_run"], third["total_runs"]) == (2, 1, 3)
    assert (again["run_id"], again["cycle"], again["total_runs"]) == (first["run_id"], 1, 2)


def test_a_viewer_claim_changes_nothing(client_for: Any, viewer: Any, started: Test) -> None:
    # The claim statement itself refuses a caller who may not operate the test: no run is
    # locked or marked, and the test row keeps its state.
    assert_error(post(client_for(viewer), "next", {"test_id": str(started.pk)}), 403)

    started.refresh_from_db()
    assert (started.status, started.started_at, started.current_invocation_id) == (
        "pending",
        None,
        None,
    )
    assert set(started.runs.values_list("status", "attempts")) == {(TestRun.Status.PENDING, 0)}
