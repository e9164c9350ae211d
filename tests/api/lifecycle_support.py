"""Helpers shared by the lifecycle endpoint tests: calling an action, checking error bodies, and
putting tests and invocations in the state a test starts from (conftest.py has the usual ones)."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from tests.factories import ReplayStepFactory
from tests_app.actors import CLIENT_AGENT, Actor
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.claiming import claim_next_run
from tests_app.services.starting import start_test

TEST_API = "/api/v5/artifacts/test"


def post(client: APIClient, action: str, body: Any) -> Any:
    return client.post(f"{TEST_API}/{action}", body, format="json")


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error body: a status, a sentence and a machine code (and fields on a 400)."""
    assert response.status_code == status, response.content
    body = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    assert isinstance(body["code"], str)
    if code is not None:
        assert body["code"] == code, body
    if status == 400 and body["code"] == "invalid":
        assert isinstance(body["fields"], dict)
    return body


def agent(user: Any) -> Actor:
    return Actor(user=user, client=CLIENT_AGENT)


def started_test(user: Any, benchmark: Any, *, infinite_mode: bool = False) -> Test:
    return start_test(actor=agent(user), benchmark_id=benchmark.pk, infinite_mode=infinite_mode)


def claimed_invocation(user: Any, test: Test) -> TestInvocation:
    return claim_next_run(actor=agent(user), test_id=test.pk).invocation


def force_invocation_status(invocation: TestInvocation, status: str) -> None:
    """Put an invocation in a state another service (the replay) would have moved it to.

    Tests of end and stop need a replayed or running invocation without running the replay.
    """
    TestInvocation.objects.filter(pk=invocation.pk).update(status=status)
    invocation.refresh_from_db()


def mark_replayed(invocation: TestInvocation) -> TestInvocation:
    """A claimed invocation where the replay leaves it: invocation replayed, run running, a step."""
    TestRun.objects.filter(pk=invocation.run_id).update(status=TestRun.Status.RUNNING)
    ReplayStepFactory(invocation=invocation, turn=1)
    force_invocation_status(invocation, TestInvocation.Status.REPLAYED)
    return invocation


def invocation_ids(invocation: TestInvocation) -> dict[str, str]:
    """The id triple that run and end take, as the reference page names it."""
    return {
        "test_id": str(invocation.test_id),
        "test_invocation_id": str(invocation.pk),
        "run_id": str(invocation.run_id),
    }


# The 11 operations of the Test API reference and the added ones, by the names docs and the
# OpenAPI schema use.
TEST_OPERATIONS = [
    "get",
    "archive",
    "refresh",
    "export",
    "docs",
    "start",
    "next",
    "run",
    "end",
    "stop",
    "search",
    "compare",
    "run_all",
    "retry",
]
