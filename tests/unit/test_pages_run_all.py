"""Run all, Retry failed and the live progress on the test page, through Django's test client."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests_app.actors import Actor
from tests_app.models import Grade, RunAll, Test, TestInvocation, TestRun
from tests_app.services.run_all import tick_run_all
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


def messages_of(html: str) -> str:
    """The text of the page's messages (ids elsewhere in the page may contain any digits)."""
    found = re.search(r'<ul class="messages"[^>]*>(.*?)</ul>', html, re.DOTALL)
    return found.group(1) if found else ""


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def started(benchmark: Any, operator: Any) -> Test:
    return start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)


def page_of(client: Client, test: Test) -> str:
    return client.get(f"/tests/{test.pk}/").content.decode()


def test_an_operator_sees_run_all_with_its_choices_and_a_viewer_does_not(
    started: Test, operator: Any, viewer: Any, settings: Any
) -> None:
    settings.JUDGE_MODEL = ""
    page = page_of(logged_in(operator), started)
    assert 'id="control-run-all"' in page
    assert "Run all 2 waiting runs" in page
    assert re.search(r'name="concurrency"[^>]*value="8"', page)
    assert "with the reference comparison (no AI judge is configured)" in page
    assert 'name="max_runs"' not in page  # only an infinite test asks how many
    assert 'id="control-run-all"' not in page_of(logged_in(viewer), started)
    response = logged_in(viewer).post(f"/tests/{started.pk}/run-all/", {"concurrency": "2"})
    assert response.status_code == 302
    assert not RunAll.objects.exists()


def test_run_all_drives_the_test_to_the_end_through_the_services(
    started: Test, operator: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.JUDGE_MODEL = ""
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/tests/{started.pk}/run-all/", {"concurrency": "2", "grade": "ai"}, follow=True
        )
    text = response.content.decode()
    assert "Run all started: up to 2 runs at once, each graded by the reference comparison" in text
    run_all = RunAll.objects.get(test=started)
    assert (run_all.concurrency, run_all.grade, run_all.started_by) == (2, "ai", operator)
    started.refresh_from_db()
    assert started.status == Test.Status.COMPLETED
    assert Grade.objects.filter(invocation__test=started, source="reference").count() == 2
    page = page_of(client, started)
    assert "2 of 2 runs finished</strong> (100%)" in page
    assert "The last Run all finished at" in page
    assert "every run has finished" in page
    assert 'id="control-run-all"' not in page


def test_a_viewer_follows_a_run_all_without_its_controls(
    started: Test, operator: Any, viewer: Any
) -> None:
    logged_in(operator).post(f"/tests/{started.pk}/run-all/", {"concurrency": "2", "grade": "none"})
    page = page_of(logged_in(viewer), started)
    assert "Run all is running this test" in page
    assert "Stop test ends it sooner" not in page
    assert 'id="control-stop"' not in page


def test_a_second_run_all_is_refused_in_plain_words(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/run-all/", {"concurrency": "3", "grade": "none"})
    run_all = RunAll.objects.get(test=started)
    assert (run_all.status, run_all.grade) == (RunAll.Status.ACTIVE, "none")
    page = page_of(client, started)
    assert (
        "Run all is running this test</strong>: up to 3 runs at once, ended without a grade" in page
    )
    assert 'id="control-stop"' in page  # a run-all can be stopped
    text = client.post(
        f"/tests/{started.pk}/run-all/", {"concurrency": "3", "grade": "none"}, follow=True
    ).content.decode()
    assert "Run all is already running this test (started by Olive Operator)" in text
    assert "409" not in messages_of(text)
    assert RunAll.objects.filter(test=started).count() == 1


def test_run_all_checks_its_form_and_asks_an_infinite_test_how_many(
    benchmark: Any, operator: Any
) -> None:
    client = logged_in(operator)
    test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk, infinite_mode=True)
    assert 'name="max_runs"' in page_of(client, test)
    text = client.post(
        f"/tests/{test.pk}/run-all/", {"concurrency": "99", "grade": "ai"}, follow=True
    ).content.decode()
    assert "Run all did not start. Runs at once:" in text
    text = client.post(
        f"/tests/{test.pk}/run-all/", {"concurrency": "2", "grade": "ai"}, follow=True
    ).content.decode()
    assert "An infinite test never runs out of runs: say in How many runs when to stop." in text
    assert not RunAll.objects.exists()
    client.post(f"/tests/{test.pk}/run-all/", {"concurrency": "2", "grade": "ai", "max_runs": "5"})
    assert RunAll.objects.get(test=test).max_runs == 5


def test_retry_failed_puts_failed_runs_back_and_says_how_many(
    started: Test, operator: Any, viewer: Any
) -> None:
    client = logged_in(operator)
    assert 'id="control-retry"' not in page_of(client, started)
    failed = started.runs.order_by("ordinal").first()
    assert failed is not None
    # Set up as the sweep leaves a run whose attempts ran out.
    TestRun.objects.filter(pk=failed.pk).update(status=TestRun.Status.FAILED)
    page = page_of(client, started)
    assert "Retry failed (1)</button>" in page
    assert 'id="control-retry"' not in page_of(logged_in(viewer), started)
    text = client.post(f"/tests/{started.pk}/retry/", follow=True).content.decode()
    assert "1 failed run is back in the queue" in text
    failed.refresh_from_db()
    assert failed.status == TestRun.Status.PENDING
    text = client.post(f"/tests/{started.pk}/retry/", follow=True).content.decode()
    assert "No failed run to retry." in text


def test_a_completed_test_with_failed_runs_offers_retry(
    started: Test, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    client = logged_in(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/tests/{started.pk}/run-all/", {"concurrency": "2", "grade": "none"})
    started.refresh_from_db()
    assert started.status == Test.Status.COMPLETED
    TestRun.objects.filter(test=started, ordinal=1).update(status=TestRun.Status.FAILED)
    page = page_of(client, started)
    assert "Retry failed (1)</button>" in page
    client.post(f"/tests/{started.pk}/retry/")
    started.refresh_from_db()
    assert started.status == Test.Status.RUNNING
    assert 'id="control-run-all"' in page_of(client, started)


def test_stopping_a_run_all_from_the_page_stops_the_test_and_its_replays(
    started: Test, operator: Any
) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/run-all/", {"concurrency": "2", "grade": "none"})
    run_all = RunAll.objects.get(test=started)
    # Its first tick claims two runs; their replays are left queued (not run in this test).
    tick_run_all(run_all_id=run_all.pk)
    assert TestInvocation.objects.filter(test=started, run_all=run_all).count() == 2
    text = client.post(f"/tests/{started.pk}/stop/", follow=True).content.decode()
    assert "The test is stopped" in text
    run_all.refresh_from_db()
    started.refresh_from_db()
    assert (run_all.status, started.status) == (RunAll.Status.STOPPED, Test.Status.STOPPED)
    assert set(TestInvocation.objects.filter(test=started).values_list("status", flat=True)) == {
        TestInvocation.Status.STOPPED
    }
    page = page_of(client, started)
    assert "The last Run all stopped at" in page
    assert "the test was stopped" in page


def test_stop_between_two_claims_of_a_run_all_stops_the_test_with_nothing_open(
    started: Test, operator: Any
) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/run-all/", {"concurrency": "2", "grade": "none"})
    run_all = RunAll.objects.get(test=started)
    # Not ticked yet: the run-all is active but has no invocation open, as between two claims.
    assert not TestInvocation.objects.filter(test=started).exists()
    text = client.post(f"/tests/{started.pk}/stop/", follow=True).content.decode()
    assert "The test is stopped" in messages_of(text)
    run_all.refresh_from_db()
    started.refresh_from_db()
    assert (run_all.status, started.status) == (RunAll.Status.STOPPED, Test.Status.STOPPED)
    assert started.finished_at is not None
    # A tick that comes afterwards claims nothing in the stopped test.
    tick_run_all(run_all_id=run_all.pk)
    assert not TestInvocation.objects.filter(test=started).exists()
    again = client.post(f"/tests/{started.pk}/stop/", follow=True).content.decode()
    assert "already stopped: there is nothing to stop" in messages_of(again)


def test_a_failed_run_says_why_it_cannot_be_regraded(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/next/")
    # Set up as a target error leaves it.
    TestInvocation.objects.filter(test=started).update(status=TestInvocation.Status.FAILED)
    page = page_of(client, started)
    assert "This run failed, so there is nothing to grade: retry the failed runs" in page
    assert "end it before regrading" not in page


def test_a_run_queued_by_run_all_is_not_offered_to_run_again(started: Test, operator: Any) -> None:
    client = logged_in(operator)
    client.post(f"/tests/{started.pk}/run-all/", {"concurrency": "1", "grade": "none"})
    tick_run_all(run_all_id=RunAll.objects.get(test=started).pk)  # its replay stays queued
    page = page_of(client, started)
    assert 'id="control-run"' not in page
    assert "the replay is queued and starts when a worker is free" in page
    assert "up to 1 run at once" in page
