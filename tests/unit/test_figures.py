"""The statistics against values computed independently: by hand, from textbook formulas in
plain Python, or by enumerating every outcome, on small known cases."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import numpy as np
import pytest

from tests_app import figures
from tests_app.figures import ScoreMoments

# Student's t quantiles for a 95% two-sided interval, from the printed tables.
T_975 = {4: 2.776445, 9: 2.262157}


def approx(value: float) -> object:
    return pytest.approx(value, abs=5e-6)


def test_mean_interval_with_one_run_per_entry_is_the_textbook_t_interval() -> None:
    scores = [0.2, 0.4, 0.6, 0.8, 1.0]
    moments = ScoreMoments.of_runs(
        graded=5, score_sum=sum(scores), score_square_sum=sum(x * x for x in scores)
    )
    # mean 0.6, s = sqrt(0.1), half-width t(4) * s / sqrt(5)
    half = T_975[4] * math.sqrt(0.1) / math.sqrt(5)
    assert figures.mean_score_interval(moments) == [approx(0.6 - half), approx(0.6 + half)]
    # Entry arrays with one run each give the same moments.
    assert ScoreMoments.of_entries(np.ones(5), np.array(scores)) == pytest.approx(moments)


def test_mean_interval_clusters_repeated_runs_of_an_entry() -> None:
    # Ten entries with two runs each (one entry with one): the entries are the sample.
    runs = [
        [0.5, 0.7], [0.6, 0.6], [0.9, 0.8], [0.4, 0.5], [0.7, 0.9],
        [0.3, 0.5], [0.8, 0.8], [0.6, 0.4], [0.5, 0.6], [0.7],
    ]  # fmt: skip
    graded = np.array([len(scores) for scores in runs] + [0])
    score_sums = np.array([sum(scores) for scores in runs] + [0.0])
    moments = ScoreMoments.of_entries(graded, score_sums)
    assert (moments.entries, moments.graded) == (10, 19)
    # CR1 by hand: the mean of all runs, and residuals S - n * mean per entry.
    total = sum(sum(scores) for scores in runs)
    mean = total / 19
    squares = sum((sum(scores) - len(scores) * mean) ** 2 for scores in runs)
    half = T_975[9] * math.sqrt(squares * 10 / 9 / 19**2)
    assert figures.mean_score_interval(moments) == [approx(mean - half), approx(mean + half)]
    # Counting the 19 runs as independent would give a narrower interval than the entries do.
    flat = [score for scores in runs for score in scores]
    naive = 2.100922 * statistics.stdev(flat) / math.sqrt(19)  # t(18)
    assert naive < half


def test_mean_interval_needs_two_entries() -> None:
    one_entry = ScoreMoments.of_entries(np.array([3]), np.array([2.0]))
    assert figures.mean_score_interval(one_entry) is None
    nothing = ScoreMoments.of_runs(graded=0, score_sum=0, score_square_sum=0)
    assert figures.mean_score_interval(nothing) is None


@pytest.mark.parametrize(("passed", "graded"), [(8, 10), (0, 7), (7, 7), (1, 2), (33, 120)])
def test_pass_rate_interval_is_wilson(passed: int, graded: int) -> None:
    z = 1.959963984540054
    p = passed / graded
    centre = (p + z * z / (2 * graded)) / (1 + z * z / graded)
    half = z / (1 + z * z / graded) * math.sqrt(p * (1 - p) / graded + z * z / (4 * graded**2))
    assert figures.pass_rate_interval(passed, graded) == [
        approx(max(0.0, centre - half)),
        approx(min(1.0, centre + half)),
    ]


def test_pass_rate_interval_textbook_value_and_no_grades() -> None:
    assert figures.pass_rate_interval(8, 10) == [approx(0.4901625), approx(0.9433178)]
    assert figures.pass_rate_interval(0, 0) is None


def test_repetitions_average_the_unbiased_estimators_per_entry() -> None:
    # k = 2. Entry A: 5 graded, 2 passed: pass@2 = 1 - C(3,2)/C(5,2) = 0.7, pass^2 = C(2,2)/
    # C(5,2) = 0.1. Entry B: 2 of 2: 1 and 1. Entry C: 0 of 2: 0 and 0. Entry D: 1 graded run,
    # fewer than k, is left out.
    graded = np.array([5, 2, 2, 1])
    passed = np.array([2, 2, 0, 1])
    assert figures.repetitions(2, graded, passed) == {
        "k": 2,
        "pass_at_k": approx((0.7 + 1 + 0) / 3),
        "pass_hat_k": approx((0.1 + 1 + 0) / 3),
    }
    assert figures.repetitions(1, graded, passed) is None
    assert figures.repetitions(6, graded, passed) == {"k": 6, "pass_at_k": None, "pass_hat_k": None}


def test_pass_at_k_matches_enumerating_every_subset() -> None:
    outcomes = [True, False, True, False, False, True, False]  # n = 7, c = 3
    for k in (2, 3, 4):
        subsets = list(itertools.combinations(outcomes, k))
        some = sum(any(subset) for subset in subsets) / len(subsets)
        every = sum(all(subset) for subset in subsets) / len(subsets)
        result = figures.repetitions(k, np.array([7]), np.array([3]))
        assert result == {"k": k, "pass_at_k": approx(some), "pass_hat_k": approx(every)}


def test_latency_percentiles_interpolate_like_the_sorted_list() -> None:
    latencies = [120, 80, 80, 300, 95, 80, 1000, 150, 95, 110]
    histogram = [(value, latencies.count(value)) for value in set(latencies)]
    ordered = sorted(latencies)

    def linear(q: float) -> float:
        position = q * (len(ordered) - 1)
        below = math.floor(position)
        above = min(below + 1, len(ordered) - 1)
        return ordered[below] + (ordered[above] - ordered[below]) * (position - below)

    assert figures.latency_percentiles(histogram) == {
        "p50": approx(linear(0.5)),
        "p95": approx(linear(0.95)),
    }
    assert figures.latency_percentiles([]) is None
    assert figures.latency_percentiles([(5, 0)]) is None


def test_cost_needs_both_prices() -> None:
    assert figures.cost(
        prompt_tokens=2_000_000, completion_tokens=500_000, price_in=0.15, price_out=0.6
    ) == approx(0.6)
    assert (
        figures.cost(prompt_tokens=10, completion_tokens=10, price_in=None, price_out=0.6) is None
    )
    assert (
        figures.cost(prompt_tokens=None, completion_tokens=None, price_in=1.0, price_out=1.0)
        is None
    )


def test_wilcoxon_exact_p_matches_enumerating_every_sign() -> None:
    differences = [1.5, -0.5, 2.0, 3.0, -1.0, 2.5, 0.0]  # the zero is dropped (Wilcox)
    nonzero = [d for d in differences if d]
    ranks = {abs(d): rank for rank, d in enumerate(sorted(nonzero, key=abs), start=1)}
    observed = sum(ranks[abs(d)] for d in nonzero if d > 0)
    sums = [
        sum(ranks[abs(d)] for d, sign in zip(nonzero, signs, strict=True) if sign)
        for signs in itertools.product([False, True], repeat=len(nonzero))
    ]
    low = sum(s <= observed for s in sums) / len(sums)
    high = sum(s >= observed for s in sums) / len(sums)
    assert figures.wilcoxon_p(np.array(differences)) == approx(min(1.0, 2 * min(low, high)))


def test_wilcoxon_edge_cases() -> None:
    assert figures.wilcoxon_p(np.array([])) is None
    assert figures.wilcoxon_p(np.zeros(4)) == 1.0


@pytest.mark.parametrize(("worse", "better"), [(1, 6), (0, 5), (3, 3), (10, 2)])
def test_mcnemar_exact_is_the_two_sided_binomial_of_the_flips(worse: int, better: int) -> None:
    flips = worse + better
    tail = sum(math.comb(flips, i) for i in range(min(worse, better) + 1)) / 2**flips
    assert figures.mcnemar_exact_p(worse, better) == approx(min(1.0, 2 * tail))


def test_mcnemar_textbook_value_and_no_flips() -> None:
    # 1 against 6: 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
    assert figures.mcnemar_exact_p(1, 6) == approx(0.125)
    assert figures.mcnemar_exact_p(0, 0) == 1.0


def test_bootstrap_is_deterministic_and_brackets_the_mean() -> None:
    rng = random.Random(5)
    differences = np.array([rng.gauss(0.05, 0.2) for _ in range(300)])
    first = figures.paired_bootstrap_interval(differences)
    assert first == figures.paired_bootstrap_interval(differences.copy())
    assert first is not None
    low, high = first
    assert low < differences.mean() < high


def test_bootstrap_of_a_proportion_matches_the_binomial_quantiles() -> None:
    # Differences of 1 (improved) and 0 (unchanged): a resample's mean is Binomial(n, p) / n,
    # so the interval's ends are close to the binomial's 2.5% and 97.5% quantiles.
    n, ones = 400, 100
    differences = np.array([1.0] * ones + [0.0] * (n - ones))
    from scipy import stats

    expected_low = stats.binom.ppf(0.025, n, ones / n) / n
    expected_high = stats.binom.ppf(0.975, n, ones / n) / n
    low, high = figures.paired_bootstrap_interval(differences) or [0, 0]
    assert low == pytest.approx(expected_low, abs=0.006)
    assert high == pytest.approx(expected_high, abs=0.006)


def test_bootstrap_of_normal_differences_matches_the_normal_interval() -> None:
    rng = random.Random(11)
    values = [rng.gauss(0.1, 0.3) for _ in range(2000)]
    half = 1.959964 * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.fmean(values)
    low, high = figures.paired_bootstrap_interval(np.array(values)) or [0, 0]
    assert low == pytest.approx(mean - half, abs=0.004)
    assert high == pytest.approx(mean + half, abs=0.004)


def test_bootstrap_edge_cases() -> None:
    assert figures.paired_bootstrap_interval(np.array([])) is None
    assert figures.paired_bootstrap_interval(np.array([0.25])) == [0.25, 0.25]
    assert figures.paired_bootstrap_interval(np.array([-0.5] * 9)) == [-0.5, -0.5]
