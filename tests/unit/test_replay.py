"""The replay service against a real loopback OpenAI-compatible server and the reference target."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests import factories
from tests.fake_model import FakeModel, Messages, Reply
from tests_app.models import Benchmark, ReplayStep, Test, TestInvocation, TestRun
from tests_app.services import replay as replay_service
from tests_app.services.heartbeats import Heartbeats
from tests_app.services.replay import plan_turns, replay_invocation
from tests_app.targets import TargetReply

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# What the third turn of an auto-regressive replay against the echoing fake sends.
THIRD_TURN_AUTOREGRESSIVE = [
    SYSTEM,
    {"role": "user", "content": "Question 1?"},
    {"role": "assistant", "content": "Echo: Question 1?"},
    {"role": "user", "content": "Question 2?"},
    {"role": "assistant", "content": "Echo: Question 2?"},
    {"role": "user", "content": "Question 3?"},
]


def claimed_invocation(
    *,
    target: dict[str, Any] | None = None,
    replay_mode: str = Benchmark.ReplayMode.AUTOREGRESSIVE,
    turns: int = 3,
    messages: list[dict[str, Any]] | None = None,
) -> TestInvocation:
    """What `next` leaves behind: a running test, a claimed run, a created invocation."""
    department = factories.DepartmentFactory.create()
    benchmark = factories.make_benchmark(
        department=department,
        entries=0,
        target=target or {"kind": "reference"},
        replay_mode=replay_mode,
    )
    entry = factories.BenchmarkEntryFactory.create(
        benchmark=benchmark, position=1, messages=messages or factories.conversation(turns)
    )
    test = factories.TestFactory.create(
        benchmark=benchmark, status=Test.Status.RUNNING, started_at=timezone.now(), total_runs=1
    )
    run = factories.TestRunFactory.create(
        test=test, entry=entry, ordinal=1, status=TestRun.Status.CLAIMED, attempts=1
    )
    invocation = factories.TestInvocationFactory.create(run=run, test=test)
    TestRun.objects.filter(pk=run.pk).update(latest_invocation=invocation)
    Test.objects.filter(pk=test.pk).update(current_invocation=invocation)
    return invocation


def openai_target(server: FakeModel, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "openai",
        "model": "fake-model",
        "base_url": server.base_url,
        "timeout_s": 5,
        "max_retries": 2,
        **overrides,
    }


def replay(invocation: TestInvocation, capture: Callable[..., Any]) -> TestInvocation:
    with capture(execute=True):
        replay_invocation(invocation_id=invocation.pk)
    invocation.refresh_from_db()
    return invocation


def steps_of(invocation: TestInvocation) -> list[tuple[int, str, str, str | None]]:
    return list(
        ReplayStep.objects.filter(invocation=invocation)
        .order_by("turn")
        .values_list("turn", "input", "output", "reference")
    )


@pytest.mark.django_db
def test_autoregressive_replay_sends_the_models_own_answers(
    fake_model: FakeModel, events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    invocation = claimed_invocation(target=openai_target(fake_model))

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert invocation.steps_count == 3
    assert invocation.started_at is not None
    assert invocation.heartbeat_at is not None
    assert invocation.run.status == TestRun.Status.RUNNING
    assert steps_of(invocation) == [
        (1, "Question 1?", "Echo: Question 1?", "Answer 1."),
        (2, "Question 2?", "Echo: Question 2?", "Answer 2."),
        (3, "Question 3?", "Echo: Question 3?", "Answer 3."),
    ]
    sent = [request["messages"] for request in fake_model.chat_requests()]
    assert sent[2] == THIRD_TURN_AUTOREGRESSIVE
    assert sent[0] == [SYSTEM, {"role": "user", "content": "Question 1?"}]
    # Each call names its invocation and turn, so the server's logs match the replay's turns.
    assert [headers["x-replaybench-call"] for headers in fake_model.headers] == [
        f"{invocation.pk}/{turn}" for turn in (1, 2, 3)
    ]
    step = ReplayStep.objects.get(invocation=invocation, turn=3)
    # The fake counts words: 5 (system) + 2 + 3 + 2 + 3 + 2.
    assert step.prompt_tokens == 17
    assert step.completion_tokens == 3
    assert [event["event_type"] for event in events] == [
        "run.started",
        "run.step",
        "run.step",
        "run.step",
        "run.completed",
    ]
    assert events[0]["total_turns"] == 3
    assert [(e["turn"], e["total_turns"], e["output"]) for e in events[1:4]] == [
        (1, 3, "Echo: Question 1?"),
        (2, 3, "Echo: Question 2?"),
        (3, 3, "Echo: Question 3?"),
    ]
    assert {event["invocation_id"] for event in events} == {invocation.pk}


@pytest.mark.django_db
def test_teacher_forced_replay_sends_the_recorded_answers(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = claimed_invocation(
        target=openai_target(fake_model), replay_mode=Benchmark.ReplayMode.TEACHER_FORCED
    )

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    last = fake_model.chat_requests()[2]["messages"]
    assert [m["content"] for m in last if m["role"] == "assistant"] == ["Answer 1.", "Answer 2."]
    assert [output for _, _, output, _ in steps_of(invocation)] == [
        "Echo: Question 1?",
        "Echo: Question 2?",
        "Echo: Question 3?",
    ]


@pytest.mark.django_db
def test_tool_messages_stay_as_context(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    messages: Messages = [
        SYSTEM,
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 4 C"},
        {"role": "assistant", "content": "Rainy, 4 degrees."},
        {"role": "user", "content": "Umbrella?", "x-recorded-at": "yesterday"},
        {"role": "assistant", "content": "Yes."},
    ]
    assert [(t.turn, t.reference) for t in plan_turns(messages)] == [
        (1, "Rainy, 4 degrees."),
        (2, "Yes."),
    ]
    invocation = claimed_invocation(target=openai_target(fake_model), messages=messages)

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert fake_model.chat_requests()[1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 4 C"},
        {"role": "assistant", "content": "Echo: Weather in Oslo?"},
        {"role": "user", "content": "Umbrella?"},
    ]


@pytest.mark.django_db
def test_a_turn_without_recorded_answer_still_keeps_the_models_answer(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Still there?"}]
    invocation = claimed_invocation(target=openai_target(fake_model), messages=messages)

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert steps_of(invocation) == [
        (1, "Hi", "Echo: Hi", None),
        (2, "Still there?", "Echo: Still there?", None),
    ]
    assert fake_model.chat_requests()[1]["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Echo: Hi"},
        {"role": "user", "content": "Still there?"},
    ]


@pytest.mark.django_db
def test_reference_target_reproduces_the_recording(
    django_capture_on_commit_callbacks: Any,
) -> None:
    invocation = replay(claimed_invocation(turns=2), django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert steps_of(invocation) == [
        (1, "Question 1?", "Answer 1.", "Answer 1."),
        (2, "Question 2?", "Answer 2.", "Answer 2."),
    ]


@pytest.mark.django_db
def test_a_429_then_success_is_retried(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    fake_model.script(Reply(status=429))
    invocation = claimed_invocation(target=openai_target(fake_model), turns=2)

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert invocation.error == ""
    assert len(fake_model.chat_requests()) == 3
    assert [output for _, _, output, _ in steps_of(invocation)] == [
        "Echo: Question 1?",
        "Echo: Question 2?",
    ]


@pytest.mark.django_db
@pytest.mark.timeout(60)
def test_a_server_that_never_answers_fails_the_invocation(
    fake_model: FakeModel, events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    fake_model.script(Reply(), Reply(hang=True), Reply(hang=True))
    invocation = claimed_invocation(
        target=openai_target(fake_model, timeout_s=0.5, max_retries=1), turns=3
    )

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.FAILED
    assert "did not answer within 0.5 s (2 attempts)" in invocation.error
    assert invocation.ended_at is not None
    assert invocation.steps_count == 1
    assert [turn for turn, *_ in steps_of(invocation)] == [1]
    run = TestRun.objects.get(pk=invocation.run_id)
    assert run.status == TestRun.Status.FAILED
    # Its only run finished, so the test completed.
    test = Test.objects.get(pk=invocation.test_id)
    assert test.status == Test.Status.COMPLETED
    assert [event["event_type"] for event in events] == [
        "run.started",
        "run.step",
        "run.failed",
        "test.completed",
    ]
    failed = next(event for event in events if event["event_type"] == "run.failed")
    assert failed["error"] == invocation.error


@pytest.mark.django_db
def test_a_500_forever_fails_after_the_retries(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    fake_model.script(*[Reply(status=500)] * 10)
    invocation = claimed_invocation(target=openai_target(fake_model, max_retries=2))

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.FAILED
    assert "HTTP 500" in invocation.error
    assert len(fake_model.chat_requests()) == 3
    assert steps_of(invocation) == []
    assert TestRun.objects.get(pk=invocation.run_id).status == TestRun.Status.FAILED


@pytest.mark.django_db
def test_a_bad_target_fails_the_invocation_with_the_reason(
    django_capture_on_commit_callbacks: Any,
) -> None:
    invocation = claimed_invocation(target={"kind": "openai"})

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.FAILED
    assert "model" in invocation.error
    assert TestRun.objects.get(pk=invocation.run_id).status == TestRun.Status.FAILED


@pytest.mark.django_db
def test_a_second_delivery_does_nothing(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = claimed_invocation(target=openai_target(fake_model), turns=2)
    replay(invocation, django_capture_on_commit_callbacks)

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.REPLAYED
    assert len(fake_model.chat_requests()) == 2
    assert ReplayStep.objects.filter(invocation=invocation).count() == 2


@pytest.mark.django_db
def test_a_missing_invocation_is_ignored(django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        replay_invocation(invocation_id="00000000-0000-0000-0000-000000000000")
    assert callbacks == []


@pytest.mark.django_db
def test_stop_requested_before_the_replay_claims_nothing(
    fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    invocation = claimed_invocation(target=openai_target(fake_model))
    TestInvocation.objects.filter(pk=invocation.pk).update(
        status=TestInvocation.Status.STOPPED, stop_requested=True
    )

    invocation = replay(invocation, django_capture_on_commit_callbacks)

    assert invocation.status == TestInvocation.Status.STOPPED
    assert fake_model.chat_requests() == []


def stop_invocation_when(invocation_id: Any, question: str) -> Callable[[Messages], str]:
    """An answer function that stops the invocation (as the stop service would) while the
    model is answering ``question``: the test's DB rows are committed (transactional_db)."""

    def answer(messages: Messages) -> str:
        text = str(messages[-1]["content"])
        if text == question:
            TestInvocation.objects.filter(pk=invocation_id).update(
                status=TestInvocation.Status.STOPPED, stop_requested=True
            )
            connection.close()  # this runs on the server's thread, which has its own connection
        return f"Echo: {text}"

    return answer


@pytest.mark.django_db(transaction=True)
def test_a_stop_during_a_turn_writes_no_step_for_it(
    fake_model: FakeModel, events: list[dict[str, Any]]
) -> None:
    invocation = claimed_invocation(target=openai_target(fake_model), turns=3)
    fake_model.answer = stop_invocation_when(invocation.pk, "Question 2?")

    replay_invocation(invocation_id=invocation.pk)

    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.STOPPED
    assert invocation.steps_count == 1
    assert [turn for turn, *_ in steps_of(invocation)] == [1]
    # Turn 3 was never sent: the replay halted at the boundary.
    assert len(fake_model.chat_requests()) == 2
    assert [event["event_type"] for event in events] == ["run.started", "run.step"]


@pytest.mark.django_db(transaction=True)
def test_a_stop_between_turns_halts_before_the_next_call(fake_model: FakeModel) -> None:
    invocation = claimed_invocation(target=openai_target(fake_model), turns=3)

    def answer(messages: Messages) -> str:
        text = str(messages[-1]["content"])
        if text == "Question 1?":
            # Only the flag (the stop service sets it with the statuses): checked between turns.
            TestInvocation.objects.filter(pk=invocation.pk).update(stop_requested=True)
            connection.close()
        return f"Echo: {text}"

    fake_model.answer = answer
    replay_invocation(invocation_id=invocation.pk)

    invocation.refresh_from_db()
    assert len(fake_model.chat_requests()) == 1
    assert invocation.steps_count == 0
    assert invocation.status == TestInvocation.Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_stays_fresh_during_a_long_model_call(
    fake_model: FakeModel, settings: Any
) -> None:
    # A model call may outlast the reaper's timeout; the heartbeat must not wait for the turn.
    settings.REPLAY_HEARTBEAT_TIMEOUT = 0.8
    invocation = claimed_invocation(target=openai_target(fake_model), turns=1)
    seen: list[Any] = []

    def answer(messages: Messages) -> str:
        row = TestInvocation.objects.values_list("started_at", "heartbeat_at").get(pk=invocation.pk)
        seen.append(row)
        connection.close()
        return "late answer"

    fake_model.answer = answer
    fake_model.delay_s = 1.5  # the delay comes before the answer is computed

    replay_invocation(invocation_id=invocation.pk)

    [(started_at, heartbeat_at)] = seen
    # No turn was recorded yet when the answer was computed, so only the heartbeat thread
    # could have moved heartbeat_at past the claim.
    assert heartbeat_at > started_at
    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.REPLAYED


def test_the_replay_task_is_safe_to_deliver_twice_and_retries_only_transient_errors(
    settings: Any,
) -> None:
    from django.db import OperationalError

    from tests_app import tasks
    from tests_app.targets import TargetError

    for task in (tasks.replay_invocation, tasks.grade_invocation):
        assert task.soft_time_limit == settings.REPLAY_SOFT_TIME_LIMIT
        assert task.time_limit == settings.REPLAY_TIME_LIMIT
        assert task.time_limit > task.soft_time_limit
        assert OperationalError in task.autoretry_for
        assert not any(issubclass(TargetError, kind) for kind in task.autoretry_for)
    # A message leaves Redis as a worker takes it: the sweep, not a redelivery, gives back what a
    # dead worker held, so no task waits on an acknowledgement.
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["ack_emulation"] is False
    assert not any(task.acks_late for task in tasks.__dict__.values() if hasattr(task, "acks_late"))


def replay_queries(turns: int, capture: Callable[..., Any]) -> list[str]:
    """The SQL of one replay of a ``turns``-turn invocation, events (and their seq) included."""
    invocation = claimed_invocation(turns=turns)
    with CaptureQueriesContext(connection) as queries, capture(execute=True):
        replay_invocation(invocation_id=invocation.pk)
    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.REPLAYED
    assert invocation.steps_count == turns
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_each_turn_costs_the_same_few_statements_and_numbers_its_events_in_a_row(
    django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Committed as in a worker, so each event is numbered when its data commits.
    from tests_app.realtime import events

    numbered: list[tuple[int, str]] = []

    class Recorder:
        def send(self, group: str, message: dict[str, Any]) -> None:
            numbered.append((message["event"]["seq"], message["event"]["type"]))

    monkeypatch.setattr(events, "_sender", Recorder)
    three = replay_queries(3, django_capture_on_commit_callbacks)
    numbered.clear()
    five = replay_queries(5, django_capture_on_commit_callbacks)

    # No status read per turn: the step's conditional write is the stop check, and the last
    # one finishes the invocation too.
    assert (len(five) - len(three)) % 2 == 0
    per_turn = (len(five) - len(three)) // 2
    assert len(three) - 3 * per_turn == len(five) - 5 * per_turn
    assert ReplayStep.objects.filter(turn=5).count() == 1
    # run.started, five run.step and run.completed, numbered in a row up to the test's seq.
    test = ReplayStep.objects.get(turn=5).invocation.test
    assert [event for _, event in numbered] == [
        "run.started",
        *["run.step"] * 5,
        "run.completed",
    ]
    assert [seq for seq, _ in numbered] == list(range(test.event_seq - 6, test.event_seq + 1))


@pytest.mark.django_db(transaction=True)
def test_a_step_after_a_stop_writes_nothing(
    fake_model: FakeModel, events: list[dict[str, Any]]
) -> None:
    # A stop during the first turn: no step row, no count, no event.
    invocation = claimed_invocation(target=openai_target(fake_model), turns=2)
    fake_model.answer = stop_invocation_when(invocation.pk, "Question 1?")

    replay_invocation(invocation_id=invocation.pk)

    invocation.refresh_from_db()
    assert (invocation.status, invocation.steps_count) == (TestInvocation.Status.STOPPED, 0)
    assert not ReplayStep.objects.filter(invocation=invocation).exists()
    assert [event["event_type"] for event in events] == ["run.started"]


def test_loading_the_tasks_loads_the_replay_service_and_its_model_client() -> None:
    # The worker imports its tasks before it takes work; its first replays must not queue on
    # the import lock of the services.
    probe = (
        "import sys, django; django.setup(); before = 'urllib3' in sys.modules; "
        "import tests_app.tasks; "
        "print(before, 'urllib3' in sys.modules, 'tests_app.services.replay' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["False", "True", "True"]


def test_a_new_replay_wakes_the_heartbeat_only_when_its_timeout_was_shortened(
    settings: Any,
) -> None:
    # A woken heartbeat refreshes every replay of the process at once: doing that whenever a
    # replay starts would cost a write per replay and a lease renewal per model call in flight.
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    beats = Heartbeats()

    def sleeping_for(seconds: float) -> None:
        deadline = time.monotonic() + 10
        while beats._sleeping_s != seconds:
            assert time.monotonic() < deadline, f"the heartbeat sleeps {beats._sleeping_s} s"
            time.sleep(0.01)

    with beats.beating(uuid.uuid4()):
        sleeping_for(15)
        with beats.beating(uuid.uuid4()):
            assert not beats._wake.is_set()
        settings.REPLAY_HEARTBEAT_TIMEOUT = 2
        with beats.beating(uuid.uuid4()):
            sleeping_for(0.5)


def test_a_processs_steps_of_one_test_are_written_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL orders them on the test's row anyway; waiting in the process holds no pooled
    # connection. Steps of tests that do not share a lock are written side by side.
    in_flight: list[uuid.UUID] = []
    seen_together: list[list[uuid.UUID]] = []
    guard = threading.Lock()

    def write_step(step: ReplayStep, *, invocation: TestInvocation, finishes: bool) -> None:
        with guard:
            in_flight.append(invocation.test_id)
            seen_together.append(list(in_flight))
        time.sleep(0.1)  # room for another writer to come in, if nothing holds it back
        # Returns None, "no longer running": the step publishes nothing.
        with guard:
            in_flight.remove(invocation.test_id)

    monkeypatch.setattr(replay_service, "_write_step", write_step)
    first = uuid.uuid4()
    other = next(
        test_id
        for test_id in iter(uuid.uuid4, None)
        if replay_service._test_row_lock(test_id) is not replay_service._test_row_lock(first)
    )
    [turn] = plan_turns([{"role": "user", "content": "Hi"}])
    reply = TargetReply(content="Hello", latency_ms=1, prompt_tokens=1, completion_tokens=1)

    def record(test_id: uuid.UUID) -> None:
        invocation = TestInvocation(id=uuid.uuid4(), test_id=test_id, run_id=uuid.uuid4())
        assert not replay_service._record_step(
            invocation=invocation, turn=turn, total_turns=1, reply=reply
        )

    writers = [threading.Thread(target=record, args=(t,)) for t in (first, first, first, other)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=30)
    assert len(seen_together) == 4
    assert max(together.count(first) for together in seen_together) == 1
    assert max(len(together) for together in seen_together) == 2
