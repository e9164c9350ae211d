"""get's status_summary figures: intervals, repetitions, latency, tokens and cost, checked against
values computed by hand for small known tests."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import post
from tests_app.models import Test, TestRun

pytestmark = pytest.mark.django_db


def graded_test(
    department: Any,
    outcomes: list[list[tuple[float, bool]]],
    *,
    target: Any = None,
    steps: list[tuple[int, int | None, int | None]] = (),  # type: ignore[assignment]
) -> Test:
    """A test whose entry i has the runs outcomes[i] ((score, passed) each), and replay steps
    (latency_ms, prompt_tokens, completion_tokens) on its first invocation."""
    runs_per_entry = max(len(runs) for runs in outcomes)
    benchmark = factories.make_benchmark(
        department=department, entries=len(outcomes), runs_per_entry=runs_per_entry, target=target
    )
    test = factories.TestFactory.create(benchmark=benchmark, status=Test.Status.COMPLETED)
    entries = list(benchmark.entries.order_by("position"))
    ordinal = 0
    invocations = []
    for entry, runs in zip(entries, outcomes, strict=True):
        for score, passed in runs:
            ordinal += 1
            run = factories.TestRunFactory.create(
                test=test,
                entry=entry,
                ordinal=ordinal,
                status=TestRun.Status.COMPLETED,
                score=score,
                passed=passed,
            )
            invocations.append(factories.TestInvocationFactory.create(run=run, test=test))
    for turn, (latency, prompt, completion) in enumerate(steps, start=1):
        factories.ReplayStepFactory.create(
            invocation=invocations[0],
            turn=turn,
            latency_ms=latency,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
    return test


def summary_of(client: Any, test: Test) -> dict[str, Any]:
    response = post(client, "get", {"test_id": str(test.pk)})
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()["status_summary"]
    return result


def test_figures_of_a_test_with_one_run_per_entry(
    client_for: Any, viewer: Any, research: Any
) -> None:
    target = factories.OpenAITargetFactory.create(department=research, price_in="2", price_out="8")
    test = graded_test(
        research,
        [[(0.2, False)], [(0.4, False)], [(0.6, False)], [(0.8, True)], [(1.0, True)]],
        target=target,
        steps=[(100, 1000, 50), (300, 2000, 150), (200, 1500, 100), (400, 500, None)],
    )

    summary = summary_of(client_for(viewer), test)

    assert summary["mean_score"] == pytest.approx(0.6)
    # Student's t: 0.6 +- t(4) * s / sqrt(5), s = sqrt(0.1), t(4) = 2.776445.
    half = 2.776445 * math.sqrt(0.1) / math.sqrt(5)
    assert summary["mean_score_ci"] == pytest.approx([0.6 - half, 0.6 + half], abs=1e-6)
    # Wilson for 2 of 5 (z = 1.959964).
    z, p, n = 1.959964, 0.4, 5
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert summary["pass_rate_ci"] == pytest.approx([centre - spread, centre + spread], abs=1e-6)
    assert summary["repetitions"] is None
    # Latencies 100, 200, 300, 400: the median 250, the 95th percentile 385 (linear).
    assert summary["latency_ms"] == {"p50": 250.0, "p95": 385.0}
    assert summary["tokens"] == {"prompt": 5000, "completion": 300}
    # 5000 * 2 / 1e6 + 300 * 8 / 1e6
    assert summary["cost"] == pytest.approx(0.0124)


def test_repetitions_and_the_entry_clustered_interval(
    client_for: Any, viewer: Any, research: Any
) -> None:
    test = graded_test(
        research,
        [
            [(0.9, True), (0.8, True), (0.2, False)],
            [(0.1, False), (0.3, False), (0.2, False)],
            [(1.0, True), (0.9, True), (0.95, True)],
        ],
    )

    summary = summary_of(client_for(viewer), test)

    # k = 3 with 3 graded runs per entry: pass@3 is "any passed", pass^3 "all passed".
    assert summary["repetitions"] == {
        "k": 3,
        "pass_at_k": pytest.approx(2 / 3),
        "pass_hat_k": pytest.approx(1 / 3),
    }
    # Entry means 19/30, 0.2, 0.95; with equal runs per entry the clustered interval is the t
    # interval of the three entry means (t(2) = 4.302653), clipped to the score range.
    means = [1.9 / 3, 0.6 / 3, 2.85 / 3]
    centre = sum(means) / 3
    spread = math.sqrt(sum((m - centre) ** 2 for m in means) / 2) / math.sqrt(3)
    low = max(0.0, centre - 4.302653 * spread)
    high = min(1.0, centre + 4.302653 * spread)
    assert summary["mean_score_ci"] == pytest.approx([low, high], abs=1e-6)
    # A reference target reports no tokens, and without prices there is no cost.
    assert summary["tokens"] == {"prompt": None, "completion": None}
    assert summary["cost"] is None
    assert summary["latency_ms"] is None
