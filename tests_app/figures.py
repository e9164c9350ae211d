"""The statistics of tests and of their comparison (docs/compare.md says what each one means).

Pure functions over counts and arrays; the selectors read the rows. numpy and scipy do the
arithmetic: intervals are 95%, computed as follows.

* ``mean_score_ci``: Student's t interval of the mean score with the entry as the unit. Runs of
  one entry are not independent (same conversation), so the standard error is the cluster-robust
  one (CR1) over entries; with one run per entry it is the textbook ``s / sqrt(n)``. Needs two
  graded entries.
* ``pass_rate_ci``: Wilson's score interval of passed over graded runs (scipy's binomtest).
* ``repetitions`` (runs_per_entry = k > 1): per entry with n >= k graded runs of which c passed,
  the unbiased estimators pass@k = 1 - C(n-c, k) / C(n, k) (some of k runs passes) and
  pass^k = C(c, k) / C(n, k) (all k runs pass), averaged over those entries.
* compare: the paired percentile bootstrap interval of the mean per-entry difference
  (BOOTSTRAP_RESAMPLES resamples of the entries, fewer for very large comparisons, numpy's
  generator seeded with BOOTSTRAP_SEED, so the same data gives the same interval), the two-sided
  Wilcoxon signed-rank test of the same differences (zero differences dropped; exact for small
  samples, normal approximation above 50), and McNemar's exact test of the entries whose verdict
  flipped (a two-sided binomial test of the flips one way among all flips, p = 1/2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# scipy is imported in the functions that use it: it is slow to load and holds much memory, and
# most web processes and every worker never need it.

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# The cost of a bootstrap is resamples x entries draws: above BOOTSTRAP_MAX_DRAWS the resamples
# are fewer (not under BOOTSTRAP_MIN_RESAMPLES), which moves the interval's ends by about a tenth
# of the delta's standard error at most, far below what a large comparison can resolve anyway.
BOOTSTRAP_MIN_RESAMPLES = 1000
BOOTSTRAP_MAX_DRAWS = 10_000_000
BOOTSTRAP_SEED = 19
# Resamples drawn at a time: bounds the memory of a bootstrap over many entries.
BOOTSTRAP_CHUNK_VALUES = 2_000_000


def _round(value: float) -> float:
    # Twelve digits hide floating-point noise (0.30000000000000004) and lose nothing a score needs.
    return round(float(value), 12)


def _interval(low: float, high: float) -> list[float]:
    return [_round(max(0.0, low)), _round(min(1.0, high))]


@dataclass(frozen=True)
class ScoreMoments:
    """What the mean score's interval needs, summed over the entries with a graded run: their
    number, the graded runs, and the sums of S, S², S·n and n², where an entry's S is the sum of
    its runs' scores and n the number of its graded runs."""

    entries: int
    graded: int
    score_sum: float
    sum_s2: float
    sum_sn: float
    sum_n2: float

    @classmethod
    def of_runs(cls, *, graded: int, score_sum: float, score_square_sum: float) -> ScoreMoments:
        """One graded run per entry: each run is its own entry."""
        return cls(graded, graded, score_sum, score_square_sum, score_sum, graded)

    @classmethod
    def of_entries(cls, graded: np.ndarray, score_sums: np.ndarray) -> ScoreMoments:
        """Per-entry graded counts and score sums (entries without a graded run are ignored)."""
        mask = graded > 0
        n, s = graded[mask].astype(float), score_sums[mask].astype(float)
        return cls(
            int(mask.sum()),
            int(n.sum()),
            float(s.sum()),
            float((s * s).sum()),
            float((s * n).sum()),
            float((n * n).sum()),
        )


def mean_score_interval(moments: ScoreMoments) -> list[float] | None:
    """The 95% t interval of the mean score, entries as clusters; None below two entries."""
    entries, graded = moments.entries, moments.graded
    if entries < 2 or graded == 0:
        return None
    mean = moments.score_sum / graded
    # sum over entries of (S - n * mean)^2, expanded into the sums we have.
    squares = moments.sum_s2 - 2 * mean * moments.sum_sn + mean * mean * moments.sum_n2
    variance = max(squares, 0.0) * entries / (entries - 1) / (graded * graded)
    from scipy import stats

    margin = float(stats.t.ppf(0.5 + CONFIDENCE / 2, entries - 1)) * float(np.sqrt(variance))
    return _interval(mean - margin, mean + margin)


def pass_rate_interval(passed: int, graded: int) -> list[float] | None:
    """Wilson's 95% score interval of passed / graded; None before any grade."""
    if graded == 0:
        return None
    from scipy import stats

    interval = stats.binomtest(passed, graded).proportion_ci(
        confidence_level=CONFIDENCE, method="wilson"
    )
    return _interval(interval.low, interval.high)


def repetitions(k: int, graded: np.ndarray, passed: np.ndarray) -> dict[str, Any] | None:
    """pass@k and pass^k averaged over the entries with at least k graded runs (None for k=1)."""
    if k <= 1:
        return None
    mask = graded >= k
    if not mask.any():
        return {"k": k, "pass_at_k": None, "pass_hat_k": None}
    n, c = graded[mask].astype(float), passed[mask].astype(float)
    from scipy import special

    total = special.comb(n, k)
    pass_at_k = 1.0 - special.comb(n - c, k) / total
    pass_hat_k = special.comb(c, k) / total
    return {
        "k": k,
        "pass_at_k": _round(pass_at_k.mean()),
        "pass_hat_k": _round(pass_hat_k.mean()),
    }


def latency_percentiles(histogram: Sequence[tuple[int, int]]) -> dict[str, float] | None:
    """p50 and p95 (linear interpolation) of per-turn latencies given as (ms, turns) pairs."""
    pairs = [(value, count) for value, count in histogram if count]
    if not pairs:
        return None
    values = np.repeat(
        np.array([value for value, _ in pairs], dtype=float),
        np.array([count for _, count in pairs], dtype=np.int64),
    )
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": _round(p50), "p95": _round(p95)}


def cost(
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    price_in: float | None,
    price_out: float | None,
) -> float | None:
    """Tokens times the prices per million; None unless both prices and some tokens are known."""
    if price_in is None or price_out is None:
        return None
    if prompt_tokens is None and completion_tokens is None:
        return None
    total = (prompt_tokens or 0) * price_in + (completion_tokens or 0) * price_out
    return _round(total / 1_000_000)


# --- paired statistics of a comparison ------------------------------------------------------


def bootstrap_resamples(count: int) -> int:
    """How many resamples a bootstrap over ``count`` paired entries draws."""
    return max(BOOTSTRAP_MIN_RESAMPLES, min(BOOTSTRAP_RESAMPLES, BOOTSTRAP_MAX_DRAWS // count))


def paired_bootstrap_interval(differences: np.ndarray) -> list[float] | None:
    """The 95% percentile bootstrap interval of the mean of paired differences: entries are
    drawn with replacement, the same seed every time. None without differences."""
    count = len(differences)
    if count == 0:
        return None
    if count == 1 or np.all(differences == differences[0]):
        value = _round(differences[0])
        return [value, value]
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    resamples = bootstrap_resamples(count)
    means = np.empty(resamples)
    chunk = max(1, min(resamples, BOOTSTRAP_CHUNK_VALUES // count))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        picks = generator.integers(0, count, size=(stop - start, count), dtype=np.int32)
        means[start:stop] = differences[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [_round(low), _round(high)]


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when none differs,
    None without differences."""
    if len(differences) == 0:
        return None
    if not np.any(differences != 0):
        return 1.0
    from scipy import stats

    # Not rounded: a p-value of 1e-30 is information.
    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def mcnemar_exact_p(worse: int, better: int) -> float | None:
    """McNemar's exact two-sided p-value from the discordant pairs (passed→failed, failed→
    passed); 1.0 when no verdict flipped."""
    flips = worse + better
    if flips == 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(worse, flips, 0.5).pvalue)
