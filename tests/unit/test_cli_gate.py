"""The gate's decision, from compare answers written by hand (no server, no statistics)."""

from __future__ import annotations

from typing import Any

import pytest

from tests_app.cli.gate import EXIT_PASSED, EXIT_WORSE, GateRules, decide, new_failures


def result(pass_rate: float | None, *, runs: int = 1, graded: int = 1) -> dict[str, Any]:
    return {
        "test_id": "t",
        "runs": runs,
        "graded": graded,
        "mean_score": None,
        "pass_rate": pass_rate,
        "invocation_id": None,
    }


def entry(position: int, baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    return {
        "entry_id": f"entry-{position}",
        "position": position,
        "title": f"Entry {position}",
        "change": "unchanged",
        "results": [baseline, candidate],
    }


def comparison(
    *,
    delta: float | None = 0.0,
    p_value: float | None = 0.5,
    entries_compared: int = 10,
    entries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "deltas": [
            {
                "test_id": "candidate",
                "entries_compared": entries_compared,
                "mean_score_delta": delta,
                "mean_score_delta_ci": None if delta is None else [delta - 0.1, delta + 0.1],
                "p_value": p_value,
                "pass_rate_delta": 0.0,
                "regressions": 3,
                "improvements": 1,
                "unchanged": 6,
                "mcnemar_p": 1.0,
            }
        ],
        "entries": entries or [],
    }


def test_it_passes_a_candidate_that_does_not_drop() -> None:
    verdict = decide(comparison(delta=0.01, p_value=0.001), GateRules())

    assert verdict.worse is False
    assert verdict.exit_code == EXIT_PASSED
    assert verdict.reasons == []
    assert (verdict.regressions, verdict.improvements) == (3, 1)


def test_it_fails_a_significant_drop_beyond_the_margin() -> None:
    verdict = decide(comparison(delta=-0.05, p_value=0.01), GateRules(max_drop=0.02, alpha=0.05))

    assert verdict.worse is True
    assert verdict.exit_code == EXIT_WORSE
    assert verdict.reasons == [
        "The mean score dropped by 0.0500 (more than 0.02) with p = 0.01 (below 0.05)."
    ]
    assert verdict.as_dict()["exit_code"] == EXIT_WORSE
    assert verdict.as_dict()["mean_score_delta_ci"] == pytest.approx([-0.15, 0.05])


@pytest.mark.parametrize(
    ("delta", "p_value", "rules"),
    [
        (-0.05, 0.2, GateRules(alpha=0.05)),  # could be chance
        (-0.05, None, GateRules()),  # no test possible (every difference zero or too few)
        (-0.01, 0.001, GateRules(max_drop=0.02)),  # significant but within the margin
        (-0.02, 0.001, GateRules(max_drop=0.02)),  # exactly the margin is tolerated
        (-0.3, 0.04, GateRules(alpha=0.01)),  # a stricter alpha
    ],
)
def test_it_passes_drops_that_are_small_or_could_be_chance(
    delta: float, p_value: float | None, rules: GateRules
) -> None:
    assert decide(comparison(delta=delta, p_value=p_value), rules).worse is False


def test_it_fails_when_nothing_was_graded_in_both_tests() -> None:
    verdict = decide(comparison(delta=None, p_value=None, entries_compared=0), GateRules())

    assert verdict.worse is True
    assert verdict.reasons == ["No entry was graded in both tests: nothing to compare."]


def test_new_failures_are_entries_that_passed_in_the_baseline_and_fail_now() -> None:
    entries = [
        entry(1, result(1.0), result(0.0)),  # passed, fails: new failure
        entry(2, result(1.0), result(1.0)),  # still passes
        entry(3, result(0.0), result(0.0)),  # failed before too
        entry(4, result(2 / 3, runs=3, graded=3), result(1 / 3, runs=3, graded=3)),  # majority flip
        entry(
            5, result(0.5, runs=2, graded=2), result(0.0, runs=2, graded=2)
        ),  # no majority before
        entry(6, result(1.0), result(None, runs=1, graded=0)),  # its replay failed: no grade
        entry(7, result(1.0), result(None, runs=0, graded=0)),  # not run by the candidate
        entry(8, result(1.0), result(None, runs=1, graded=1)),  # graded with a score only
    ]

    failures = new_failures(comparison(entries=entries))

    assert [failure.position for failure in failures] == [1, 4, 6]
    assert failures[0].title == "Entry 1"
    assert failures[0].baseline_pass_rate == 1.0
    assert failures[0].candidate_pass_rate == 0.0
    assert failures[2].candidate_pass_rate is None


def test_new_failures_fail_the_gate_only_when_asked() -> None:
    entries = [entry(1, result(1.0), result(0.0))]
    data = comparison(delta=0.0, p_value=1.0, entries=entries)

    lenient = decide(data, GateRules(no_new_failures=False))
    strict = decide(data, GateRules(no_new_failures=True))

    assert (lenient.worse, lenient.new_failures) == (False, [])
    assert strict.worse is True
    assert strict.reasons == ["1 entries that passed in the baseline fail now."]
    assert [failure.entry_id for failure in strict.new_failures] == ["entry-1"]
