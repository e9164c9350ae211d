"""How the LLM judge agrees with human regrades (docs/judges.md), per rubric and judge model.

A pair is one invocation with a human regrade and an AI grade: its newest done human grade and,
for each judge model, its newest done AI grade of that model. Per rubric (the test's eval's) and
judge model:

* ``kappa``: Cohen's kappa of the two passed verdicts, agreement beyond chance (1 perfect, 0 as
  chance would, below 0 worse);
* ``score_mae``: the mean absolute difference of the scores (0..1);
* ``spearman``: Spearman's rank correlation of the scores (scipy).

With fewer than MIN_PAIRS pairs every figure is null and ``reason`` says why; a figure that is
undefined for the pairs at hand (every verdict the same on both sides, scores all equal) is null
with its reason too. The newest MAX_HUMAN_GRADES human grades are read, which bounds the request.
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models.fields.json import KeyTextTransform

from tests_app.errors import NotFound
from tests_app.models import Eval, Grade
from tests_app.selectors.scope import visible_department_ids

MIN_PAIRS = 5
MAX_HUMAN_GRADES = 5_000
# A pair disagrees when the verdicts differ or the scores are this far apart.
DISAGREEMENT_SCORE_GAP = 0.25
MAX_DISAGREEMENTS = 20
UNKNOWN_JUDGE = "(unknown judge)"


@dataclass(frozen=True)
class Pair:
    invocation_id: uuid.UUID
    test_id: uuid.UUID
    rubric_id: uuid.UUID
    rubric_name: str
    judge_model: str
    ai_score: float
    ai_passed: bool
    human_score: float
    human_passed: bool
    human_feedback: str
    human_reason: str
    human_graded_at: datetime

    @property
    def disagrees(self) -> bool:
        return (
            self.ai_passed != self.human_passed
            or abs(self.ai_score - self.human_score) >= DISAGREEMENT_SCORE_GAP
        )


@dataclass(frozen=True)
class AgreementItem:
    rubric_id: uuid.UUID
    rubric_name: str
    judge_model: str
    pairs: int
    kappa: float | None
    score_mae: float | None
    spearman: float | None
    reason: str | None


@dataclass(frozen=True)
class AgreementReport:
    items: list[AgreementItem]
    # The newest pairs that disagree, newest human grade first.
    disagreements: list[Pair]


def cohen_kappa(first: list[bool], second: list[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no verdicts; None when chance agreement is certain
    (both gave one and the same verdict throughout), where kappa is undefined."""
    count = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / count
    yes_first, yes_second = sum(first) / count, sum(second) / count
    expected = yes_first * yes_second + (1 - yes_first) * (1 - yes_second)
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)


def spearman_rho(first: list[float], second: list[float]) -> float | None:
    """Spearman's rho; None when either side's scores are all equal (no ranking to compare)."""
    from scipy.stats import spearmanr  # imported here: scipy is slow to load for every web process

    if len(set(first)) < 2 or len(set(second)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(first, second).statistic)
    return None if math.isnan(rho) else rho


def _figures(
    rubric_id: uuid.UUID, rubric_name: str, judge: str, pairs: list[Pair]
) -> AgreementItem:
    count = len(pairs)
    if count < MIN_PAIRS:
        return AgreementItem(
            rubric_id=rubric_id,
            rubric_name=rubric_name,
            judge_model=judge,
            pairs=count,
            kappa=None,
            score_mae=None,
            spearman=None,
            reason=f"{count} pair{'s' if count != 1 else ''}: at least {MIN_PAIRS} are needed.",
        )
    ai_passed = [pair.ai_passed for pair in pairs]
    human_passed = [pair.human_passed for pair in pairs]
    ai_scores = [pair.ai_score for pair in pairs]
    human_scores = [pair.human_score for pair in pairs]
    kappa = cohen_kappa(ai_passed, human_passed)
    spearman = spearman_rho(ai_scores, human_scores)
    reasons = []
    if kappa is None:
        reasons.append("kappa is undefined: judge and humans gave the same verdict to every pair")
    if spearman is None:
        reasons.append("Spearman's rho is undefined: one side gave every pair the same score")
    mae = sum(abs(a - b) for a, b in zip(ai_scores, human_scores, strict=True)) / count
    return AgreementItem(
        rubric_id=rubric_id,
        rubric_name=rubric_name,
        judge_model=judge,
        pairs=count,
        kappa=None if kappa is None else round(kappa, 4),
        score_mae=round(mae, 4),
        spearman=None if spearman is None else round(spearman, 4),
        reason="; ".join(reasons) + "." if reasons else None,
    )


def _check_rubric(user: Any, rubric_id: uuid.UUID) -> None:
    evals = Eval.objects.filter(rubric_id=rubric_id)
    departments = visible_department_ids(user)
    if departments is not None:
        evals = evals.filter(department_id__in=departments)
    if not evals.exists():
        raise NotFound("No rubric with that id is visible to you.")


def agreement_pairs(*, user: Any, rubric_id: uuid.UUID | None = None) -> list[Pair]:
    """The pairs of the tests the caller may see, newest human grade first. Two queries."""
    if rubric_id is not None:
        _check_rubric(user, rubric_id)
    humans = Grade.objects.filter(source=Grade.Source.HUMAN, status=Grade.Status.DONE)
    departments = visible_department_ids(user)
    if departments is not None:
        humans = humans.filter(invocation__test__department_id__in=departments)
    if rubric_id is not None:
        humans = humans.filter(invocation__test__eval__rubric_id=rubric_id)
    newest_human: dict[uuid.UUID, dict[str, Any]] = {}
    for row in humans.order_by("-created_at").values(
        "invocation_id",
        "score",
        "passed",
        "feedback",
        "reason",
        "created_at",
        "invocation__test_id",
        "invocation__test__eval__rubric_id",
        "invocation__test__eval__rubric__name",
    )[:MAX_HUMAN_GRADES]:
        if row["score"] is not None and row["passed"] is not None:
            newest_human.setdefault(row["invocation_id"], dict(row))
    if not newest_human:
        return []

    newest_ai: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    ai_grades = (
        Grade.objects.filter(
            source=Grade.Source.AI,
            status=Grade.Status.DONE,
            invocation_id__in=list(newest_human),
            score__isnull=False,
            passed__isnull=False,
        )
        .annotate(judge_model=KeyTextTransform("model", "provenance"))
        .order_by("-created_at")
        .values("invocation_id", "score", "passed", "judge_model")
    )
    for ai_row in ai_grades:
        grade: dict[str, Any] = dict(ai_row)
        newest_ai.setdefault((grade["invocation_id"], grade["judge_model"] or UNKNOWN_JUDGE), grade)

    pairs = []
    for (invocation_id, judge), ai in newest_ai.items():
        human = newest_human[invocation_id]
        pairs.append(
            Pair(
                invocation_id=invocation_id,
                test_id=human["invocation__test_id"],
                rubric_id=human["invocation__test__eval__rubric_id"],
                rubric_name=human["invocation__test__eval__rubric__name"],
                judge_model=judge,
                ai_score=float(ai["score"]),
                ai_passed=bool(ai["passed"]),
                human_score=float(human["score"]),
                human_passed=bool(human["passed"]),
                human_feedback=human["feedback"],
                human_reason=human["reason"],
                human_graded_at=human["created_at"],
            )
        )
    pairs.sort(key=lambda pair: pair.human_graded_at, reverse=True)
    return pairs


def judge_agreement(*, user: Any, rubric_id: uuid.UUID | None = None) -> AgreementReport:
    """Agreement per rubric and judge model over the caller's departments, and the newest
    disagreements. A rubric the caller cannot see is NotFound."""
    pairs = agreement_pairs(user=user, rubric_id=rubric_id)
    groups: dict[tuple[uuid.UUID, str, str], list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[(pair.rubric_id, pair.rubric_name, pair.judge_model)].append(pair)
    items = [
        _figures(rubric, name, judge, group)
        for (rubric, name, judge), group in sorted(
            groups.items(), key=lambda entry: (entry[0][1], entry[0][2], str(entry[0][0]))
        )
    ]
    disagreements = [pair for pair in pairs if pair.disagrees][:MAX_DISAGREEMENTS]
    return AgreementReport(items=items, disagreements=disagreements)
