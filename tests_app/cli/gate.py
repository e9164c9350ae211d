"""The gate's decision: is a candidate worse than its baseline? Read from compare's answer only;
no statistic is computed here (docs/compare.md says what each figure means).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_PASSED = 0
EXIT_WORSE = 1
EXIT_ERROR = 2

# An entry passes when most of its graded runs pass, as compare counts verdicts.
MAJORITY = 0.5


@dataclass(frozen=True)
class GateRules:
    max_drop: float = 0.02
    alpha: float = 0.05
    no_new_failures: bool = False


@dataclass(frozen=True)
class NewFailure:
    entry_id: str
    position: int
    title: str
    baseline_pass_rate: float
    candidate_pass_rate: float | None


@dataclass(frozen=True)
class GateVerdict:
    worse: bool
    reasons: list[str]
    mean_score_delta: float | None
    mean_score_delta_ci: list[float] | None
    p_value: float | None
    entries_compared: int
    regressions: int
    improvements: int
    new_failures: list[NewFailure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_WORSE if self.worse else EXIT_PASSED

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def _passes(pass_rate: float | None) -> bool:
    return pass_rate is not None and pass_rate > MAJORITY


def new_failures(comparison: dict[str, Any]) -> list[NewFailure]:
    """Entries that passed in the baseline and fail in the first candidate: most of its graded
    runs failed, or its runs ended without a grade (a replay that failed). An entry the
    candidate did not run, or graded only with scores (no verdict), is not a failure."""
    found = []
    for entry in comparison["entries"]:
        baseline, candidate = entry["results"][0], entry["results"][1]
        if not _passes(baseline["pass_rate"]) or candidate["runs"] == 0:
            continue
        ungraded = candidate["graded"] == 0
        failed = candidate["pass_rate"] is not None and not _passes(candidate["pass_rate"])
        if ungraded or failed:
            found.append(
                NewFailure(
                    entry_id=entry["entry_id"],
                    position=entry["position"],
                    title=entry["title"],
                    baseline_pass_rate=baseline["pass_rate"],
                    candidate_pass_rate=candidate["pass_rate"],
                )
            )
    return found


def decide(comparison: dict[str, Any], rules: GateRules) -> GateVerdict:
    """Worse when the mean score drops by more than ``max_drop`` with a p-value below ``alpha``,
    or, with ``no_new_failures``, when an entry that passed in the baseline fails; and when no
    entry was graded in both tests, since nothing then shows the candidate is not worse."""
    delta = comparison["deltas"][0]
    reasons: list[str] = []
    change = delta["mean_score_delta"]
    p_value = delta["p_value"]
    if delta["entries_compared"] == 0 or change is None:
        reasons.append("No entry was graded in both tests: nothing to compare.")
    elif -change > rules.max_drop and p_value is not None and p_value < rules.alpha:
        reasons.append(
            f"The mean score dropped by {-change:.4f} (more than {rules.max_drop:g}) with "
            f"p = {p_value:.4g} (below {rules.alpha:g})."
        )
    failures = new_failures(comparison) if rules.no_new_failures else []
    if failures:
        reasons.append(f"{len(failures)} entries that passed in the baseline fail now.")
    return GateVerdict(
        worse=bool(reasons),
        reasons=reasons,
        mean_score_delta=change,
        mean_score_delta_ci=delta["mean_score_delta_ci"],
        p_value=p_value,
        entries_compared=delta["entries_compared"],
        regressions=delta["regressions"],
        improvements=delta["improvements"],
        new_failures=failures,
    )
