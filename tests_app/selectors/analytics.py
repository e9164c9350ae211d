"""Reads for the dashboard: pass rate and mean score per eval over time.

They come from the ``analytics_eval_daily`` view of migration 0002 (materialized on PostgreSQL and
refreshed by the beat task or the refresh endpoint, so figures are as of the last refresh; a plain
view on SQLite, always current). Scoped like everything else and bounded by a window of days and
a maximum number of evals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from tests_app.models import Eval
from tests_app.selectors.scope import visible_department_ids

MAX_DAYS = 365
MAX_EVALS = 12
# Rows read from the view at most: a busy year of many evals stays a bounded read.
MAX_ROWS = 5000


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


def _as_date(value: Any) -> date:
    # SQLite's view returns the day as text.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def eval_trends(*, user: Any, days: int = 30) -> list[EvalTrend]:
    """Per visible eval and per day of test creation: graded runs, passes and mean score.

    Two queries: the view's rows of the window (graded days only), then the names of their evals
    and departments. The busiest ``MAX_EVALS`` evals are kept.
    """
    days = max(1, min(days, MAX_DAYS))
    since = (timezone.now() - timedelta(days=days)).date()
    sql = (
        "SELECT eval_id, department_id, day, graded, passed, mean_score "
        "FROM analytics_eval_daily WHERE day >= %s AND graded > 0"
    )
    params: list[Any] = [since]
    department_ids = visible_department_ids(user)
    if department_ids is not None:
        if not department_ids:
            return []
        # One placeholder per id: portable across PostgreSQL and SQLite (which stores UUIDs as
        # 32 hex digits), values still bound.
        sql += f" AND department_id IN ({', '.join(['%s'] * len(department_ids))})"
        params.extend(pk.hex if connection.vendor == "sqlite" else pk for pk in department_ids)
    sql += " ORDER BY day LIMIT %s"
    params.append(MAX_ROWS)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    eval_ids = {_as_uuid(row[0]) for row in rows}
    evals = {
        pk: (name, department)
        for pk, name, department in Eval.objects.filter(pk__in=eval_ids).values_list(
            "pk", "name", "department__name"
        )
    }
    trends: dict[uuid.UUID, EvalTrend] = {}
    for eval_id, _department_id, day, graded, passed, mean_score in rows:
        key = _as_uuid(eval_id)
        if key not in evals:
            continue  # deleted since the last refresh
        trend = trends.get(key)
        if trend is None:
            name, department_name = evals[key]
            trend = trends[key] = EvalTrend(
                eval_id=str(key), eval_name=name, department_name=department_name
            )
        trend.days.append(
            EvalDay(
                day=_as_date(day),
                graded=int(graded),
                passed=int(passed or 0),
                mean_score=float(mean_score) if mean_score is not None else None,
            )
        )
    busiest = sorted(trends.values(), key=lambda trend: -trend.graded)[:MAX_EVALS]
    return sorted(busiest, key=lambda trend: trend.eval_name)


def is_materialized() -> bool:
    """Whether the figures are a snapshot (PostgreSQL) rather than always current (SQLite)."""
    return connection.vendor == "postgresql"
