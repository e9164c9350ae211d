"""An agent with only a key runs a benchmark end to end through the API (issue 3 acceptance).

Background work runs with the ``sync`` backend: the replay and the grade run in the on-commit
callback of the request that enqueued them. The test uses ``transactional_db`` so that requests
really commit and on-commit callbacks fire as they do in production.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import assert_error, post
from tests_app.models import Grade, ReplayStep, Test, TestInvocation, TestRun

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_replayed(client: Any, test_id: str, invocation_id: str) -> dict[str, Any]:
    """Poll get, as an agent would, until the invocation has left created/running."""
    deadline = time.monotonic() + 30
    while True:
        body = post(client, "get", {"test_id": test_id}).json()
        invocation = next(item for item in body["invocations"] if item["id"] == invocation_id)
        if invocation["status"] not in {"created", "running"}:
            return invocation
        assert time.monotonic() < deadline, f"invocation still {invocation['status']}"
        time.sleep(0.05)


def test_an_agent_runs_a_benchmark_to_completion(client_for: Any, operator: Any) -> None:
    research = operator.memberships.get().department
    factories.make_benchmark(
        department=research, entries=3, turns=2, runs_per_entry=2, name="Demo support chats"
    )
    client = client_for(operator)

    found = client.post(
        "/api/v5/artifacts/benchmark/search", {"search": "demo"}, format="json"
    ).json()
    assert found["total_count"] == 1
    benchmark = found["benchmarks"][0]
    test_id = post(client, "start", {"benchmark_id": benchmark["id"]}).json()["test_id"]

    ended: list[dict[str, Any]] = []
    while True:
        claim = post(client, "next", {"test_id": test_id})
        if claim.status_code == 409:
            assert_error(claim, 409, "test_completed")
            break
        claim_body = claim.json()
        assert claim_body["total_runs"] == benchmark["entries"] * benchmark["runs_per_entry"]
        ids = {
            "test_id": test_id,
            "test_invocation_id": claim_body["invocation_id"],
            "run_id": claim_body["run_id"],
        }
        run = post(client, "run", ids)
        assert run.json()["invocation_id"] == claim_body["invocation_id"]

        replayed = wait_until_replayed(client, test_id, claim_body["invocation_id"])
        assert replayed["status"] == "replayed"
        assert replayed["steps_count"] == 2

        # The first run asks the judge; the others grade themselves.
        grading: dict[str, Any] = (
            {"grade": True} if not ended else {"score": claim_body["current_run"] / 6}
        )
        end = post(client, "end", ids | grading).json()
        ended.append(end | {"run_id": claim_body["run_id"]})

    assert len(ended) == 6
    test = Test.objects.get(pk=test_id)
    assert test.status == Test.Status.COMPLETED
    assert test.completed_runs == 6
    assert test.graded_runs == 6
    assert not TestRun.objects.filter(test=test).exclude(status=TestRun.Status.COMPLETED).exists()
    assert ReplayStep.objects.filter(invocation__test=test).count() == 12

    body = post(client, "get", {"test_id": test_id}).json()
    assert body["status"] == "completed"
    assert body["show_controls"] is False
    assert body["current_invocation_id"] is None
    assert body["status_summary"]["by_status"]["completed"] == 6
    assert body["status_summary"]["progress"] == 1.0
    assert body["status_summary"]["graded"] == 6
    judged = next(item for item in body["invocations"] if item["id"] == ended[0]["invocation_id"])
    assert ended[0]["grade_id"] is not None
    assert ended[0]["score"] is None
    # No judge model is configured: the grade comes from the offline reference grader, which
    # finds the reference target's answers identical to the recorded ones.
    assert judged["grade"]["id"] == ended[0]["grade_id"]
    assert judged["grade"]["source"] == "reference"
    assert judged["grade"]["status"] == "done"
    assert judged["grade"]["score"] == 1.0
    assert Grade.objects.filter(invocation__test=test, source="agent").count() == 5
    assert TestInvocation.objects.filter(test=test, status="ended").count() == 6

    assert_error(post(client, "next", {"test_id": test_id}), 409, "test_completed")


def test_stop_ends_the_flow(client_for: Any, operator: Any) -> None:
    research = operator.memberships.get().department
    benchmark = factories.make_benchmark(department=research, entries=2)
    client = client_for(operator)
    test_id = post(client, "start", {"benchmark_id": str(benchmark.pk)}).json()["test_id"]
    claim = post(client, "next", {"test_id": test_id}).json()

    stopped = post(client, "stop", {"invocation_id": claim["invocation_id"]}).json()
    run = post(
        client,
        "run",
        {
            "test_id": test_id,
            "test_invocation_id": claim["invocation_id"],
            "run_id": claim["run_id"],
        },
    )

    assert stopped["success"] is True
    assert_error(run, 409, "invocation_stopped")
    assert_error(post(client, "next", {"test_id": test_id}), 409, "test_stopped")
    assert post(client, "get", {"test_id": test_id}).json()["status"] == "stopped"
