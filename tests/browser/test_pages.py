"""The staff pages in a real chromium against a real daphne (embedded runtime, live websocket).

Data is created here with factories and services and committed (transactional_db), so the daphne
process sees it; what the browser does is then checked in the page and in the database.
"""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.browser.server import FAKE_KEY_ENV
from tests.fake_model import FakeModel
from tests.integration.daphne import DaphneServer
from tests_app.actors import Actor
from tests_app.models import Grade, Test, TestInvocation, TestRun
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.refresh import refresh_analytics_views
from tests_app.services.running import request_replay
from tests_app.services.starting import start_test

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"  # the factories' password


def log_in(page: Any, server: DaphneServer, username: str, then: str = "/tests/") -> None:
    page.goto(f"{server.http_url}/accounts/login/?next={then}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.http_url}{then}*")


def grade_every_run(benchmark: Any, user: Any, *, score: float) -> Test:
    """A test of ``benchmark`` whose runs are replayed (inline) and graded ``score``."""
    actor = Actor(user=user)
    test = start_test(actor=actor, benchmark_id=benchmark.pk)
    for _ in range(test.total_runs):
        claim = claim_next_run(actor=actor, test_id=test.pk)
        invocation_id, run_id = claim.invocation.pk, claim.run.pk
        request_replay(actor=actor, test_id=test.pk, invocation_id=invocation_id, run_id=run_id)
        end_invocation(
            actor=actor, test_id=test.pk, invocation_id=invocation_id, run_id=run_id, score=score
        )
    return test


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_log_in_and_filter_the_search_by_a_facet(
    page: Any,
    browser_server: DaphneServer,
    staff: Any,
    research: Any,
    support: Any,
    artifacts: Path,
) -> None:
    geography = factories.make_benchmark(
        department=research, name="Capitals", eval__name="Geography QA"
    )
    tone = factories.make_benchmark(department=support, name="Refunds", eval__name="Support tone")
    for benchmark in (geography, tone, tone):
        start_test(actor=Actor(user=staff), benchmark_id=benchmark.pk)

    log_in(page, browser_server, "staff")
    rows = page.locator("#test-table tbody tr[data-test-id]")
    assert rows.count() == 3
    facet = page.locator('a.facet-option[data-facet="eval"]', has_text="Support tone")
    assert facet.locator(".count").inner_text() == "2"
    page.screenshot(path=str(artifacts / "tests-page.png"), full_page=True)

    facet.click()
    page.wait_for_url("**eval=*")
    assert rows.count() == 2
    assert set(rows.locator('td[data-label="Benchmark"] a').all_inner_texts()) == {"Refunds"}
    selected = page.locator("a.facet-option.selected")
    assert selected.count() == 1
    assert "Support tone" in selected.inner_text()


def test_run_a_test_live_grade_regrade_and_export(
    page: Any,
    browser_server: DaphneServer,
    staff: Any,
    research: Any,
    fake_model: FakeModel,
    artifacts: Path,
) -> None:
    # A slow model, so the turns arrive one by one while the page is open.
    fake_model.delay_s = 0.6
    benchmark = factories.make_benchmark(
        department=research,
        name="Slow capitals",
        entries=1,
        turns=3,
        target={
            "kind": "openai",
            "model": "fake-model",
            "base_url": fake_model.base_url,
            "api_key_env": FAKE_KEY_ENV,
            "timeout_s": 10,
        },
    )
    test = start_test(actor=Actor(user=staff), benchmark_id=benchmark.pk)

    log_in(page, browser_server, "staff", then=f"/tests/{test.pk}/")
    page.get_by_role("button", name="Next run").click()
    run_button = page.locator("#control-run")
    run_button.wait_for()
    run_button.click()
    page.wait_for_load_state()
    # Anything set on window survives only if the page is not reloaded.
    page.evaluate("window.stillTheSamePage = true")

    turns = page.locator("#turns > li.turn")
    turns.nth(2).wait_for()
    assert turns.count() == 3
    assert "Echo: Question 3?" in page.locator("#turns").inner_text()
    assert int(page.locator("#live").get_attribute("data-steps-received") or 0) >= 1
    end_button = page.locator("#control-end")
    end_button.wait_for()  # the run.completed event refreshed the controls
    assert page.evaluate("window.stillTheSamePage") is True
    invocation = TestInvocation.objects.get(test=test)
    assert invocation.status == TestInvocation.Status.REPLAYED
    assert invocation.steps.count() == 3

    end_button.click()
    grade_card = page.locator('#grades article[data-grade-source="reference"]')
    grade_card.locator(".status-done").wait_for()
    grade = Grade.objects.get(invocation=invocation)
    assert grade.status == Grade.Status.DONE
    assert f"{grade.score:.2f}" in grade_card.inner_text()
    assert "differs" in page.locator("#turns").inner_text()  # echo answers differ
    assert page.locator("#turns del").count() >= 1

    page.get_by_label("Score (0 to 1)").fill("0.35")
    page.get_by_label("Verdict").select_option("false")
    page.get_by_label("Feedback").fill("Answers repeat the question.")
    page.get_by_label("Reason for the override").fill("The reference grader is too lenient.")
    page.get_by_role("button", name="Save human grade").click()
    human_card = page.locator('#grades article[data-grade-source="human"]')
    human_card.wait_for()
    assert "The reference grader is too lenient." in human_card.inner_text()
    assert page.locator("#grades article").count() == 2  # the earlier grade is kept
    run = TestRun.objects.get(test=test)
    assert (run.score, run.passed) == (0.35, False)
    assert Grade.objects.get(invocation=invocation, source="human").actor == staff

    screenshot = artifacts / "test-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.exists()
    assert is_png(screenshot)

    page.get_by_role("button", name="Export ZIP").click()
    link = page.locator("a.download-link").first
    link.wait_for()
    with page.expect_download() as download_info:
        link.click()
    content = Path(download_info.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert {"runs.csv", "turns.csv", "manifest.json"} <= set(archive.namelist())
        runs_csv = archive.read("runs.csv").decode()
    assert str(run.pk) in runs_csv
    assert Test.objects.get(pk=test.pk).status == Test.Status.COMPLETED


def test_benchmarks_and_dashboard_pages(
    page: Any, browser_server: DaphneServer, operator: Any, research: Any, artifacts: Path
) -> None:
    benchmark = factories.make_benchmark(department=research, name="Demo benchmark")
    log_in(page, browser_server, "operator", then="/benchmarks/")
    # Keyboard: the first Tab lands on the skip link, and Enter on a focused button submits.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.screenshot(path=str(artifacts / "benchmarks-page.png"), full_page=True)
    page.get_by_role("button", name="Start test of Demo benchmark").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/tests/*/")
    test = Test.objects.get(benchmark=benchmark)
    assert page.url.endswith(f"/tests/{test.pk}/")
    assert test.created_by == operator

    # Graded history for the dashboard: two evals over three days.
    other = factories.make_benchmark(department=research, name="Other", eval__name="Tone")
    for day, (first, second) in enumerate([(0.9, 0.4), (0.8, 0.75), (0.95, 0.9)]):
        for graded_benchmark, score in ((benchmark, first), (other, second)):
            graded = grade_every_run(graded_benchmark, operator, score=score)
            Test.objects.filter(pk=graded.pk).update(
                created_at=timezone.now() - timedelta(days=2 - day)
            )
    refresh_analytics_views()

    page.goto(f"{browser_server.http_url}/dashboard/")
    assert page.locator("svg.chart-line").count() == 2
    assert page.locator("svg.chart-line polyline").count() == 4  # two evals in two charts
    assert page.locator("#eval-table tbody tr").count() == 2
    page.screenshot(path=str(artifacts / "dashboard-page.png"), full_page=True)
    # A narrow screen stacks the tables instead of overflowing.
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(f"{browser_server.http_url}/tests/{test.pk}/")
    page.screenshot(path=str(artifacts / "test-page-narrow.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390


def test_pages_and_api_viewers_work_under_the_content_security_policy(
    page: Any,
    browser_server: DaphneServer,
    staff: Any,
    research: Any,
    csp_violations: list[str],
    artifacts: Path,
) -> None:
    benchmark = factories.make_benchmark(department=research, name="Under CSP")
    test = start_test(actor=Actor(user=staff), benchmark_id=benchmark.pk)
    log_in(page, browser_server, "staff")
    for path in ("/tests/", f"/tests/{test.pk}/", "/benchmarks/", "/dashboard/", "/admin/"):
        response = page.goto(f"{browser_server.http_url}{path}")
        assert response is not None
        assert response.ok, path
        assert "default-src 'self'" in (response.header_value("content-security-policy") or "")
        page.wait_for_load_state("networkidle")
        assert csp_violations == [], path
    # The live page's script connected its websocket under connect-src 'self'.
    page.goto(f"{browser_server.http_url}/tests/{test.pk}/")
    page.locator("#live-indicator").wait_for(state="visible")

    page.goto(f"{browser_server.http_url}/api/docs/")
    page.locator(".swagger-ui .info .title", has_text="replaybench API").wait_for()
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() >= 12
    page.locator(".opblock-summary", has_text="/api/v5/artifacts/test/search").first.click()
    page.get_by_role("button", name="Try it out").wait_for()
    assert csp_violations == [], "/api/docs/"

    page.goto(f"{browser_server.http_url}/api/redoc/")
    page.locator("h1", has_text="replaybench API").wait_for()
    page.locator("h2", has_text="Search Test").first.wait_for()
    page.get_by_placeholder("Search...").fill("archive")  # Redoc's search runs in a worker
    results = page.locator('[data-role="search:results"] [role="menuitem"]')
    results.filter(has_text="Archive Test Artifacts").first.wait_for()
    page.screenshot(path=str(artifacts / "redoc-page.png"))
    assert csp_violations == [], "/api/redoc/"
