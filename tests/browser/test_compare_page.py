"""The compare page in a real chromium: tick two tests in the list, compare, open an entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.browser.test_pages import grade_every_run, is_png, log_in
from tests.integration.daphne import DaphneServer
from tests_app.actors import Actor
from tests_app.models import TestRun
from tests_app.services.regrading import regrade_invocation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_compare_two_tests_from_the_list_and_open_an_entry(
    page: Any, browser_server: DaphneServer, staff: Any, research: Any, artifacts: Path
) -> None:
    benchmark = factories.make_benchmark(department=research, name="Capitals", entries=4, turns=2)
    baseline = grade_every_run(benchmark, staff, score=0.9)
    candidate = grade_every_run(benchmark, staff, score=0.9)
    # The candidate fails the second entry: a regression to find.
    run = TestRun.objects.get(test=candidate, entry__position=2)
    assert run.latest_invocation_id is not None
    regrade_invocation(
        actor=Actor(user=staff),
        invocation_id=run.latest_invocation_id,
        score=0.2,
        passed=False,
        feedback="Wrong capital.",
        reason="Checked by hand.",
    )

    log_in(page, browser_server, "staff")
    for test in (baseline, candidate):
        page.locator(f'tr[data-test-id="{test.pk}"] input[name="ids"]').check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(f"{browser_server.http_url}/tests/compare/*")

    assert page.locator("#compare-tests tbody tr").count() == 2
    assert (
        "baseline" in page.locator(f'#compare-tests tr[data-test-id="{baseline.pk}"]').inner_text()
    )
    sentence = page.locator("#deltas .delta-score").inner_text()
    assert "scores 0.17 lower on the 4 entries graded in both" in sentence
    assert "1 entry regressed" in page.locator("#deltas .delta-verdicts").inner_text()
    assert page.locator("svg.chart-histogram").count() == 2

    page.get_by_role("link", name="Regressions").click()
    rows = page.locator("#compare-entries tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-position") == "2"
    rows.first.get_by_role("link", name="side by side").click()
    turns = page.locator("#entry-turns tbody tr")
    turns.first.wait_for()
    assert turns.count() == 2
    screenshot = artifacts / "compare-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert is_png(screenshot)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("position,entry_id,title,change,baseline_runs")
    assert len(text.splitlines()) == 5
