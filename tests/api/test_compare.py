"""POST /api/v5/artifacts/test/compare"""

from __future__ import annotations

import itertools
import json
import math
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from drf_orjson_renderer.renderers import ORJSONRenderer

from tests import factories
from tests.api.lifecycle_support import assert_error, post
from tests_app.api.compare_serializers import CompareTestResponseSerializer
from tests_app.models import Benchmark, Test, TestRun
from tests_app.selectors.compare import compare_tests

pytestmark = pytest.mark.django_db

graded_test = factories.make_graded_test
Outcome = factories.Outcome


def compare(client: Any, *tests: Test, **body: Any) -> Any:
    return post(client, "compare", {"test_ids": [str(test.pk) for test in tests], **body})


@pytest.fixture
def six(research: Any) -> Benchmark:
    return factories.make_benchmark(department=research, entries=6, turns=1)


# Baseline and candidate on six entries: (score, passed) of the one run of each.
BASELINE: list[list[Outcome]] = [
    [(0.9, True)],
    [(0.8, True)],
    [(0.3, False)],
    [(0.6, False)],
    [(0.7, True)],
    [(0.5, False)],
]
CANDIDATE: list[list[Outcome]] = [
    [(0.95, True)],  # unchanged verdict, score up
    [(0.4, False)],  # regression
    [(0.9, True)],  # improvement
    [(0.75, True)],  # improvement
    [(0.7, True)],  # unchanged
    [None],  # incomplete: not graded
]


def test_it_works(client_for: Any, viewer: Any, research: Any, six: Benchmark) -> None:
    local = factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b"
    )
    baseline = graded_test(six, BASELINE)
    candidate = graded_test(six, CANDIDATE, target=local, target_snapshot={"model": "qwen2.5:7b"})

    response = compare(client_for(viewer), baseline, candidate)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["baseline_test_id"] == str(baseline.pk)
    assert body["benchmark_id"] == str(six.pk)
    assert body["total_entries"] == 6
    first, second = body["tests"]
    assert first["id"] == str(baseline.pk)
    assert second["target"] == {"id": str(local.pk), "name": "Local", "model": "qwen2.5:7b"}
    assert (first["total_runs"], first["graded"]) == (6, 6)
    assert (second["total_runs"], second["graded"]) == (6, 5)
    assert first["mean_score"] == pytest.approx(3.8 / 6)
    assert first["pass_rate"] == pytest.approx(3 / 6)
    assert second["pass_rate"] == pytest.approx(4 / 5)
    assert first["mean_score_ci"] is not None
    assert second["pass_rate_ci"] is not None

    [delta] = body["deltas"]
    # Five entries graded in both; differences of score by hand.
    differences = [0.05, -0.4, 0.6, 0.15, 0.0]
    assert delta["test_id"] == str(candidate.pk)
    assert delta["entries_compared"] == 5
    assert delta["mean_score_delta"] == pytest.approx(sum(differences) / 5)
    low, high = delta["mean_score_delta_ci"]
    assert low <= sum(differences) / 5 <= high
    assert min(differences) <= low
    assert high <= max(differences)
    assert delta["pass_rate_delta"] == pytest.approx((0 - 1 + 1 + 1 + 0) / 5)
    assert (delta["regressions"], delta["improvements"], delta["unchanged"]) == (1, 2, 2)
    # Flips: one passed -> failed, two failed -> passed: 2 * (C(3,0) + C(3,1)) / 2^3 = 1.
    assert delta["mcnemar_p"] == pytest.approx(1.0)
    # Wilcoxon, zero dropped, 4 differences without ties: exact, by enumerating the signs.
    nonzero = [d for d in differences if d]
    ranks = {abs(d): r for r, d in enumerate(sorted(nonzero, key=abs), start=1)}
    observed = sum(ranks[abs(d)] for d in nonzero if d > 0)
    sums = [
        sum(ranks[abs(d)] for d, up in zip(nonzero, signs, strict=True) if up)
        for signs in itertools.product([False, True], repeat=len(nonzero))
    ]
    tail = min(sum(s <= observed for s in sums), sum(s >= observed for s in sums)) / len(sums)
    assert delta["p_value"] == pytest.approx(min(1.0, 2 * tail))

    entries = body["entries"]
    assert [entry["position"] for entry in entries] == [1, 2, 3, 4, 5, 6]
    assert [entry["change"] for entry in entries] == [
        "unchanged",
        "regression",
        "improvement",
        "improvement",
        "unchanged",
        "incomplete",
    ]
    second_entry = entries[1]
    assert second_entry["entry_id"] == str(six.entries.get(position=2).pk)
    assert second_entry["title"] == six.entries.get(position=2).title
    baseline_result, candidate_result = second_entry["results"]
    run = TestRun.objects.get(test=candidate, entry__position=2)
    assert candidate_result == {
        "test_id": str(candidate.pk),
        "runs": 1,
        "graded": 1,
        "mean_score": 0.4,
        "pass_rate": 0.0,
        "invocation_id": str(run.latest_invocation_id),
    }
    assert baseline_result["mean_score"] == 0.8
    assert entries[5]["results"][1]["graded"] == 0
    assert entries[5]["results"][1]["mean_score"] is None

    # The same data gives the same answer, interval included.
    assert compare(client_for(viewer), baseline, candidate).json() == body


def test_only_and_paging(client_for: Any, viewer: Any, six: Benchmark) -> None:
    baseline, candidate = graded_test(six, BASELINE), graded_test(six, CANDIDATE)
    client = client_for(viewer)

    body = compare(client, baseline, candidate, only="changed").json()
    assert [entry["position"] for entry in body["entries"]] == [2, 3, 4]
    assert body["total_entries"] == 3
    assert compare(client, baseline, candidate, only="regressions").json()["total_entries"] == 1
    improvements = compare(client, baseline, candidate, only="improvements").json()
    assert [entry["position"] for entry in improvements["entries"]] == [3, 4]

    page = compare(client, baseline, candidate, page_size=2, page_offset=3).json()
    assert [entry["position"] for entry in page["entries"]] == [4, 5]
    assert page["total_entries"] == 6
    # The deltas do not depend on the page or the filter.
    assert page["deltas"] == body["deltas"]


def test_entries_without_a_verdict_change_by_more_than_the_margin(
    client_for: Any, viewer: Any, six: Benchmark
) -> None:
    baseline = graded_test(six, [[(0.5, None)]] * 4)
    candidate = graded_test(six, [[(0.56, None)], [(0.53, None)], [(0.44, None)], [(0.47, None)]])

    body = compare(client_for(viewer), baseline, candidate).json()

    # Margin 0.05: +0.06 and -0.06 count, +-0.03 do not.
    assert [entry["change"] for entry in body["entries"]] == [
        "improvement",
        "unchanged",
        "regression",
        "unchanged",
    ]
    assert body["deltas"][0]["pass_rate_delta"] is None
    assert body["deltas"][0]["mcnemar_p"] is None


def test_repeated_runs_compare_pass_rates_and_majority_verdicts(
    client_for: Any, viewer: Any, research: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=2, runs_per_entry=3)
    baseline = graded_test(
        benchmark,
        [[(1, True), (1, True), (0, False)], [(0, False), (0, False), (1, True)]],
    )
    candidate = graded_test(
        benchmark,
        [[(1, True), (0, False), (0, False)], [(0, False), (1, True), (1, True)]],
    )

    body = compare(client_for(viewer), baseline, candidate).json()

    assert [entry["change"] for entry in body["entries"]] == ["regression", "improvement"]
    assert [entry["results"][0]["runs"] for entry in body["entries"]] == [3, 3]
    assert body["entries"][0]["results"][1]["pass_rate"] == pytest.approx(1 / 3)
    # Each entry's majority flipped, one each way: McNemar 2 * (C(2,0) + C(2,1)) / 4 > 1 -> 1.
    assert body["deltas"][0]["mcnemar_p"] == pytest.approx(1.0)
    # k = 3 runs each: pass@3 and pass^3 of the baseline.
    assert body["tests"][0]["repetitions"] == {"k": 3, "pass_at_k": 1.0, "pass_hat_k": 0.0}


def test_up_to_four_candidates_each_with_its_delta(
    client_for: Any, viewer: Any, six: Benchmark
) -> None:
    tests = [graded_test(six, BASELINE)] + [graded_test(six, CANDIDATE) for _ in range(4)]

    body = compare(client_for(viewer), *tests).json()

    assert [item["id"] for item in body["tests"]] == [str(test.pk) for test in tests]
    assert [delta["test_id"] for delta in body["deltas"]] == [str(test.pk) for test in tests[1:]]
    assert len({json.dumps({**d, "test_id": None}) for d in body["deltas"]}) == 1
    assert all(len(entry["results"]) == 5 for entry in body["entries"])


def test_it_validates_ownership(
    client_for: Any, operator: Any, six: Benchmark, support: Any
) -> None:
    mine = graded_test(six, BASELINE)
    foreign_benchmark = factories.make_benchmark(department=support, entries=6, turns=1)
    foreign = graded_test(foreign_benchmark, CANDIDATE)

    for ids in ([mine.pk, foreign.pk], [foreign.pk, mine.pk], [mine.pk, uuid.uuid4()]):
        response = post(client_for(operator), "compare", {"test_ids": [str(i) for i in ids]})
        body = assert_error(response, 404, "not_found")
        # Nothing about either test: neither names, nor figures, nor the benchmark.
        text = json.dumps(body)
        assert foreign_benchmark.name not in text
        assert six.name not in text
        assert set(body) == {"detail", "code"}


def test_a_foreign_test_of_another_benchmark_is_404_not_400(
    client_for: Any, operator: Any, six: Benchmark, support: Any
) -> None:
    # Answering "different benchmarks" would confirm that the foreign id exists.
    foreign = graded_test(factories.make_benchmark(department=support, entries=1), [[(1, True)]])
    response = compare(client_for(operator), graded_test(six, BASELINE), foreign)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"test_ids": []}, "test_ids"),
        ({"test_ids": ["TEST0"]}, "test_ids"),
        ({"test_ids": ["TEST0"] * 6}, "test_ids"),
        ({"test_ids": ["TEST0", "not-a-uuid"]}, "test_ids"),
        ({"test_ids": ["TEST0", "TEST1"], "only": "worse"}, "only"),
        ({"test_ids": ["TEST0", "TEST1"], "page_size": 0}, "page_size"),
        ({"test_ids": ["TEST0", "TEST1"], "page_size": 501}, "page_size"),
        ({"test_ids": ["TEST0", "TEST1"], "page_offset": -1}, "page_offset"),
        ({"test_ids": ["TEST0", "TEST1"], "page_offset": 10**9 + 1}, "page_offset"),
        ({"test_ids": ["TEST0", "TEST1"], "page_offset": 2**70}, "page_offset"),
        ({"test_ids": ["TEST0", "TEST1"], "sort": "delta"}, "sort"),
        ({}, "test_ids"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, viewer: Any, six: Benchmark, body: dict[str, Any], field: str
) -> None:
    tests = [graded_test(six, BASELINE), graded_test(six, CANDIDATE)]
    text = json.dumps(body)
    for index, test in enumerate(tests):
        text = text.replace(f"TEST{index}", str(test.pk))

    response = post(client_for(viewer), "compare", json.loads(text))

    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]


def test_a_repeated_test_and_different_benchmarks_are_400(
    client_for: Any, viewer: Any, research: Any, six: Benchmark
) -> None:
    baseline = graded_test(six, BASELINE)
    other = graded_test(factories.make_benchmark(department=research, entries=1), [[(1, True)]])
    client = client_for(viewer)

    body = assert_error(compare(client, baseline, baseline), 400, "invalid")
    assert "twice" in body["detail"]
    body = assert_error(compare(client, baseline, other), 400, "different_benchmarks")
    assert "test_ids" in body["fields"]


def test_it_requires_credentials(client: Any, six: Benchmark) -> None:
    response = client.post(
        "/api/v5/artifacts/test/compare",
        {"test_ids": [str(uuid.uuid4()), str(uuid.uuid4())]},
        content_type="application/json",
    )
    assert_error(response, 401, "not_authenticated")


def test_the_answer_is_what_the_documented_serializer_renders(
    client_for: Any, viewer: Any, six: Benchmark
) -> None:
    baseline, candidate = graded_test(six, BASELINE), graded_test(six, CANDIDATE)

    body = compare(client_for(viewer), baseline, candidate).json()

    native = compare_tests(user=viewer, test_ids=[baseline.pk, candidate.pk])
    documented = ORJSONRenderer().render(CompareTestResponseSerializer(native).data)
    assert body == json.loads(documented)


def test_a_thousand_entries_take_a_bounded_number_of_queries(
    client_for: Any, viewer: Any, research: Any, six: Benchmark, django_assert_max_num_queries: Any
) -> None:
    small = [graded_test(six, BASELINE), graded_test(six, CANDIDATE)]
    big_benchmark = factories.make_benchmark(department=research, entries=0)
    from tests_app.models import BenchmarkEntry

    BenchmarkEntry.objects.bulk_create(
        [
            BenchmarkEntry(
                benchmark=big_benchmark,
                position=position,
                title=f"Entry {position}",
                messages=factories.conversation(1),
                turns=1,
            )
            for position in range(1, 1001)
        ]
    )
    big = [
        graded_test(
            big_benchmark,
            [
                [(((position * seed) % 10) / 10, (position * seed) % 10 >= 5)]
                for position in range(1000)
            ],
        )
        for seed in (3, 7)
    ]
    client = client_for(viewer)
    compare(client, *small)  # warm up: the key's last_used_at is written on first use

    with CaptureQueriesContext(connection) as small_queries:
        assert compare(client, *small).status_code == 200
    with django_assert_max_num_queries(10):
        response = compare(client, *big, page_size=500)

    body = response.json()
    assert len(body["entries"]) == 500
    assert body["deltas"][0]["entries_compared"] == 1000
    assert all(entry["results"][1]["invocation_id"] for entry in body["entries"])
    with CaptureQueriesContext(connection) as big_queries:
        compare(client, *big, page_size=500)
    assert len(big_queries) == len(small_queries)
    assert math.isfinite(body["deltas"][0]["mean_score_delta"])
