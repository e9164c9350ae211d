"""The asyncio replay engine (tests_app.services.replay_async), the path of a Celery worker.

Its statements run on their own connections from the process's event loop, so these tests commit
(``transaction=True``) and read the events from the channel layer the loop sends them to.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import OperationalError, connection

from tests.fake_openai import FakeOpenAI, Messages, Reply, serve
from tests.unit.test_replay import (
    THIRD_TURN_AUTOREGRESSIVE,
    claimed_invocation,
    openai_target,
    steps_of,
    stop_invocation_when,
)
from tests_app import tasks
from tests_app.models import ReplayStep, Test, TestInvocation, TestRun
from tests_app.realtime.events import group_name
from tests_app.services import replay_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module", autouse=True)
def _close_the_loops_pool() -> Iterator[None]:
    # Its connections would keep the test database from being dropped at the end.
    yield
    replay_async.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from serve()


class LayerEvents:
    """The events of one test's group as the consumers would receive them."""

    def __init__(self, test_id: Any) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group_name(test_id), self.channel)

    def drain(self, count: int, *, then_quiet_s: float = 0.0) -> list[dict[str, Any]]:
        """The next ``count`` events; with ``then_quiet_s``, also that no other one follows."""

        async def receive() -> list[dict[str, Any]]:
            received = []
            for _ in range(count):
                message = await asyncio.wait_for(self.layer.receive(self.channel), 5)
                received.append(message["event"])
            if then_quiet_s:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(self.layer.receive(self.channel), then_quiet_s)
            return received

        return async_to_sync(receive)()


def replay(invocation: TestInvocation) -> TestInvocation:
    replay_async.replay_invocation(invocation_id=invocation.pk)
    invocation.refresh_from_db()
    return invocation


def test_the_engine_is_the_workers_on_postgresql_with_redis(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.REPLAY_ENGINE = "asyncio"
    assert replay_async.enabled() is (connection.vendor == "postgresql")
    settings.REPLAY_ENGINE = "threads"
    assert replay_async.enabled() is False
    settings.REPLAY_ENGINE = "asyncio"
    settings.REDIS_URL = ""
    assert replay_async.enabled() is False


def test_an_eager_task_stays_on_its_thread(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite's and the embedded runtime's tasks run eagerly inside a transaction that the
    # loop's own connections could not see.
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.REPLAY_ENGINE = "asyncio"
    called: list[str] = []
    monkeypatch.setattr(
        replay_async, "replay_invocation", lambda **kwargs: called.append("asyncio")
    )
    monkeypatch.setattr(
        tasks.replay_service, "replay_invocation", lambda **kwargs: called.append("threads")
    )
    tasks.replay_invocation.apply(args=["00000000-0000-0000-0000-000000000000"])
    assert called == ["threads"]


def test_it_replays_autoregressively_and_sends_each_event_in_order(
    fake_openai: FakeOpenAI,
) -> None:
    invocation = claimed_invocation(target=openai_target(fake_openai))
    listener = LayerEvents(invocation.test_id)
    seq_before = Test.objects.get(pk=invocation.test_id).event_seq

    invocation = replay(invocation)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert (invocation.steps_count, invocation.run.status) == (3, TestRun.Status.RUNNING)
    assert invocation.started_at is not None
    assert invocation.heartbeat_at is not None
    assert steps_of(invocation) == [
        (1, "Question 1?", "Echo: Question 1?", "Answer 1."),
        (2, "Question 2?", "Echo: Question 2?", "Answer 2."),
        (3, "Question 3?", "Echo: Question 3?", "Answer 3."),
    ]
    step = ReplayStep.objects.get(invocation=invocation, turn=3)
    assert (step.prompt_tokens, step.completion_tokens) == (17, 3)
    assert fake_openai.chat_requests()[2]["messages"] == THIRD_TURN_AUTOREGRESSIVE
    received = listener.drain(5)
    assert [event["type"] for event in received] == [
        "run.started",
        "run.step",
        "run.step",
        "run.step",
        "run.completed",
    ]
    assert [event["seq"] for event in received] == list(range(seq_before + 1, seq_before + 6))
    assert Test.objects.get(pk=invocation.test_id).event_seq == seq_before + 5
    assert [(e["turn"], e["total_turns"], e["output"]) for e in received[1:4]] == [
        (1, 3, "Echo: Question 1?"),
        (2, 3, "Echo: Question 2?"),
        (3, 3, "Echo: Question 3?"),
    ]
    assert {event["invocation_id"] for event in received} == {str(invocation.pk)}
    assert received[4]["status"] == TestInvocation.Status.REPLAYED


def test_a_429_is_retried_by_the_async_client(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(status=429))
    invocation = replay(claimed_invocation(target=openai_target(fake_openai), turns=2))

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert len(fake_openai.chat_requests()) == 3
    assert invocation.steps_count == 2


@pytest.mark.timeout(60)
def test_a_target_that_keeps_failing_fails_the_invocation_its_run_and_the_test(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(Reply(), Reply(hang=True), Reply(hang=True))
    invocation = claimed_invocation(
        target=openai_target(fake_openai, timeout_s=0.5, max_retries=1), turns=3
    )
    listener = LayerEvents(invocation.test_id)

    invocation = replay(invocation)

    assert invocation.status == TestInvocation.Status.FAILED
    assert "did not answer within 0.5 s (2 attempts)" in invocation.error
    assert [turn for turn, *_ in steps_of(invocation)] == [1]
    assert TestRun.objects.get(pk=invocation.run_id).status == TestRun.Status.FAILED
    assert Test.objects.get(pk=invocation.test_id).status == Test.Status.COMPLETED
    received = listener.drain(4)
    assert [event["type"] for event in received] == [
        "run.started",
        "run.step",
        "run.failed",
        "test.completed",
    ]
    assert received[2]["error"] == invocation.error


def test_a_500_forever_and_a_bad_target_fail_with_their_reasons(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(*[Reply(status=500)] * 10)
    failing = replay(claimed_invocation(target=openai_target(fake_openai, max_retries=2)))
    malformed = replay(claimed_invocation(target={"kind": "openai"}))

    assert failing.status == TestInvocation.Status.FAILED
    assert "HTTP 500" in failing.error
    assert len(fake_openai.chat_requests()) == 3
    assert malformed.status == TestInvocation.Status.FAILED
    assert "model" in malformed.error
    assert not ReplayStep.objects.exists()


def test_a_second_delivery_and_a_missing_invocation_do_nothing(fake_openai: FakeOpenAI) -> None:
    invocation = replay(claimed_invocation(target=openai_target(fake_openai), turns=2))
    invocation = replay(invocation)
    replay_async.replay_invocation(invocation_id="00000000-0000-0000-0000-000000000000")

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert len(fake_openai.chat_requests()) == 2
    assert ReplayStep.objects.filter(invocation=invocation).count() == 2


def test_a_stop_during_a_call_writes_no_step_for_it(fake_openai: FakeOpenAI) -> None:
    invocation = claimed_invocation(target=openai_target(fake_openai), turns=3)
    listener = LayerEvents(invocation.test_id)
    fake_openai.answer = stop_invocation_when(invocation.pk, "Question 2?")

    invocation = replay(invocation)

    assert invocation.status == TestInvocation.Status.STOPPED
    assert invocation.steps_count == 1
    assert [turn for turn, *_ in steps_of(invocation)] == [1]
    assert len(fake_openai.chat_requests()) == 2
    received = listener.drain(2, then_quiet_s=0.5)
    assert [event["type"] for event in received] == ["run.started", "run.step"]


def test_a_stop_during_the_last_call_leaves_the_invocation_stopped(
    fake_openai: FakeOpenAI,
) -> None:
    # The last step would also finish the invocation: stopped first, it does neither.
    invocation = claimed_invocation(target=openai_target(fake_openai), turns=2)
    listener = LayerEvents(invocation.test_id)
    fake_openai.answer = stop_invocation_when(invocation.pk, "Question 2?")

    invocation = replay(invocation)

    assert invocation.status == TestInvocation.Status.STOPPED
    assert [turn for turn, *_ in steps_of(invocation)] == [1]
    received = listener.drain(2, then_quiet_s=0.5)
    assert [event["type"] for event in received] == ["run.started", "run.step"]


def test_an_entry_without_user_turns_is_replayed_at_once(fake_openai: FakeOpenAI) -> None:
    invocation = claimed_invocation(
        target=openai_target(fake_openai),
        messages=[{"role": "system", "content": "Nothing to ask."}],
    )
    listener = LayerEvents(invocation.test_id)
    seq_before = Test.objects.get(pk=invocation.test_id).event_seq

    invocation = replay(invocation)

    assert (invocation.status, invocation.steps_count) == (TestInvocation.Status.REPLAYED, 0)
    assert fake_openai.chat_requests() == []
    received = listener.drain(2)
    assert [(event["type"], event["seq"]) for event in received] == [
        ("run.started", seq_before + 1),
        ("run.completed", seq_before + 2),
    ]


def test_the_heartbeat_moves_during_a_long_call(fake_openai: FakeOpenAI, settings: Any) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 0.8
    invocation = claimed_invocation(target=openai_target(fake_openai), turns=1)
    seen: list[Any] = []

    def answer(messages: Messages) -> str:
        seen.append(
            TestInvocation.objects.values_list("started_at", "heartbeat_at").get(pk=invocation.pk)
        )
        connection.close()
        return "late answer"

    fake_openai.answer = answer
    fake_openai.delay_s = 1.5

    invocation = replay(invocation)

    [(started_at, heartbeat_at)] = seen
    assert heartbeat_at > started_at
    assert invocation.status == TestInvocation.Status.REPLAYED


def test_replays_of_many_threads_share_the_loop(fake_openai: FakeOpenAI) -> None:
    # What the worker's pool does: several threads hand their replays over at once.
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def answer(messages: Messages) -> str:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.2)
        with lock:
            in_flight[0] -= 1
        return "ok"

    fake_openai.answer = answer
    invocations = [claimed_invocation(target=openai_target(fake_openai), turns=2) for _ in range(6)]
    threads = [
        threading.Thread(target=replay_async.replay_invocation, kwargs={"invocation_id": i.pk})
        for i in invocations
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # The model calls of different replays overlapped on the one loop.
    assert in_flight[1] >= 2
    statuses = TestInvocation.objects.filter(pk__in=[i.pk for i in invocations]).values_list(
        "status", "steps_count"
    )
    assert sorted(statuses) == [(TestInvocation.Status.REPLAYED, 2)] * 6


def test_a_database_error_before_the_claim_is_the_tasks_to_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invocation = claimed_invocation(turns=1)
    # The loop's pool connects with these arguments: a port nobody listens on.
    real = replay_async._pool_kwargs

    def unreachable(database: Any) -> tuple[dict[str, Any], int]:
        kwargs, size = real(database)
        return {**kwargs, "port": 9, "connect_timeout": 1}, size

    monkeypatch.setattr(replay_async, "_pool_kwargs", unreachable)
    monkeypatch.setattr(replay_async, "_pools", {})
    monkeypatch.setattr(replay_async, "POOL_TIMEOUT_S", 1.0)
    with pytest.raises(OperationalError):
        replay_async.replay_invocation(invocation_id=invocation.pk)

    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.CREATED


def test_the_loops_connections_prepare_their_statements_unless_told_not_to(settings: Any) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = True
    kwargs, _ = replay_async._pool_kwargs(connection)
    assert kwargs["prepare_threshold"] == replay_async.PREPARE_THRESHOLD
    assert kwargs["autocommit"] is True
    assert "cursor_factory" not in kwargs
    settings.DATABASE_PREPARED_STATEMENTS = False
    kwargs, _ = replay_async._pool_kwargs(connection)
    # Django's own choice for its connections: never prepare.
    assert kwargs["prepare_threshold"] is None
