"""Finding benchmarks: how an agent holding only a key finds the ids it may start (the API's
benchmark/search), and the staff page of benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from tests_app.models import Benchmark, BenchmarkEntry, Target
from tests_app.selectors.scope import visible_benchmarks, visible_targets

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class BenchmarkPage:
    """Benchmarks with their eval, department, rubric and default target joined and
    ``entry_count`` annotated."""

    benchmarks: list[Benchmark]
    total_count: int


def search_benchmarks(
    *,
    user: Any,
    search: str | None = None,
    eval_ids: Sequence[uuid.UUID] | None = None,
    department_ids: Sequence[uuid.UUID] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    page_offset: int = 0,
) -> BenchmarkPage:
    """Benchmarks the caller may see, filtered (AND), ordered by name; ``search`` is a
    case-insensitive substring of the benchmark's or its eval's name."""
    queryset = visible_benchmarks(user)
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(eval__name__icontains=search))
    if eval_ids:
        queryset = queryset.filter(eval_id__in=eval_ids)
    if department_ids:
        queryset = queryset.filter(eval__department_id__in=department_ids)
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    page_offset = max(0, page_offset)

    # A correlated count rather than a JOIN + GROUP BY over every selected column.
    entry_count = (
        BenchmarkEntry.objects.filter(benchmark=OuterRef("pk"))
        .order_by()
        .values("benchmark")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows: list[Benchmark] = list(
        queryset.select_related("eval__department", "eval__rubric", "default_target")
        .annotate(entry_count=Coalesce(Subquery(entry_count, output_field=IntegerField()), 0))
        .order_by("name", "id")[page_offset : page_offset + page_size]
    )
    return BenchmarkPage(benchmarks=rows, total_count=queryset.count())


def targets_by_department(
    *, user: Any, department_ids: set[uuid.UUID]
) -> dict[uuid.UUID, list[Target]]:
    """The targets of these departments that the caller may see, by name, in one query: what a
    test of a page of benchmarks may be started against."""
    by_department: dict[uuid.UUID, list[Target]] = {}
    if not department_ids:
        return by_department
    for target in (
        visible_targets(user).filter(department_id__in=department_ids).order_by("name", "id")
    ):
        by_department.setdefault(target.department_id, []).append(target)
    return by_department
