"""run_all and retry as services: what a tick claims, when a run-all finishes, what stop, the
sweep and retry do to it. Background work runs inline on commit (the sync backend)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.api.lifecycle_support import agent, claimed_invocation, force_invocation_status
from tests_app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from tests_app.models import BenchmarkEntry, Grade, RunAll, Test, TestInvocation, TestRun
from tests_app.realtime import events as realtime_events
from tests_app.services import claiming, run_all
from tests_app.services.ending import end_invocation
from tests_app.services.grading import grade
from tests_app.services.replay import fail_invocation
from tests_app.services.retrying import retry_runs
from tests_app.services.run_all import claimed_run_count, start_run_all, tick_run_all
from tests_app.services.starting import start_test
from tests_app.services.stopping import stop_invocation
from tests_app.services.sweep import (
    reap_stale_invocations,
    sweep,
    tick_stalled_run_alls,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def five_entries(research: Any) -> Any:
    return factories.make_benchmark(department=research, entries=5, turns=2)


@pytest.fixture
def started(operator: Any, benchmark: Any) -> Test:
    return new_test(operator, benchmark)


def new_test(operator: Any, benchmark: Any, *, infinite_mode: bool = False) -> Test:
    return start_test(actor=agent(operator), benchmark_id=benchmark.pk, infinite_mode=infinite_mode)


def of_run_all(run_all_row: RunAll) -> Any:
    return TestInvocation.objects.filter(run_all=run_all_row)


def started_without_work(
    capture: Callable[..., Any], operator: Any, test: Test, **options: Any
) -> RunAll:
    """A run-all started, its first tick and the replays it enqueues not run."""
    with capture(execute=False):
        return start_run_all(actor=agent(operator), test_id=test.pk, **options)


def test_a_tick_claims_and_runs_at_most_concurrency_and_is_idempotent(
    operator: Any, five_entries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, five_entries)
    row = started_without_work(django_capture_on_commit_callbacks, operator, test, concurrency=2)
    assert (row.status, row.concurrency, row.grade, row.max_runs) == ("active", 2, "ai", None)

    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=False) as enqueued:
            tick_run_all(run_all_id=row.pk)
        claimed = list(of_run_all(row).order_by("run__ordinal"))
        # Two in flight, each created, marked for its replay, claimed as the starter.
        assert [invocation.run.ordinal for invocation in claimed] == [1, 2]
        assert {invocation.status for invocation in claimed} == {"created"}
        assert all(invocation.task_id and invocation.actor == operator for invocation in claimed)
        assert {invocation.client for invocation in claimed} == {"agent"}
    # The second tick found no room: it claimed nothing and enqueued nothing.
    assert enqueued == []
    assert TestRun.objects.filter(test=test, status="pending").count() == 3
    test.refresh_from_db()
    assert test.status == Test.Status.RUNNING


def test_it_drives_the_test_to_completion_with_grades_never_above_concurrency(
    operator: Any,
    five_entries: Any,
    events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    test = new_test(operator, five_entries)
    in_flight_at_claims: list[int] = []
    claim = claiming.claim_next_run

    def counting_claim(**kwargs: Any) -> Any:
        in_flight = TestInvocation.objects.filter(
            run_all_id=kwargs["run_all_id"], status__in=run_all.IN_FLIGHT_STATUSES
        ).count()
        claimed = claim(**kwargs)
        in_flight_at_claims.append(in_flight)
        return claimed

    monkeypatch.setattr(claiming, "claim_next_run", counting_claim)

    with django_capture_on_commit_callbacks(execute=True):
        row = start_run_all(actor=agent(operator), test_id=test.pk, concurrency=2)

    assert len(in_flight_at_claims) == 5
    # A claim is made only with room for it: below concurrency before it.
    assert max(in_flight_at_claims) == row.concurrency - 1
    test.refresh_from_db()
    assert (test.status, test.completed_runs, test.graded_runs) == ("completed", 5, 5)
    assert test.pending_grades == 0
    runs = TestRun.objects.filter(test=test)
    assert {run.status for run in runs} == {"completed"}
    assert all(run.score is not None for run in runs)
    invocations = of_run_all(row)
    assert invocations.count() == 5
    assert {invocation.status for invocation in invocations} == {"ended"}
    # No judge is configured: the offline reference grader graded them, and says so.
    assert set(Grade.objects.filter(invocation__test=test).values_list("source", flat=True)) == {
        "reference"
    }
    row.refresh_from_db()
    assert (row.status, row.finish_reason) == ("finished", "completed")
    assert row.finished_at is not None
    types = [event["event_type"] for event in events]
    assert types[0] == "run_all.started"
    assert types.count("run.completed") == 5
    assert types.count("grade.completed") == 5
    started = events[0]
    assert (started["concurrency"], started["grade"], started["grader"]) == (2, "ai", "reference")
    finished = next(event for event in events if event["event_type"] == "run_all.finished")
    assert (finished["status"], finished["reason"], finished["claimed_runs"]) == (
        "finished",
        "completed",
        5,
    )
    # Grades still with the grader when the run-all finished: the event counts them, and the
    # grade.completed events after it bring the count down to 0.
    after = events[events.index(finished) + 1 :]
    assert finished["pending_grades"] == len(after) > 0
    assert [event["event_type"] for event in after] == ["grade.completed"] * len(after)
    assert after[-1]["pending_grades"] == 0


def test_grade_none_ends_runs_ungraded(
    operator: Any, benchmark: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, benchmark)
    with django_capture_on_commit_callbacks(execute=True):
        start_run_all(actor=agent(operator), test_id=test.pk, grade="none")
    test.refresh_from_db()
    assert (test.status, test.completed_runs, test.graded_runs) == ("completed", 2, 0)
    assert not Grade.objects.filter(invocation__test=test).exists()


def test_max_runs_bounds_an_infinite_test(
    operator: Any, benchmark: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, benchmark, infinite_mode=True)
    with pytest.raises(ValidationFailed) as refused:
        start_run_all(actor=agent(operator), test_id=test.pk)
    assert refused.value.fields == {"max_runs": ["Required for an infinite-mode test."]}

    with django_capture_on_commit_callbacks(execute=True):
        row = start_run_all(actor=agent(operator), test_id=test.pk, concurrency=2, max_runs=3)

    row.refresh_from_db()
    assert (row.status, row.finish_reason) == ("finished", "max_runs")
    assert claimed_run_count(row.pk) == 3
    test.refresh_from_db()
    # Two entries a cycle: the third run opened the second cycle; an infinite test runs on.
    assert (test.status, test.cycle, test.completed_runs) == ("running", 2, 3)
    assert TestRun.objects.filter(test=test, status="pending").count() == 1


def test_a_second_start_while_one_is_active_is_a_409_naming_it(
    operator: Any, benchmark: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, benchmark)
    first = started_without_work(django_capture_on_commit_callbacks, operator, test)
    with pytest.raises(InvalidTransition) as refused:
        start_run_all(actor=agent(operator), test_id=test.pk)
    assert refused.value.code == "run_all_active"
    assert str(first.pk) in refused.value.detail
    assert "Olive Operator" in refused.value.detail
    assert RunAll.objects.filter(test=test).count() == 1


def test_stopping_the_test_stops_the_run_all_and_its_replays(
    operator: Any,
    five_entries: Any,
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    test = new_test(operator, five_entries)
    row = started_without_work(django_capture_on_commit_callbacks, operator, test, concurrency=3)
    with django_capture_on_commit_callbacks(execute=False):
        tick_run_all(run_all_id=row.pk)
    first, *others = list(of_run_all(row).order_by("run__ordinal"))
    assert len(others) == 2

    with django_capture_on_commit_callbacks(execute=True):
        stop_invocation(actor=agent(operator), invocation_id=first.pk)

    row.refresh_from_db()
    assert (row.status, row.finish_reason) == ("stopped", "test_stopped")
    assert {invocation.status for invocation in of_run_all(row)} == {"stopped"}
    assert all(invocation.stop_requested for invocation in of_run_all(row))
    assert TestRun.objects.filter(test=test, status="stopped").count() == 3
    assert TestRun.objects.filter(test=test, status="pending").count() == 2
    types = [event["event_type"] for event in events]
    assert types.count("run.stopped") == 3
    assert types[-1] == "run_all.finished"
    assert events[-1]["status"] == "stopped"
    # A tick that comes later (a replay finishing) changes nothing.
    with django_capture_on_commit_callbacks(execute=True) as enqueued:
        assert tick_run_all(run_all_id=row.pk) == row
    assert enqueued == []
    assert of_run_all(row).count() == 3


def test_agents_claim_alongside_and_their_runs_stay_theirs(
    operator: Any, benchmark: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, benchmark)
    agents_invocation = claimed_invocation(operator, test)
    with django_capture_on_commit_callbacks(execute=True):
        row = start_run_all(actor=agent(operator), test_id=test.pk)

    # The run-all ran the other run and finished: nothing was left pending.
    row.refresh_from_db()
    assert (row.status, row.finish_reason) == ("finished", "no_pending_runs")
    assert claimed_run_count(row.pk) == 1
    agents_invocation.refresh_from_db()
    assert (agents_invocation.status, agents_invocation.run_all_id) == ("created", None)
    test.refresh_from_db()
    assert (test.status, test.completed_runs) == ("running", 1)


def test_a_run_all_ends_what_a_lost_tick_left_replayed(
    operator: Any, benchmark: Any, django_capture_on_commit_callbacks: Any
) -> None:
    test = new_test(operator, benchmark)
    row = started_without_work(django_capture_on_commit_callbacks, operator, test, grade="none")
    with django_capture_on_commit_callbacks(execute=False):
        tick_run_all(run_all_id=row.pk)
    # Both replays finished, but the worker died before ticking the run-all.
    for invocation in of_run_all(row):
        TestRun.objects.filter(pk=invocation.run_id).update(status="running")
        force_invocation_status(invocation, TestInvocation.Status.REPLAYED)

    with django_capture_on_commit_callbacks(execute=True):
        tick_run_all(run_all_id=row.pk)

    assert {invocation.status for invocation in of_run_all(row)} == {"ended"}
    test.refresh_from_db()
    assert test.status == Test.Status.COMPLETED
    row.refresh_from_db()
    assert (row.status, row.finish_reason) == ("finished", "completed")


def test_the_sweep_ticks_a_stalled_run_all_and_the_reaper_the_run_all_of_a_lost_replay(
    operator: Any, benchmark: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.RUN_ALL_STALL_TIMEOUT = 60
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    test = new_test(operator, benchmark)
    row = started_without_work(django_capture_on_commit_callbacks, operator, test, concurrency=1)
    # Its first tick was lost: not stalled yet, then stalled.
    assert tick_stalled_run_alls() == 0
    RunAll.objects.filter(pk=row.pk).update(ticked_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        assert sweep() == (0, 0, 0, 1)
    assert [callback.args[0].name for callback in enqueued] == ["tests_app.tasks.tick_run_all"]
    with django_capture_on_commit_callbacks(execute=False):
        tick_run_all(run_all_id=row.pk)
    lost = of_run_all(row).get()

    # Its replay's worker dies mid-replay: the reaper gives the run back and ticks the run-all,
    # which claims the run again and this time finishes the test.
    stale = timezone.now() - timedelta(seconds=61)
    TestRun.objects.filter(pk=lost.run_id).update(status="running")
    TestInvocation.objects.filter(pk=lost.pk).update(status="running", heartbeat_at=stale)
    with django_capture_on_commit_callbacks(execute=True):
        assert reap_stale_invocations() == 1

    lost.refresh_from_db()
    assert lost.status == TestInvocation.Status.FAILED
    again = of_run_all(row).filter(run_id=lost.run_id).exclude(pk=lost.pk).get()
    assert again.status == TestInvocation.Status.ENDED
    assert TestRun.objects.get(pk=lost.run_id).attempts == 2
    test.refresh_from_db()
    assert (test.status, test.completed_runs) == ("completed", 2)
    row.refresh_from_db()
    assert row.status == "finished"
    # max_runs counts distinct runs: the run claimed twice counts once.
    assert claimed_run_count(row.pk) == 2


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 65}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"grade": "human"}, "grade"),
        ({"max_runs": 0}, "max_runs"),
    ],
)
def test_it_validates_its_options(
    operator: Any, started: Test, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        start_run_all(actor=agent(operator), test_id=started.pk, **options)
    assert list(refused.value.fields or {}) == [field]
    assert not RunAll.objects.exists()


def test_it_validates_scope_and_state(
    operator: Any, viewer: Any, outsider: Any, started: Test
) -> None:
    with pytest.raises(NotFound):
        start_run_all(actor=agent(outsider), test_id=started.pk)
    with pytest.raises(PermissionDenied):
        start_run_all(actor=agent(viewer), test_id=started.pk)
    Test.objects.filter(pk=started.pk).update(status=Test.Status.COMPLETED)
    with pytest.raises(InvalidTransition) as refused:
        start_run_all(actor=agent(operator), test_id=started.pk)
    assert refused.value.code == "test_completed"
    Test.objects.filter(pk=started.pk).update(is_archived=True)
    with pytest.raises(InvalidTransition) as refused:
        start_run_all(actor=agent(operator), test_id=started.pk)
    assert refused.value.code == "test_archived"
    assert not RunAll.objects.exists()


# --- retry -------------------------------------------------------------------------------------


def failed_run(operator: Any, test: Test) -> TestInvocation:
    invocation = claimed_invocation(operator, test)
    TestRun.objects.filter(pk=invocation.run_id).update(status="running")
    force_invocation_status(invocation, TestInvocation.Status.RUNNING)
    assert fail_invocation(invocation_id=invocation.pk, error="target down")
    return invocation


def test_retry_puts_failed_runs_back_and_reopens_a_completed_test(
    operator: Any,
    benchmark: Any,
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    test = new_test(operator, benchmark)
    first = failed_run(operator, test)
    second = failed_run(operator, test)
    test.refresh_from_db()
    assert test.status == Test.Status.COMPLETED

    with django_capture_on_commit_callbacks(execute=True):
        assert retry_runs(actor=agent(operator), test_id=test.pk, statuses=["failed"]) == 2

    test.refresh_from_db()
    assert (test.status, test.finished_at) == ("running", None)
    for invocation in (first, second):
        run = TestRun.objects.get(pk=invocation.run_id)
        assert (run.status, run.attempts) == ("pending", 0)
        invocation.refresh_from_db()
        assert invocation.status == TestInvocation.Status.FAILED  # kept as history
    retried = events[-1]
    assert retried["event_type"] == "test.retried"
    assert (retried["requeued_count"], retried["status"]) == (2, "running")
    # The retried run is claimed again with a new invocation next to the failed one.
    again = claimed_invocation(operator, test)
    assert again.run_id == first.run_id
    assert TestInvocation.objects.filter(run_id=first.run_id).count() == 2


def test_retry_with_nothing_to_retry_changes_nothing(operator: Any, started: Test) -> None:
    assert retry_runs(actor=agent(operator), test_id=started.pk) == 0
    started.refresh_from_db()
    assert started.status == Test.Status.PENDING


def test_retry_refuses_a_stopped_test_bad_statuses_and_callers_who_may_not(
    operator: Any, viewer: Any, outsider: Any, benchmark: Any
) -> None:
    test = new_test(operator, benchmark)
    invocation = failed_run(operator, test)
    for statuses in ([], ["completed"], ["failed", "pending"]):
        with pytest.raises(ValidationFailed) as refused:
            retry_runs(actor=agent(operator), test_id=test.pk, statuses=statuses)
        assert list(refused.value.fields or {}) == ["statuses"]
    with pytest.raises(NotFound):
        retry_runs(actor=agent(outsider), test_id=test.pk)
    with pytest.raises(PermissionDenied):
        retry_runs(actor=agent(viewer), test_id=test.pk)
    stop_invocation(actor=agent(operator), invocation_id=claimed_invocation(operator, test).pk)
    with pytest.raises(InvalidTransition) as stopped:
        retry_runs(actor=agent(operator), test_id=test.pk, statuses=["failed", "stopped"])
    assert stopped.value.code == "test_stopped"
    assert TestRun.objects.get(pk=invocation.run_id).status == "failed"


# --- pending grades and entries ------------------------------------------------------------------


def test_pending_grades_count_up_in_end_and_down_when_graded(
    operator: Any,
    benchmark: Any,
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    test = new_test(operator, benchmark)
    for _ in range(2):
        invocation = claimed_invocation(operator, test)
        TestRun.objects.filter(pk=invocation.run_id).update(status="running")
        factories.ReplayStepFactory.create(invocation=invocation, turn=1)
        force_invocation_status(invocation, TestInvocation.Status.REPLAYED)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            end_invocation(
                actor=agent(operator),
                test_id=test.pk,
                invocation_id=invocation.pk,
                run_id=invocation.run_id,
                grade=True,
            )
        # The events, not the grading task: the grades stay pending for now.
        for callback in callbacks:
            if getattr(callback, "func", None) is realtime_events.send_event:
                callback()
    test.refresh_from_db()
    assert (test.status, test.pending_grades) == ("completed", 2)
    completed = next(event for event in events if event["event_type"] == "test.completed")
    assert completed["pending_grades"] == 2

    for pending in Grade.objects.filter(invocation__test=test, status="pending"):
        with django_capture_on_commit_callbacks(execute=True):
            grade(grade_id=pending.pk)
    test.refresh_from_db()
    assert test.pending_grades == 0
    graded = [event for event in events if event["event_type"] == "grade.completed"]
    assert [event["pending_grades"] for event in graded] == [1, 0]


def test_an_entry_starts_with_no_messages_and_takes_the_next_position(benchmark: Any) -> None:
    entry = BenchmarkEntry(benchmark=benchmark, title="Added")
    assert entry.messages == []
    entry.save()
    entry.refresh_from_db()
    assert (entry.position, entry.messages, entry.turns) == (3, [], 0)
    first = BenchmarkEntry.objects.create(
        benchmark=factories.BenchmarkFactory.create(), messages=factories.conversation(1)
    )
    assert first.position == 1


def test_events_that_carry_pending_grades_are_numbered_with_the_count(
    operator: Any,
    benchmark: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # Numbered in the transaction that moved the count, so a client that keeps the count of the
    # last event it saw (by seq) holds the current one.
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(realtime_events, "send_event", lambda **event: sent.append(event))
    test = new_test(operator, benchmark)
    with django_capture_on_commit_callbacks(execute=True):
        start_run_all(actor=agent(operator), test_id=test.pk, concurrency=2)

    counted = [event for event in sent if "pending_grades" in event]
    assert {event["event_type"] for event in counted} == {
        "grade.completed",
        "test.completed",
        "run_all.finished",
    }
    seqs = [event["seq"] for event in counted]
    assert None not in seqs
    last = max(counted, key=lambda event: event["seq"])
    assert last["pending_grades"] == 0
    test.refresh_from_db()
    assert test.pending_grades == 0
