"""The figures of a test (get's status_summary, compare's tests) from its runs and replay steps.

Both read the same runs as the status summary: every run of the test, or of its current cycle in
infinite mode. Latency and tokens come from every replay step of those runs' invocations (failed
and retried attempts too: they were calls to the model, and their tokens were paid for), read
from TestTurnCount, which database triggers keep as a histogram of per-turn latencies with their
tokens: one row per distinct millisecond value, whatever the number of steps.
``tests_app.figures`` does the statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import Case, IntegerField, Q, Sum, Value, When

from tests_app import figures
from tests_app.models import Test, TestTurnCount


@dataclass
class StepHistogram:
    """Per-turn latencies as (milliseconds, turns) pairs, and the tokens of those turns (None
    when no turn reported any)."""

    latencies: list[tuple[int, int]] = field(default_factory=list)
    reported_turns: int = 0
    prompt_sum: int = 0
    completion_sum: int = 0

    def add(self, latency_ms: Any, turns: Any, reported: Any, prompt: Any, completion: Any) -> None:
        # Sums of big integers come back as decimals from PostgreSQL.
        self.latencies.append((int(latency_ms), int(turns)))
        self.reported_turns += int(reported)
        self.prompt_sum += int(prompt)
        self.completion_sum += int(completion)

    @property
    def prompt_tokens(self) -> int | None:
        return self.prompt_sum if self.reported_turns else None

    @property
    def completion_tokens(self) -> int | None:
        return self.completion_sum if self.reported_turns else None


def summarized_runs(test: Test) -> Q:
    """The runs a test's summary and figures read, as a filter on TestRun."""
    if test.infinite_mode:
        return Q(test_id=test.pk, cycle=test.cycle)
    return Q(test_id=test.pk)


def test_index(tests: list[Test]) -> Case:
    """Each row's test as its index in ``tests``: a small number rather than a UUID per row."""
    return Case(
        *(When(test_id=test.pk, then=Value(index)) for index, test in enumerate(tests)),
        output_field=IntegerField(),
    )


def step_histograms(tests: Iterable[Test]) -> dict[uuid.UUID, StepHistogram]:
    """The step histogram of each test, in one query."""
    tests = list(tests)
    histograms = [StepHistogram() for _ in tests]
    if tests:
        condition = Q()
        for test in tests:
            condition |= (
                Q(test_id=test.pk, cycle=test.cycle) if test.infinite_mode else Q(test_id=test.pk)
            )
        rows = list(
            TestTurnCount.objects.filter(condition, turns__gt=0)
            .order_by()
            .annotate(test_index=test_index(tests))
            .values_list("test_index", "latency_ms")
            .annotate(
                turns=Sum("turns"),
                reported=Sum("reported_turns"),
                prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"),
            )
        )
        for index, latency_ms, turns, reported, prompt, completion in rows:
            histograms[index].add(latency_ms, turns, reported, prompt, completion)
    return {test.pk: histogram for test, histogram in zip(tests, histograms, strict=True)}


def _price(snapshot: dict[str, Any], name: str) -> float | None:
    value = snapshot.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def figures_of_test(
    *,
    test: Test,
    passed: int,
    graded: int,
    moments: figures.ScoreMoments,
    graded_by_entry: np.ndarray | None,
    passed_by_entry: np.ndarray | None,
    histogram: StepHistogram,
) -> dict[str, Any]:
    """mean_score_ci, pass_rate_ci, repetitions, latency_ms, tokens and cost of one test.

    ``graded_by_entry``/``passed_by_entry`` are needed when runs_per_entry > 1 (repetitions);
    prices come from the test's snapshot: what its tokens cost when it ran.
    """
    runs_per_entry = test.benchmark.runs_per_entry
    repetitions = None
    if runs_per_entry > 1 and graded_by_entry is not None and passed_by_entry is not None:
        repetitions = figures.repetitions(runs_per_entry, graded_by_entry, passed_by_entry)
    snapshot = test.target_snapshot or {}
    return {
        "mean_score_ci": figures.mean_score_interval(moments),
        "pass_rate_ci": figures.pass_rate_interval(passed, graded),
        "repetitions": repetitions,
        "latency_ms": figures.latency_percentiles(histogram.latencies),
        "tokens": {"prompt": histogram.prompt_tokens, "completion": histogram.completion_tokens},
        "cost": figures.cost(
            prompt_tokens=histogram.prompt_tokens,
            completion_tokens=histogram.completion_tokens,
            price_in=_price(snapshot, "price_in"),
            price_out=_price(snapshot, "price_out"),
        ),
    }
