"""Reads for the dashboard: pass rate and mean score per eval over time.

Scoped like everything else (a user sees the evals of their departments), bounded by a window of
days and a maximum number of evals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from tests_app.models import TestRun
from tests_app.selectors.scope import visible_department_ids

MAX_DAYS = 365
MAX_EVALS = 12


@dataclass
class EvalDay:
    day: date
    graded: int
    passed: int
    mean_score: float | None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.graded if self.graded else None


@dataclass
class EvalTrend:
    eval_id: str
    eval_name: str
    department_name: str
    days: list[EvalDay] = field(default_factory=list)

    @property
    def graded(self) -> int:
        return sum(day.graded for day in self.days)

    @property
    def pass_rate(self) -> float | None:
        passed = sum(day.passed for day in self.days)
        return passed / self.graded if self.graded else None

    @property
    def mean_score(self) -> float | None:
        weighted = sum((day.mean_score or 0) * day.graded for day in self.days)
        return weighted / self.graded if self.graded else None


def eval_trends(*, user: Any, days: int = 30) -> list[EvalTrend]:
    """Per visible eval and per day (of the test's start), graded runs, passes and mean score.

    Aggregated in SQL over graded runs of the window: one query, at most ``MAX_EVALS`` evals
    (the busiest first) times ``days`` rows.
    """
    days = max(1, min(days, MAX_DAYS))
    since = timezone.now() - timedelta(days=days)
    runs = TestRun.objects.filter(score__isnull=False, test__created_at__gte=since)
    department_ids = visible_department_ids(user)
    if department_ids is not None:
        runs = runs.filter(test__department_id__in=department_ids)
    rows = (
        runs.annotate(day=TruncDate("test__created_at"))
        .values("test__eval_id", "test__eval__name", "test__department__name", "day")
        .annotate(
            graded=Count("id"),
            passed=Count("id", filter=Q(passed=True)),
            mean_score=Avg("score"),
        )
        .order_by("test__eval__name", "day")[: MAX_EVALS * days * 4]
    )
    trends: dict[str, EvalTrend] = {}
    for row in rows:
        key = str(row["test__eval_id"])
        trend = trends.get(key)
        if trend is None:
            trend = trends[key] = EvalTrend(
                eval_id=key,
                eval_name=row["test__eval__name"],
                department_name=row["test__department__name"],
            )
        trend.days.append(
            EvalDay(
                day=row["day"],
                graded=row["graded"],
                passed=row["passed"],
                mean_score=row["mean_score"],
            )
        )
    busiest = sorted(trends.values(), key=lambda trend: -trend.graded)[:MAX_EVALS]
    return sorted(busiest, key=lambda trend: trend.eval_name)
