"""Concurrent claims on PostgreSQL: many agents calling next at once never share a run.

Real threads, each with its own database connection, call the API at the same moment (a barrier
releases them together). ``transactional_db`` so that every request really commits.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from tests import factories
from tests.api.lifecycle_support import started_test
from tests.conftest import require_service
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.test_state import lock_test

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CALLERS = 16


@pytest.fixture(autouse=True)
def _postgres_only(db: Any) -> None:
    if connection.vendor != "postgresql":
        require_service("PostgreSQL (set DATABASE_URL): SKIP LOCKED claims need it")


def call_next_concurrently(key: str, test_id: str, callers: int = CALLERS) -> list[Any]:
    barrier = threading.Barrier(callers)
    responses: list[Any] = [None] * callers

    def worker(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        try:
            barrier.wait(timeout=30)
            responses[index] = client.post(
                "/api/v5/artifacts/test/next", {"test_id": test_id}, format="json"
            )
        except Exception as error:  # reported below; a thread must not die silently
            responses[index] = error
        finally:
            connection.close()  # each thread opened its own connection

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not [r for r in responses if isinstance(r, Exception)], responses
    return responses


def start(operator: Any, *, entries: int, runs_per_entry: int = 1, infinite: bool = False) -> Any:
    research = operator.memberships.get().department
    benchmark = factories.make_benchmark(
        department=research, entries=entries, runs_per_entry=runs_per_entry, turns=1
    )
    return started_test(operator, benchmark, infinite_mode=infinite)


def assert_no_run_claimed_twice(test: Any) -> None:
    per_run = Counter(TestInvocation.objects.filter(test=test).values_list("run_id", flat=True))
    assert per_run
    assert set(per_run.values()) == {1}
    assert set(TestRun.objects.filter(pk__in=per_run).values_list("attempts", flat=True)) == {1}


def test_sixteen_callers_get_sixteen_distinct_runs(operator: Any) -> None:
    test = start(operator, entries=10, runs_per_entry=2)
    _, key = factories.make_api_key(operator)

    responses = call_next_concurrently(key, str(test.pk))

    assert [r.status_code for r in responses] == [200] * CALLERS
    bodies = [r.json() for r in responses]
    assert len({body["run_id"] for body in bodies}) == CALLERS
    assert len({body["invocation_id"] for body in bodies}) == CALLERS
    # The lowest ordinals went first: runs 1..16 are claimed, 17..20 still pending.
    assert sorted(body["current_run"] for body in bodies) == list(range(1, CALLERS + 1))
    assert set(
        TestRun.objects.filter(test=test, status=TestRun.Status.PENDING).values_list(
            "ordinal", flat=True
        )
    ) == {17, 18, 19, 20}
    assert_no_run_claimed_twice(test)
    test.refresh_from_db()
    assert test.status == Test.Status.RUNNING


def test_with_fewer_runs_than_callers_the_rest_get_409(operator: Any) -> None:
    test = start(operator, entries=5)
    _, key = factories.make_api_key(operator)

    responses = call_next_concurrently(key, str(test.pk))

    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 5, 409: CALLERS - 5}
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"test_completed"}
    claimed = [r.json()["run_id"] for r in responses if r.status_code == 200]
    assert len(set(claimed)) == 5
    assert not TestRun.objects.filter(test=test, status=TestRun.Status.PENDING).exists()
    assert TestInvocation.objects.filter(test=test).count() == 5
    assert_no_run_claimed_twice(test)


def test_infinite_mode_adds_cycles_without_duplicates(operator: Any) -> None:
    test = start(operator, entries=2, infinite=True)
    _, key = factories.make_api_key(operator)

    responses = call_next_concurrently(key, str(test.pk))

    assert [r.status_code for r in responses] == [200] * CALLERS
    assert len({r.json()["run_id"] for r in responses}) == CALLERS
    assert_no_run_claimed_twice(test)
    test.refresh_from_db()
    # One new cycle whenever a cycle ran out, never one per caller: 16 claims, 2 runs a cycle.
    assert test.cycle == CALLERS // 2
    assert test.total_runs == TestRun.objects.filter(test=test).count() == CALLERS
    cycles = Counter(TestRun.objects.filter(test=test).values_list("cycle", flat=True))
    assert cycles == dict.fromkeys(range(1, CALLERS // 2 + 1), 2)


def wait_for_a_lock_wait(timeout: float = 30) -> None:
    """Return once some other session of this database waits for a row lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Activity statistics are a snapshot per transaction; the caller is inside one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no claim waited for the test row lock")


@pytest.mark.parametrize("closing", ["stop", "archive"])
def test_a_stop_or_archive_committing_during_a_claim_wins(operator: Any, closing: str) -> None:
    # The claim reads the test as open, picks a run, then needs the test row, which the closing
    # transaction holds; once that commits, the claim must change nothing and answer 409.
    test = start(operator, entries=3)
    _, key = factories.make_api_key(operator)
    started = threading.Event()
    responses: list[Any] = []

    def claim() -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        started.set()
        try:
            responses.append(
                client.post("/api/v5/artifacts/test/next", {"test_id": str(test.pk)}, format="json")
            )
        finally:
            connection.close()

    with transaction.atomic():
        lock_test(test.pk)
        claimer = threading.Thread(target=claim)
        claimer.start()
        started.wait(timeout=10)
        wait_for_a_lock_wait()
        changes: dict[str, Any] = (
            {"status": Test.Status.STOPPED} if closing == "stop" else {"is_archived": True}
        )
        Test.objects.filter(pk=test.pk).update(**changes)
    claimer.join(timeout=30)

    assert not claimer.is_alive()
    [response] = responses
    assert response.status_code == 409
    assert response.json()["code"] == ("test_stopped" if closing == "stop" else "test_archived")
    assert not TestInvocation.objects.filter(test=test).exists()
    assert set(TestRun.objects.filter(test=test).values_list("status", "attempts")) == {
        (TestRun.Status.PENDING, 0)
    }
    test.refresh_from_db()
    assert test.current_invocation_id is None
    assert test.started_at is None
