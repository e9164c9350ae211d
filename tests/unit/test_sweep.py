"""The sweep: it fails invocations whose worker died and gives their runs back (or fails them),
and enqueues again the replays that were requested but never started."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.sweep import enqueue_unstarted_invocations, reap_stale_invocations


def running_invocation(*, heartbeat_age_s: float, attempts: int = 1) -> TestInvocation:
    department = factories.DepartmentFactory.create()
    benchmark = factories.make_benchmark(department=department, entries=1)
    test = factories.TestFactory.create(
        benchmark=benchmark, status=Test.Status.RUNNING, started_at=timezone.now(), total_runs=1
    )
    run = factories.TestRunFactory.create(
        test=test,
        entry=benchmark.entries.get(),
        ordinal=1,
        status=TestRun.Status.RUNNING,
        attempts=attempts,
    )
    heartbeat = timezone.now() - timedelta(seconds=heartbeat_age_s)
    invocation = factories.TestInvocationFactory.create(
        run=run,
        test=test,
        status=TestInvocation.Status.RUNNING,
        started_at=heartbeat,
        heartbeat_at=heartbeat,
        steps_count=1,
    )
    TestRun.objects.filter(pk=run.pk).update(latest_invocation=invocation)
    Test.objects.filter(pk=test.pk).update(current_invocation=invocation)
    return invocation


@pytest.mark.django_db
def test_a_stale_invocation_fails_and_its_run_goes_back_to_pending(
    settings: Any, events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    settings.REPLAY_MAX_ATTEMPTS = 3
    stale = running_invocation(heartbeat_age_s=61, attempts=2)
    fresh = running_invocation(heartbeat_age_s=5)

    with django_capture_on_commit_callbacks(execute=True):
        assert reap_stale_invocations() == 1

    stale.refresh_from_db()
    assert stale.status == TestInvocation.Status.FAILED
    assert stale.error.startswith("worker lost: heartbeat stale since ")
    assert stale.ended_at is not None
    run = TestRun.objects.get(pk=stale.run_id)
    assert (run.status, run.attempts) == (TestRun.Status.PENDING, 2)
    test = Test.objects.get(pk=stale.test_id)
    assert test.current_invocation_id is None
    assert test.status == Test.Status.RUNNING
    fresh.refresh_from_db()
    assert fresh.status == TestInvocation.Status.RUNNING
    assert Test.objects.get(pk=fresh.test_id).current_invocation_id == fresh.pk
    [event] = events
    assert event["event_type"] == "run.failed"
    assert (event["invocation_id"], event["requeued"]) == (stale.pk, True)


@pytest.mark.django_db
def test_the_last_attempt_fails_the_run_and_completes_the_test(
    settings: Any, events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    settings.REPLAY_MAX_ATTEMPTS = 3
    stale = running_invocation(heartbeat_age_s=600, attempts=3)

    with django_capture_on_commit_callbacks(execute=True):
        assert reap_stale_invocations() == 1

    assert TestRun.objects.get(pk=stale.run_id).status == TestRun.Status.FAILED
    test = Test.objects.get(pk=stale.test_id)
    assert test.status == Test.Status.COMPLETED
    assert test.finished_at is not None
    assert [event["event_type"] for event in events] == ["run.failed", "test.completed"]
    assert events[0]["requeued"] is False


@pytest.mark.django_db
def test_only_running_invocations_are_reaped(settings: Any) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    replayed = running_invocation(heartbeat_age_s=600)
    TestInvocation.objects.filter(pk=replayed.pk).update(status=TestInvocation.Status.REPLAYED)

    assert reap_stale_invocations() == 0

    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.REPLAYED
    assert replayed.error == ""
    assert TestRun.objects.get(pk=replayed.run_id).status == TestRun.Status.RUNNING


@pytest.mark.django_db
def test_reaping_twice_counts_once(settings: Any) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    stale = running_invocation(heartbeat_age_s=120)

    assert reap_stale_invocations() == 1
    assert reap_stale_invocations() == 0

    assert TestRun.objects.get(pk=stale.run_id).status == TestRun.Status.PENDING


def requested_invocation(*, requested_age_s: float, task_id: str = "lost-task") -> TestInvocation:
    """What run leaves behind: a created invocation whose replay was handed to the workers."""
    invocation = running_invocation(heartbeat_age_s=0)
    TestRun.objects.filter(pk=invocation.run_id).update(status=TestRun.Status.CLAIMED)
    TestInvocation.objects.filter(pk=invocation.pk).update(
        status=TestInvocation.Status.CREATED,
        started_at=None,
        heartbeat_at=None,
        steps_count=0,
        task_id=task_id,
        enqueued_at=timezone.now() - timedelta(seconds=requested_age_s),
    )
    invocation.refresh_from_db()
    return invocation


@pytest.mark.django_db
def test_a_replay_that_never_started_is_enqueued_again_and_replayed(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.REPLAY_START_TIMEOUT = 60
    lost = requested_invocation(requested_age_s=61)
    waiting = requested_invocation(requested_age_s=10)
    never_run = requested_invocation(requested_age_s=600, task_id="")

    with django_capture_on_commit_callbacks(execute=True):
        assert enqueue_unstarted_invocations() == 1

    # The sync background of the unit tests replayed it at once; the others are left alone.
    lost.refresh_from_db()
    assert lost.status == TestInvocation.Status.REPLAYED
    assert lost.steps_count == 3
    assert TestRun.objects.get(pk=lost.run_id).status == TestRun.Status.RUNNING
    for untouched in (waiting, never_run):
        untouched.refresh_from_db()
        assert untouched.status == TestInvocation.Status.CREATED


@pytest.mark.django_db
def test_enqueuing_again_twice_counts_once(settings: Any) -> None:
    settings.REPLAY_START_TIMEOUT = 60
    lost = requested_invocation(requested_age_s=120)

    with pytest.MonkeyPatch.context() as patch:
        sent: list[Any] = []
        patch.setattr("tests_app.services.sweep.enqueue_on_commit", lambda *args: sent.append(args))
        assert enqueue_unstarted_invocations() == 1
        assert enqueue_unstarted_invocations() == 0

    assert len(sent) == 1
    lost.refresh_from_db()
    assert lost.status == TestInvocation.Status.CREATED
    assert lost.enqueued_at is not None
    assert timezone.now() - lost.enqueued_at < timedelta(seconds=30)


@pytest.mark.django_db
def test_the_task_runs_both_parts_of_the_sweep(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tests_app import tasks

    settings.REPLAY_HEARTBEAT_TIMEOUT = 60
    settings.REPLAY_START_TIMEOUT = 60
    stale = running_invocation(heartbeat_age_s=120)
    lost = requested_invocation(requested_age_s=120)

    with django_capture_on_commit_callbacks(execute=True):
        tasks.sweep_stranded_work.apply(throw=True)

    stale.refresh_from_db()
    assert stale.status == TestInvocation.Status.FAILED
    lost.refresh_from_db()
    assert lost.status == TestInvocation.Status.REPLAYED


@pytest.mark.django_db
def test_a_grade_left_pending_is_enqueued_again_and_graded(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tests_app.models import Grade
    from tests_app.services.sweep import enqueue_stranded_grades

    settings.GRADE_TIMEOUT = 600
    settings.JUDGE_MODEL = ""  # the offline reference grader
    ended = running_invocation(heartbeat_age_s=0)
    TestInvocation.objects.filter(pk=ended.pk).update(status=TestInvocation.Status.ENDED)
    factories.ReplayStepFactory.create(
        invocation=ended, turn=1, output="Answer 1.", reference="Answer 1."
    )
    stranded = Grade.objects.create(invocation=ended, source="reference")
    Grade.objects.filter(pk=stranded.pk).update(updated_at=timezone.now() - timedelta(seconds=601))
    recent = Grade.objects.create(invocation=ended, source="reference")

    with django_capture_on_commit_callbacks(execute=True):
        assert enqueue_stranded_grades() == 1

    stranded.refresh_from_db()
    assert (stranded.status, stranded.score) == (Grade.Status.DONE, 1.0)
    recent.refresh_from_db()
    assert recent.status == Grade.Status.PENDING
