"""What the compare page shows, from the comparison the selector read: each candidate's delta as
sentences a staff member reads without knowing the statistics (docs/compare.md has the same
rules), the rows of its tables, its charts and its links."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from tests_app.pages import charts, reads
from tests_app.selectors.compare import ComparePage, EntrySideBySide

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


def compare_url(test_ids: list[uuid.UUID], route: str = "pages:compare") -> str:
    return f"{reverse(route)}?" + urlencode([("ids", str(pk)) for pk in test_ids])


def _side_by_side(entry: EntrySideBySide, tests: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [row["role"] for row in tests]
    return {
        "entry": entry,
        "columns": [
            {
                "role": row["role"],
                "name": row["name"],
                "test_id": row["item"]["id"],
                "invocation_id": invocation_id,
            }
            for row, invocation_id in zip(tests, entry.invocation_ids, strict=True)
        ],
        "turns": [
            {
                "turn": turn.turn,
                "input": turn.input,
                "reference": turn.reference,
                "outputs": [
                    {"role": role, "html": None, "error": ""}
                    if output is None
                    else {
                        "role": role,
                        # The diff the test page shows: the output against the reference.
                        "html": reads.word_diff(turn.reference, output[0])[1]
                        if turn.reference is not None
                        else output[0],
                        "error": output[1],
                    }
                    for role, output in zip(roles, turn.outputs, strict=True)
                ],
            }
            for turn in entry.turns
        ],
    }


def page_context(
    *,
    page: ComparePage,
    entry: EntrySideBySide | None,
    test_ids: list[uuid.UUID],
    link: Callable[..., str],
    page_size: int,
    offset: int,
) -> dict[str, Any]:
    """The template's context. ``link(**changes)`` is the page's own address with some query
    parameters changed (None removes one)."""
    comparison = page.comparison
    names = [
        item["target"]["name"]
        + (f" · {item['target']['model']}" if item["target"]["model"] else "")
        for item in comparison.tests
    ]
    tests: list[dict[str, Any]] = [
        {
            "test": test,
            "item": item,
            "name": name,
            "role": "baseline" if index == 0 else "candidate",
            "baseline_url": compare_url([test.pk, *(pk for pk in test_ids if pk != test.pk)]),
        }
        for index, (test, item, name) in enumerate(
            zip(page.tests, comparison.tests, names, strict=True)
        )
    ]
    # Two tests may run against the same target: the chart's series are named by role too.
    series_names = [
        f"{'baseline' if index == 0 else f'candidate {index}'}: {name}"
        for index, name in enumerate(names)
    ]
    rows = []
    for item in comparison.entries:
        baseline_score = item["results"][0]["mean_score"]
        candidate_score = item["results"][1]["mean_score"]
        rows.append(
            {
                **item,
                "delta": candidate_score - baseline_score
                if baseline_score is not None and candidate_score is not None
                else None,
                "url": link(entry=item["position"]) + "#entry",
            }
        )
    total = comparison.total_entries
    return {
        "tests": tests,
        "deltas": [
            {
                **delta,
                "name": names[index],
                "score_words": score_sentence(delta),
                "verdict_words": verdict_sentence(delta),
            }
            for index, delta in enumerate(comparison.deltas, start=1)
        ],
        "rows": rows,
        "total_entries": total,
        "offset": offset,
        "shown_to": min(offset + page_size, total),
        "previous_url": link(offset=max(0, offset - page_size), entry=None) if offset else None,
        "next_url": link(offset=offset + page_size, entry=None)
        if offset + page_size < total
        else None,
        "filters": [
            (label, value, link(only=value, offset=None, entry=None))
            for label, value in (
                ("All", None),
                ("Regressions", "regressions"),
                ("Improvements", "improvements"),
                ("Changed", "changed"),
            )
        ],
        "order_urls": {
            value: link(order=value, offset=None, entry=None) for value in ("position", "delta")
        },
        "csv_url": compare_url(test_ids, route="pages:compare-csv"),
        "score_chart": charts.histogram(
            dict(zip(series_names, page.score_counts, strict=True)),
            page.score_bins,
            title="Entries by mean score, per test",
            x_label="mean score of the entry",
        ),
        "score_legend": charts.legend_colours(series_names),
        "delta_chart": charts.histogram(
            {series_names[1]: page.delta_counts},
            page.delta_bins,
            title="Entries by score delta, first candidate minus baseline",
            x_label="score delta (candidate minus baseline)",
            marker=0.0,
            first_colour=1,
        ),
        "side_by_side": _side_by_side(entry, tests) if entry is not None else None,
        "close_url": link(entry=None),
    }
