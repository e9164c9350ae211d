"""Search tests (DESIGN §3 "search"): AND-combined filters, facets, exact total, newest first.

Queries per call are fixed whatever the data: the caller's memberships (once per request), one
GROUP BY (eval, department) that gives the exact total and both facet sections, the page (skipped
when it would be empty), and the facet catalogue when it is not cached.

Facet sections count over the filtered set *without the section's own id filter* (so choosing an
eval does not hide the other evals); the name searches stay applied to both sections, because a
name search narrows what the caller is looking at. An option is listed when its count is above
zero or when it is selected (and visible to the caller), most frequent first.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from tests_app import cache_tags
from tests_app.actors import Actor
from tests_app.errors import ValidationFailed
from tests_app.models import Department, Eval, Test
from tests_app.selectors import scope

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
# A facet section lists at most this many options (plus any selected ones).
FACET_OPTIONS_MAX = 100
# Below these, the page query names the matching evals explicitly (see search_tests).
NARROW_TOTAL = 50_000
NARROW_EVALS = 500


@dataclass(frozen=True)
class FilterOption:
    id: str
    label: str
    count: int
    selected: bool


@dataclass(frozen=True)
class FilterSection:
    key: str
    label: str
    options: list[FilterOption] = field(default_factory=list)


@dataclass(frozen=True)
class SearchResult:
    actor_name: str
    tests: list[Test]
    eval_filter: FilterSection
    department_filter: FilterSection
    total_count: int


def _aware(value: datetime) -> datetime:
    if timezone.is_naive(value):
        return timezone.make_aware(value, timezone.get_current_timezone())
    return value


def _day_start(value: date) -> datetime:
    return timezone.make_aware(datetime.combine(value, time.min), timezone.get_current_timezone())


def created_at_bounds(*, start_date: date | datetime | None, end_date: date | datetime | None) -> Q:
    """Both bounds inclusive; a plain date as end bound includes that whole day."""
    condition = Q()
    start = None
    if start_date is not None:
        start = _aware(start_date) if isinstance(start_date, datetime) else _day_start(start_date)
        condition &= Q(created_at__gte=start)
    if end_date is not None:
        if isinstance(end_date, datetime):
            end = _aware(end_date)
            condition &= Q(created_at__lte=end)
            empty = start is not None and start > end
        else:
            next_day = _day_start(end_date + timedelta(days=1))
            condition &= Q(created_at__lt=next_day)
            empty = start is not None and start >= next_day
        if empty:
            raise ValidationFailed(
                "start_date is after end_date.",
                code="invalid_date_range",
                fields={"start_date": ["Must not be after end_date."]},
            )
    return condition


def _facet_catalogue() -> dict[str, Any]:
    """Names of every eval (with its department) and department, cached under ``test-facets``.

    Grouping by the tests' own eval_id/department_id columns needs no join; the labels come from
    this small catalogue, which changes only when an operator edits an eval or a department.
    """

    def build() -> dict[str, Any]:
        return {
            "evals": {
                str(pk): (name, str(department_id))
                for pk, name, department_id in Eval.objects.values_list(
                    "id", "name", "department_id"
                )
            },
            "departments": {
                str(pk): name for pk, name in Department.objects.values_list("id", "name")
            },
        }

    return cache_tags.cached([cache_tags.FACETS], "facet-catalogue", build)


def _catalogue_covering(eval_ids: set[str], department_ids: set[str]) -> dict[str, Any]:
    catalogue = _facet_catalogue()
    if not eval_ids <= set(catalogue["evals"]) or not department_ids <= set(
        catalogue["departments"]
    ):
        # Something was added since the catalogue was cached (or a selected id does not exist):
        # rebuild it, at most once per call.
        cache_tags.invalidate(cache_tags.FACETS)
        catalogue = _facet_catalogue()
    return catalogue


@dataclass(frozen=True)
class _Counts:
    total: int
    by_eval: dict[str, int]
    by_department: dict[str, int]
    matching_evals: list[str]


def _counts(
    base: QuerySet[Test], *, selected_evals: set[str], selected_departments: set[str]
) -> _Counts:
    """The total and both facet sections from one GROUP BY (eval, department) over ``base``.

    ``base`` has every filter but the two id filters; a group counts towards the total when it
    passes both, towards the eval section when it passes the department filter, and the other way
    round. One scan instead of three; the groups are at most the number of evals.
    """
    rows = base.order_by().values_list("eval_id", "department_id").annotate(n=Count("id"))
    total = 0
    by_eval: dict[str, int] = defaultdict(int)
    by_department: dict[str, int] = defaultdict(int)
    matching_evals: set[str] = set()
    for eval_id, department_id, count in rows:
        eval_key, department_key = str(eval_id), str(department_id)
        eval_ok = not selected_evals or eval_key in selected_evals
        department_ok = not selected_departments or department_key in selected_departments
        if department_ok:
            by_eval[eval_key] += count
        if eval_ok:
            by_department[department_key] += count
        if eval_ok and department_ok:
            total += count
            matching_evals.add(eval_key)
    return _Counts(
        total=total,
        by_eval=dict(by_eval),
        by_department=dict(by_department),
        matching_evals=sorted(matching_evals),
    )


def _section(
    *,
    key: str,
    label: str,
    counts: dict[str, int],
    labels: dict[str, str],
    selected: set[str],
    selectable: set[str],
) -> FilterSection:
    ranked = sorted(
        (option_id for option_id, count in counts.items() if count > 0),
        key=lambda option_id: (-counts[option_id], labels.get(option_id, ""), option_id),
    )[:FACET_OPTIONS_MAX]
    # Selected options stay visible (with count 0) so a UI can show and clear them; an id the
    # caller may not see is left out, so the section never confirms that it exists.
    extra = sorted(
        (selectable & selected) - set(ranked), key=lambda option_id: labels.get(option_id, "")
    )
    options = [
        FilterOption(
            id=option_id,
            label=labels.get(option_id, ""),
            count=counts.get(option_id, 0),
            selected=option_id in selected,
        )
        for option_id in [*ranked, *extra]
    ]
    return FilterSection(key=key, label=label, options=options)


def search_tests(
    *,
    actor: Actor,
    eval_ids: list[uuid.UUID] | None = None,
    department_ids: list[uuid.UUID] | None = None,
    is_archived: bool | None = None,
    start_date: date | datetime | None = None,
    end_date: date | datetime | None = None,
    eval_search: str | None = None,
    department_search: str | None = None,
    page_size: int = PAGE_SIZE_DEFAULT,
    page_offset: int = 0,
) -> SearchResult:
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise ValidationFailed(
            f"page_size must be between 1 and {PAGE_SIZE_MAX}.",
            fields={"page_size": [f"Must be between 1 and {PAGE_SIZE_MAX}."]},
        )
    if page_offset < 0:
        raise ValidationFailed(
            "page_offset must not be negative.", fields={"page_offset": ["Must be at least 0."]}
        )
    user = actor.user
    base = scope.visible_tests(user).filter(
        created_at_bounds(start_date=start_date, end_date=end_date)
    )
    if is_archived is not None:
        base = base.filter(is_archived=is_archived)
    if eval_search:
        # A subquery on the eval table, where the trigram index on the name lives.
        base = base.filter(
            eval_id__in=Eval.objects.filter(name__icontains=eval_search).values("id")
        )
    if department_search:
        base = base.filter(
            department_id__in=Department.objects.filter(name__icontains=department_search).values(
                "id"
            )
        )

    selected_evals = {str(pk) for pk in eval_ids or []}
    selected_departments = {str(pk) for pk in department_ids or []}
    # An empty id list selects nothing in a facet, so it filters nothing (like null).
    by_eval = Q(eval_id__in=list(eval_ids)) if eval_ids else Q()
    by_department = Q(department_id__in=list(department_ids)) if department_ids else Q()
    filtered = base.filter(by_eval & by_department)

    counts = _counts(base, selected_evals=selected_evals, selected_departments=selected_departments)
    total_count, eval_counts, department_counts = (
        counts.total,
        counts.by_eval,
        counts.by_department,
    )
    tests: list[Test] = []
    if page_offset < total_count:
        if total_count <= NARROW_TOTAL and len(counts.matching_evals) <= NARROW_EVALS:
            # Redundant for the result, but it tells the planner how few rows match: without it,
            # a rare match makes it walk the whole created_at index looking for a page.
            filtered = filtered.filter(eval_id__in=counts.matching_evals)
        tests = list(
            filtered.select_related(
                "benchmark", "eval__rubric", "department", "created_by"
            ).order_by("-created_at", "id")[page_offset : page_offset + page_size]
        )

    catalogue = _catalogue_covering(
        set(eval_counts) | selected_evals, set(department_counts) | selected_departments
    )
    eval_labels = {key: value[0] for key, value in catalogue["evals"].items()}
    visible_evals = {
        key
        for key, (_, department_id) in catalogue["evals"].items()
        if key in selected_evals and scope.can_see_department(user, uuid.UUID(department_id))
    }
    visible_departments = {
        key
        for key in catalogue["departments"]
        if key in selected_departments and scope.can_see_department(user, uuid.UUID(key))
    }
    return SearchResult(
        actor_name=actor.display_name,
        tests=tests,
        eval_filter=_section(
            key="eval_ids",
            label="Eval",
            counts=eval_counts,
            labels=eval_labels,
            selected=selected_evals,
            selectable=visible_evals,
        ),
        department_filter=_section(
            key="department_ids",
            label="Department",
            counts=department_counts,
            labels=catalogue["departments"],
            selected=selected_departments,
            selectable=visible_departments,
        ),
        total_count=total_count,
    )
