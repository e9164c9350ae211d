"""The compare page's words: each candidate's delta as sentences a staff member reads without
knowing the statistics (docs/compare.md has the same rules)."""

from __future__ import annotations

from typing import Any

# Below this a difference is called unlikely to be chance (with an interval that excludes zero).
SIGNIFICANCE = 0.05


def p_text(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def _verdict(*, p: float | None, interval: list[float] | None) -> str:
    if p is None:
        return ""
    excludes_zero = interval is not None and (interval[0] > 0 or interval[1] < 0)
    if p < SIGNIFICANCE and excludes_zero:
        return f"unlikely to be chance, {p_text(p)}"
    if p >= SIGNIFICANCE and not excludes_zero:
        return f"could well be chance, {p_text(p)}"
    return f"borderline: the interval and the test disagree, {p_text(p)}"


def score_sentence(delta: dict[str, Any]) -> str:
    """e.g. "The candidate scores 0.06 higher on the 480 entries graded in both, 95% interval
    0.02 to 0.10: unlikely to be chance, p = 0.004." """
    compared = delta["entries_compared"]
    value = delta["mean_score_delta"]
    if not compared or value is None:
        return "No entry is graded in both tests yet, so their scores cannot be compared."
    entries = f"the {compared} entr{'y' if compared == 1 else 'ies'} graded in both"
    if abs(value) < 0.005:
        how = "scores the same as the baseline, within 0.01,"
    else:
        how = f"scores {abs(value):.2f} {'higher' if value > 0 else 'lower'}"
    interval = delta["mean_score_delta_ci"]
    interval_text = f", 95% interval {interval[0]:.2f} to {interval[1]:.2f}" if interval else ""
    verdict = _verdict(p=delta["p_value"], interval=interval)
    return f"The candidate {how} on {entries}{interval_text}" + (
        f": {verdict}." if verdict else "."
    )


def verdict_sentence(delta: dict[str, Any]) -> str:
    """Entries that regressed or improved, and whether the pass/fail flips could be chance."""
    parts = [
        f"{delta['regressions']} entr{'y' if delta['regressions'] == 1 else 'ies'} regressed, "
        f"{delta['improvements']} improved and {delta['unchanged']} did not change"
    ]
    rate = delta["pass_rate_delta"]
    if rate is not None and abs(rate) >= 0.005:
        points = abs(rate) * 100
        parts.append(
            f"the pass rate is {points:.0f} point{'s' if round(points) != 1 else ''} "
            f"{'higher' if rate > 0 else 'lower'} per entry"
        )
    mcnemar = delta["mcnemar_p"]
    if mcnemar is not None:
        flips = "flips of pass and fail"
        if mcnemar < SIGNIFICANCE:
            parts.append(f"the {flips} lean one way: unlikely to be chance ({p_text(mcnemar)})")
        else:
            parts.append(f"the {flips} could well be chance ({p_text(mcnemar)})")
    return "; ".join(parts) + "."
