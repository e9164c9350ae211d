"""Run all, Retry failed and Stop on the test page, in chromium against the embedded daphne.

The replays run in the daphne process (its thread pool) against the fake model; the page follows
them over its websocket, so each test checks that the page was not reloaded while it did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.browser.server import FAKE_KEY_ENV
from tests.browser.test_pages import log_in
from tests.fake_model import FakeModel, Reply
from tests.integration.daphne import DaphneServer
from tests_app.actors import Actor
from tests_app.models import RunAll, Test, TestInvocation, TestRun
from tests_app.services.starting import start_test

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def fake_target(fake_model: FakeModel) -> dict[str, Any]:
    return {
        "kind": "openai",
        "model": "fake-model",
        "base_url": fake_model.base_url,
        "api_key_env": FAKE_KEY_ENV,
        "timeout_s": 10,
        "max_retries": 0,
    }


def a_test(
    research: Any, staff: Any, fake_model: FakeModel, *, name: str, entries: int, turns: int
) -> Test:
    """A started test of a new benchmark of Research against the fake model."""
    benchmark = factories.make_benchmark(
        department=research, name=name, entries=entries, turns=turns, target=fake_target(fake_model)
    )
    return start_test(actor=Actor(user=staff), benchmark_id=benchmark.pk)


def open_live(page: Any, browser_server: DaphneServer, test: Test) -> None:
    """Log in as staff on the test's page and wait until it listens on the websocket."""
    log_in(page, browser_server, "staff", then=f"/tests/{test.pk}/")
    page.locator("#live-indicator").wait_for(state="visible")


def mark_the_page(page: Any) -> None:
    # Anything set on window survives only if the page is not reloaded.
    page.evaluate("window.stillTheSamePage = true")


def still_the_same_page(page: Any) -> bool:
    return bool(page.evaluate("window.stillTheSamePage === true"))


def finished_runs(page: Any) -> int:
    return int(page.locator("#run-progress").get_attribute("value") or 0)


def start_run_all(page: Any, *, concurrency: int, grade: str) -> None:
    page.get_by_label("Runs at once").fill(str(concurrency))
    page.get_by_label("Grade each run").select_option(grade)
    page.locator("#control-run-all").click()
    # The message is on the page the form's POST redirects to (the page it left has none).
    page.locator(".messages", has_text="Run all started").wait_for()
    page.wait_for_load_state()


def test_run_all_to_completion_with_live_progress(
    page: Any,
    browser_server: DaphneServer,
    staff: Any,
    research: Any,
    fake_model: FakeModel,
    artifacts: Path,
) -> None:
    fake_model.delay_s = 0.4  # slow enough to watch the progress move
    test = a_test(research, staff, fake_model, name="Run all capitals", entries=6, turns=1)
    open_live(page, browser_server, test)
    assert "Run all 6 waiting runs" in page.locator("#control-run-all").inner_text()

    start_run_all(page, concurrency=2, grade="ai")
    assert "Run all started: up to 2 runs at once" in page.locator(".messages").inner_text()
    page.locator("#live-indicator").wait_for(state="visible")
    mark_the_page(page)
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and finished_runs(page) < 6:
        seen.add(finished_runs(page))
        time.sleep(0.05)
    page.locator("#test-status", has_text="completed").wait_for()
    assert finished_runs(page) == 6
    assert seen & {1, 2, 3, 4, 5}, seen  # the bar moved while the runs went on
    assert "6 of 6 runs finished" in page.locator("#progress-words").inner_text()
    page.locator("#run-all-finished", has_text="every run has finished").wait_for()
    assert still_the_same_page(page)
    assert fake_model.max_in_flight <= 2
    test.refresh_from_db()
    assert (test.status, test.completed_runs) == (Test.Status.COMPLETED, 6)
    assert RunAll.objects.get(test=test).status == RunAll.Status.FINISHED
    page.screenshot(path=str(artifacts / "test-page-run-all.png"), full_page=True)


def test_retry_failed_then_run_all_again(
    page: Any, browser_server: DaphneServer, staff: Any, research: Any, fake_model: FakeModel
) -> None:
    test = a_test(research, staff, fake_model, name="Flaky capitals", entries=3, turns=1)
    # The model refuses the first two requests: two runs fail, the third completes.
    fake_model.script(Reply(status=400), Reply(status=400))
    open_live(page, browser_server, test)
    start_run_all(page, concurrency=1, grade="none")
    mark_the_page(page)
    # Appears live with the first failed run, and counts the second when it is in.
    retry = page.locator("#control-retry", has_text="Retry failed (2)")
    retry.wait_for()
    page.locator("#test-status", has_text="completed").wait_for()
    assert still_the_same_page(page)
    assert TestRun.objects.filter(test=test, status=TestRun.Status.FAILED).count() == 2

    retry.click()
    page.locator(".messages", has_text="2 failed runs are back in the queue").wait_for()
    assert "Run all 2 waiting runs" in page.locator("#control-run-all").inner_text()
    start_run_all(page, concurrency=2, grade="none")
    mark_the_page(page)
    page.locator("#test-status", has_text="completed").wait_for()
    page.locator("#progress-words", has_text="3 of 3 runs finished").wait_for()
    assert still_the_same_page(page)
    assert TestRun.objects.filter(test=test, status=TestRun.Status.COMPLETED).count() == 3
    # The failed attempts stay as history.
    assert TestInvocation.objects.filter(test=test, status="failed").count() == 2


def test_stop_asks_for_confirmation_then_stops_the_run_all(
    page: Any,
    browser_server: DaphneServer,
    staff: Any,
    research: Any,
    fake_model: FakeModel,
    artifacts: Path,
) -> None:
    fake_model.delay_s = 1.0  # each turn takes a second: there is time to stop
    test = a_test(research, staff, fake_model, name="Slow to stop", entries=4, turns=3)
    open_live(page, browser_server, test)
    start_run_all(page, concurrency=1, grade="none")
    page.locator("#run-all-status").wait_for()

    stop = page.locator("#control-stop")
    stop.click()
    dialog = page.locator("#stop-dialog")
    dialog.wait_for(state="visible")
    assert "A stopped test cannot be resumed" in dialog.inner_text()
    page.screenshot(path=str(artifacts / "test-page-stop-dialog.png"))
    page.locator("#dialog-cancel-stop").click()
    dialog.wait_for(state="hidden")
    test.refresh_from_db()
    assert test.status == Test.Status.RUNNING  # keeping it running changed nothing

    page.locator("#control-stop").click()
    dialog.wait_for(state="visible")
    page.locator("#dialog-confirm-stop").click()
    page.locator(".messages", has_text="The test is stopped").wait_for()
    page.locator("#test-status", has_text="stopped").wait_for()
    page.locator("#run-all-finished", has_text="the test was stopped").wait_for()
    test.refresh_from_db()
    assert test.status == Test.Status.STOPPED
    assert RunAll.objects.get(test=test).status == RunAll.Status.STOPPED
    assert TestRun.objects.filter(test=test, status=TestRun.Status.COMPLETED).count() < 4
