"""The compare page: reached from the list and from a test, its figures and sentences, the
entries by change and by delta, one entry side by side, and the CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from tests import factories
from tests_app.models import Benchmark, Test, TestRun
from tests_app.pages import compare as words

pytestmark = pytest.mark.django_db

BASELINE: list[list[factories.Outcome]] = [
    [(0.9, True)],
    [(0.8, True)],
    [(0.3, False)],
    [(0.6, False)],
]
CANDIDATE: list[list[factories.Outcome]] = [
    [(0.95, True)],
    [(0.4, False)],
    [(0.9, True)],
    [(0.75, True)],
]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def four(research: Any) -> Benchmark:
    return factories.make_benchmark(department=research, entries=4, turns=2, name="Refunds")


@pytest.fixture
def pair(research: Any, four: Benchmark, operator: Any) -> tuple[Test, Test]:
    local = factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b"
    )
    baseline = factories.make_graded_test(
        four, BASELINE, actor=operator, created_at=timezone.now() - timedelta(days=1)
    )
    candidate = factories.make_graded_test(four, CANDIDATE, target=local, actor=operator)
    return baseline, candidate


def url(*tests: Test, **params: str) -> str:
    query = "&".join([f"ids={test.pk}" for test in tests] + [f"{k}={v}" for k, v in params.items()])
    return f"/tests/compare/?{query}"


def positions(page: str) -> list[int]:
    return [int(value) for value in re.findall(r'<tr data-position="(\d+)"', page)]


def test_the_page_shows_targets_figures_and_deltas_in_words(
    viewer: Any, pair: tuple[Test, Test]
) -> None:
    baseline, candidate = pair

    response = logged_in(viewer).get(url(baseline, candidate))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Compare 2 tests" in page
    assert "Local" in page
    assert "qwen2.5:7b" in page
    # The candidate: +0.05, -0.4, +0.6, +0.15 over four entries: 0.10 higher on average.
    assert "The candidate scores 0.10 higher on the 4 entries graded in both, 95% interval" in page
    assert "1 entry regressed, 2 improved and 1 did not change" in page
    assert page.count('class="chart chart-histogram"') == 2
    assert positions(page) == [1, 2, 3, 4]
    assert 'data-position="2" data-change="regression"' in page


def test_entries_filter_by_change_and_sort_by_delta(viewer: Any, pair: tuple[Test, Test]) -> None:
    client = logged_in(viewer)

    assert positions(client.get(url(*pair, only="regressions")).content.decode()) == [2]
    assert positions(client.get(url(*pair, only="changed")).content.decode()) == [2, 3, 4]
    # Worst first: -0.4, +0.05, +0.15, +0.6.
    assert positions(client.get(url(*pair, order="delta")).content.decode()) == [2, 1, 4, 3]


def test_an_entry_opens_side_by_side_with_the_diff(viewer: Any, pair: tuple[Test, Test]) -> None:
    baseline, candidate = pair
    for test, output in ((baseline, "Answer 1."), (candidate, "Answer one.")):
        run = TestRun.objects.get(test=test, entry__position=1)
        factories.ReplayStepFactory.create(
            invocation_id=run.latest_invocation_id,
            turn=1,
            input="Question 1?",
            reference="Answer 1.",
            output=output,
        )

    page = logged_in(viewer).get(url(*pair, entry="1")).content.decode()

    table = re.search(
        r'<table class="data side-by-side-table" id="entry-turns">(.*?)</table>', page, re.S
    )
    assert table
    row = re.search(r'<tr data-turn="1">(.*?)</tr>', table.group(1), re.S)
    assert row
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    turn, reference, baseline_output, candidate_output = cells
    assert "Question 1?" in turn
    assert "Answer 1." in reference
    # Each output against the reference, as on the test page.
    assert "Answer 1." in baseline_output
    assert "<ins>" not in baseline_output
    assert "<ins>one.</ins>" in candidate_output
    run = TestRun.objects.get(test=candidate, entry__position=1)
    assert f"?invocation={run.latest_invocation_id}#transcript" in page


def test_the_csv_has_every_entry(viewer: Any, pair: tuple[Test, Test]) -> None:
    baseline, candidate = pair

    response = logged_in(viewer).get(
        "/tests/compare/csv?" + f"ids={baseline.pk}&ids={candidate.pk}"
    )

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="comparison.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["position"] for row in rows] == ["1", "2", "3", "4"]
    second = rows[1]
    assert second["change"] == "regression"
    assert (second["baseline_mean_score"], second["candidate1_mean_score"]) == ("0.8", "0.4")
    assert float(second["score_delta"]) == pytest.approx(-0.4)


def test_the_list_compares_the_ticked_tests_oldest_first(
    viewer: Any, pair: tuple[Test, Test]
) -> None:
    baseline, candidate = pair
    client = logged_in(viewer)
    page = client.get("/tests/").content.decode()
    assert 'id="compare-form"' in page
    assert f'name="ids" value="{candidate.pk}" form="compare-form"' in page

    # The list is newest first; the oldest ticked test becomes the baseline.
    response = client.get(url(candidate, baseline, oldest_first="1"))

    assert response.status_code == 302
    assert parse_qs(urlsplit(response["Location"]).query)["ids"] == [
        str(baseline.pk),
        str(candidate.pk),
    ]


def test_a_test_page_offers_the_other_tests_of_its_benchmark(
    viewer: Any, pair: tuple[Test, Test]
) -> None:
    baseline, candidate = pair

    page = logged_in(viewer).get(f"/tests/{candidate.pk}/").content.decode()

    section = re.search(r'id="compare-with">(.*?)</section>', page, re.S)
    assert section
    assert f"ids={candidate.pk}&amp;ids={baseline.pk}&amp;oldest_first=1" in section.group(1)


def test_an_outsider_gets_404_and_wrong_choices_go_back_to_the_list(
    outsider: Any, viewer: Any, pair: tuple[Test, Test], research: Any
) -> None:
    assert logged_in(outsider).get(url(*pair)).status_code == 404
    assert (
        logged_in(outsider)
        .get("/tests/compare/csv?" + f"ids={pair[0].pk}&ids={pair[1].pk}")
        .status_code
        == 404
    )

    client = logged_in(viewer)
    response = client.get(url(pair[0]), follow=True)
    assert response.redirect_chain[-1][0] == "/tests/"
    assert "Compare 2 to 5 tests" in response.content.decode()
    other = factories.make_graded_test(
        factories.make_benchmark(department=research, entries=1), [[(1.0, True)]]
    )
    response = client.get(url(pair[0], other), follow=True)
    assert "different benchmarks" in response.content.decode()


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (
            {
                "entries_compared": 480,
                "mean_score_delta": 0.06,
                "mean_score_delta_ci": [0.02, 0.1],
                "p_value": 0.004,
            },
            "The candidate scores 0.06 higher on the 480 entries graded in both, 95% interval "
            "0.02 to 0.10: unlikely to be chance, p = 0.004.",
        ),
        (
            {
                "entries_compared": 12,
                "mean_score_delta": -0.03,
                "mean_score_delta_ci": [-0.09, 0.04],
                "p_value": 0.41,
            },
            "The candidate scores 0.03 lower on the 12 entries graded in both, 95% interval "
            "-0.09 to 0.04: could well be chance, p = 0.41.",
        ),
        (
            {
                "entries_compared": 0,
                "mean_score_delta": None,
                "mean_score_delta_ci": None,
                "p_value": None,
            },
            "No entry is graded in both tests yet, so their scores cannot be compared.",
        ),
    ],
)
def test_score_sentences(delta: dict[str, Any], expected: str) -> None:
    assert words.score_sentence(delta) == expected


def test_verdict_sentence() -> None:
    delta = {
        "regressions": 12,
        "improvements": 17,
        "unchanged": 451,
        "pass_rate_delta": 0.04,
        "mcnemar_p": 0.47,
    }
    assert words.verdict_sentence(delta) == (
        "12 entries regressed, 17 improved and 451 did not change; the pass rate is 4 points "
        "higher per entry; the flips of pass and fail could well be chance (p = 0.47)."
    )


def test_the_histogram_chart_escapes_labels_and_draws_each_count() -> None:
    from tests_app.pages import charts

    svg = str(
        charts.histogram(
            {"<b>base</b>": [0, 2, 5], "cand": [1, 0, 0]},
            [0.0, 0.5, 0.75, 1.0],
            title="Scores & more",
            x_label="score",
            marker=0.5,
        )
    )
    assert "<b>" not in svg
    assert "&lt;b&gt;base&lt;/b&gt;, 0.75 to 1.00: 5" in svg
    assert "cand, 0.00 to 0.50: 1" in svg
    assert svg.count("<rect") == 3  # zero counts draw nothing
    assert 'stroke-dasharray="4 3"' in svg  # the marker
    assert "Scores &amp; more" in svg
