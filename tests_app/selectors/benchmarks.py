"""benchmark/search: how an agent holding only a key finds the benchmark ids it may start."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, Subquery

from tests_app.models import Benchmark, BenchmarkEntry
from tests_app.selectors.scope import visible_benchmarks

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class BenchmarkPage:
    benchmarks: list[dict[str, Any]]
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
        queryset.select_related("eval__department", "eval__rubric")
        .annotate(entry_count=Subquery(entry_count, output_field=IntegerField()))
        .order_by("name", "id")[page_offset : page_offset + page_size]
    )
    total = queryset.count()
    return BenchmarkPage(
        benchmarks=[
            {
                "id": benchmark.pk,
                "name": benchmark.name,
                "eval_id": benchmark.eval_id,
                "eval_name": benchmark.eval.name,
                "department_id": benchmark.eval.department_id,
                "department_name": benchmark.eval.department.name,
                "rubric_name": benchmark.eval.rubric.name,
                "entries": getattr(benchmark, "entry_count", None) or 0,
                "runs_per_entry": benchmark.runs_per_entry,
                "target_kind": benchmark.target_kind,
            }
            for benchmark in rows
        ],
        total_count=total,
    )
