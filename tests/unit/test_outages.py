"""Outages of PostgreSQL or Redis: a 503 with the one error body instead of a 500, calls that
need only PostgreSQL working while Redis is down, and replays that retry a passing fault where
it happened instead of failing or calling the model again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from tests import factories
from tests.api.lifecycle_support import TEST_API, claimed_invocation, post, started_test
from tests_app.models import ReplayStep, TestInvocation
from tests_app.outages import until_it_works
from tests_app.services import replay
from tests_app.targets.reference import ReferenceTarget

pytestmark = pytest.mark.django_db


def failing(error: Exception) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


@pytest.mark.parametrize(
    "error", [OperationalError("server closed the connection"), RedisConnectionError("refused")]
)
def test_an_api_call_that_meets_an_outage_is_503_with_the_error_body(
    client_for: Any, operator: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr("tests_app.api.operations.search_tests", failing(error))

    response = post(client_for(operator), "search", {})

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert "try again" in body["detail"]


def test_a_page_that_meets_an_outage_is_503_not_a_traceback(
    operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client()
    client.force_login(operator)
    monkeypatch.setattr(
        "tests_app.selectors.search.search_tests", failing(OperationalError("the pool timed out"))
    )

    response = client.get("/tests/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert b"Briefly unavailable" in response.content


def test_with_redis_down_api_keys_are_read_from_postgresql_and_the_throttle_lets_calls_in(
    settings: Any, operator: Any, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every cache operation fails, as with Redis down.
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    settings.API_KEY_CACHE_SECONDS = 30
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"caller": "1/min"},
    }
    client = client_for(operator)

    first = client.post(f"{TEST_API}/search", {}, format="json")
    second = client.post(f"{TEST_API}/search", {}, format="json")

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["actor_name"] == "Olive Operator"
    assert "rate limit cannot count" in caplog.text


def test_an_operation_is_tried_again_until_the_outage_passes(settings: Any) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("terminating connection due to administrator command")
        return "done"

    assert until_it_works(flaky, what="A test") == "done"
    assert len(calls) == 3


def test_an_outage_longer_than_the_heartbeat_timeout_propagates(settings: Any) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 0.5

    with pytest.raises(RedisConnectionError):
        until_it_works(failing(RedisConnectionError("refused")), what="A test")


@pytest.fixture
def claimed(research: Any, staff: Any) -> TestInvocation:
    """A created invocation of a three-turn entry against the reference target."""
    benchmark = factories.make_benchmark(department=research, entries=1, turns=3)
    return claimed_invocation(staff, started_test(staff, benchmark))


def test_a_step_that_meets_a_passing_fault_is_written_again_and_the_replay_goes_on(
    claimed: TestInvocation,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    writes: list[int] = []
    write = replay._write_step

    def once_broken(step: ReplayStep, **kwargs: Any) -> Any:
        writes.append(step.turn)
        if writes.count(step.turn) == 1 and step.turn == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return write(step, **kwargs)

    monkeypatch.setattr(replay, "_write_step", once_broken)
    calls: list[str] = []
    complete = ReferenceTarget.complete

    def counted(self: Any, **kwargs: Any) -> Any:
        calls.append(str(kwargs["reference"]))
        return complete(self, **kwargs)

    monkeypatch.setattr(ReferenceTarget, "complete", counted)

    with django_capture_on_commit_callbacks(execute=True):
        replay.replay_invocation(invocation_id=claimed.pk)

    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.REPLAYED
    assert writes == [1, 2, 2, 3]
    # The model was asked once per turn: the retry wrote the answer it already had.
    assert calls == ["Answer 1.", "Answer 2.", "Answer 3."]
    assert list(
        ReplayStep.objects.filter(invocation=claimed)
        .order_by("turn")
        .values_list("turn", flat=True)
    ) == [1, 2, 3]


def test_a_step_whose_commit_was_lost_is_not_written_twice(
    claimed: TestInvocation,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    write = replay._write_step
    lost: list[int] = []

    def committed_but_unanswered(step: ReplayStep, **kwargs: Any) -> Any:
        if step.turn == 1 and not lost:
            lost.append(1)
            write(step, **kwargs)  # it committed; the answer never came back
            raise OperationalError("connection lost during COMMIT")
        if step.turn == 1:
            # The second attempt meets the first one's row.
            raise IntegrityError("duplicate key value violates unique constraint")
        return write(step, **kwargs)

    monkeypatch.setattr(replay, "_write_step", committed_but_unanswered)

    with django_capture_on_commit_callbacks(execute=True):
        replay.replay_invocation(invocation_id=claimed.pk)

    claimed.refresh_from_db()
    assert claimed.status == TestInvocation.Status.REPLAYED
    assert claimed.steps_count == 3
    assert ReplayStep.objects.filter(invocation=claimed).count() == 3
