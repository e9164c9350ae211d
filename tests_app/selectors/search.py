"""Search tests (DESIGN §3 "search"): AND-combined filters, facets, exact total, newest first
(the staff list may choose another order).

Queries per call are fixed whatever the data: the caller's memberships (once per request), one
query for the (eval, department, target) counts that give the exact total and the three facet
sections, the page (skipped when it would be empty), and the facet catalogue when it is not cached.

The counts are summed from TestDayCount (tests per eval, department, target, archived flag and UTC
day, kept exact by database triggers) rather than counted over the tests: at a million tests that is
a sum over at most evals x days x 2 rows instead of a full scan. A date-time bound that falls
inside a day leaves that partial day to be counted on the tests table, through the created_at
index, in the same query (a UNION ALL).

Facet sections count over the filtered set *without the section's own id filter* (so choosing an
eval does not hide the other evals); the name searches stay applied to both sections, because a
name search narrows what the caller is looking at. An option is listed when its count is above
zero or when it is selected (and visible to the caller), most frequent first.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from tests_app import cache_tags
from tests_app.actors import Actor
from tests_app.errors import ValidationFailed
from tests_app.models import Department, Eval, Target, Test, TestDayCount
from tests_app.selectors import scope

PAGE_SIZE_DEFAULT = 20
# The orders a page may be read in; the API's search is always "newest". The others sort the
# filtered tests rather than walk the created_at index, which a staff list can afford.
ORDERINGS: dict[str, tuple[str, ...]] = {
    "newest": ("-created_at", "id"),
    "oldest": ("created_at", "id"),
    "benchmark": ("benchmark__name", "-created_at", "id"),
    "target": ("target__name", "-created_at", "id"),
    "status": ("status", "-created_at", "id"),
}
PAGE_SIZE_MAX = 100
# A facet section lists at most this many options (plus any selected ones).
FACET_OPTIONS_MAX = 100
# Below these, the page query names the matching evals explicitly (see search_tests).
NARROW_TOTAL = 50_000
NARROW_EVALS = 500
# The columns a page of results reads, in SearchRow's order (SearchTestItem, the staff list page).
PAGE_COLUMNS = (
    "id",
    "benchmark_id",
    "benchmark__name",
    "eval_id",
    "eval__name",
    "department_id",
    "department__name",
    "eval__rubric__name",
    "status",
    "infinite_mode",
    "is_archived",
    "created_at",
    "created_by__first_name",
    "created_by__last_name",
    "created_by__username",
    "target_id",
    "target__name",
    # What the test ran against: the model of its snapshot, not of the target as edited since.
    "target_snapshot__model",
    "total_runs",
    "completed_runs",
    "graded_runs",
    "passed_runs",
    "score_sum",
)


@dataclass(frozen=True, slots=True)
class SearchRow:
    """One test of a page of results: what a search item shows, read as plain values.

    A page is read with ``values_list``: building a Test and its four related models per row
    cost more Python time than the page's query took in PostgreSQL.
    """

    id: uuid.UUID
    benchmark_id: uuid.UUID
    benchmark_name: str
    eval_id: uuid.UUID
    eval_name: str
    department_id: uuid.UUID
    department_name: str
    rubric_name: str
    status: str
    infinite_mode: bool
    is_archived: bool
    created_at: datetime
    created_by_name: str
    target_id: uuid.UUID
    target_name: str
    model: str
    total_runs: int
    completed_runs: int
    pass_rate: float | None
    mean_score: float | None

    @classmethod
    def from_values(cls, values: tuple[Any, ...]) -> SearchRow:
        """A row from the values of PAGE_COLUMNS, in that order."""
        (
            pk,
            benchmark_id,
            benchmark_name,
            eval_id,
            eval_name,
            department_id,
            department_name,
            rubric_name,
            status,
            infinite_mode,
            is_archived,
            created_at,
            first_name,
            last_name,
            username,
            target_id,
            target_name,
            model,
            total_runs,
            completed_runs,
            graded_runs,
            passed_runs,
            score_sum,
        ) = values
        # display_name() of the creator: the full name, else the username ("" once deleted).
        full_name = f"{first_name or ''} {last_name or ''}".strip()
        return cls(
            id=pk,
            benchmark_id=benchmark_id,
            benchmark_name=benchmark_name,
            eval_id=eval_id,
            eval_name=eval_name,
            department_id=department_id,
            department_name=department_name,
            rubric_name=rubric_name,
            status=status,
            infinite_mode=infinite_mode,
            is_archived=is_archived,
            created_at=created_at,
            created_by_name=full_name or username or "",
            target_id=target_id,
            target_name=target_name,
            model=model if isinstance(model, str) else "",
            total_runs=total_runs,
            completed_runs=completed_runs,
            pass_rate=passed_runs / graded_runs if graded_runs else None,
            mean_score=score_sum / graded_runs if graded_runs else None,
        )


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
    tests: list[SearchRow]
    eval_filter: FilterSection
    department_filter: FilterSection
    target_filter: FilterSection
    total_count: int


def _aware(value: datetime) -> datetime:
    if timezone.is_naive(value):
        return timezone.make_aware(value, timezone.get_current_timezone())
    return value


def _day_start(value: date) -> datetime:
    return timezone.make_aware(datetime.combine(value, time.min), timezone.get_current_timezone())


@dataclass(frozen=True)
class _Interval:
    """Creation times from ``lower`` (inclusive) to ``upper`` (exclusive); None is unbounded."""

    lower: datetime | None
    upper: datetime | None


# Bounds a day inside the calendar's ends, so that shifting one to UTC, to a midnight or by a day
# never leaves the years 1..9999; no test is created that close to either end.
_FIRST_DAY = date.min + timedelta(days=1)
_LAST_DAY = date.max - timedelta(days=1)


def _within_calendar(value: date | datetime | None) -> date | datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        return min(max(value, _FIRST_DAY), _LAST_DAY)
    try:
        instant = _aware(value).astimezone(UTC)
    except OverflowError:  # 0001-01-01 at +14:00 is in year 0 in UTC, 9999-12-31 at -14:00 in 10000
        instant = (
            datetime.min.replace(tzinfo=UTC)
            if value.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )
    first = datetime.combine(_FIRST_DAY, time.min, tzinfo=UTC)
    last = datetime.combine(_LAST_DAY, time.min, tzinfo=UTC)
    return min(max(instant, first), last)


def _interval(*, start_date: date | datetime | None, end_date: date | datetime | None) -> _Interval:
    """Both bounds inclusive; a plain date as end bound includes that whole day."""
    start_date, end_date = _within_calendar(start_date), _within_calendar(end_date)
    lower = upper = None
    if start_date is not None:
        lower = _aware(start_date) if isinstance(start_date, datetime) else _day_start(start_date)
    if end_date is not None:
        # Timestamps are stored to the microsecond, so "at most end" is "before end + 1 us".
        if isinstance(end_date, datetime):
            upper = _aware(end_date) + timedelta(microseconds=1)
        else:
            upper = _day_start(end_date + timedelta(days=1))
    # A start after the end is an empty range, which no test matches (not an error: the OpenAPI
    # schema cannot say that one field must not be after another, and every field is valid).
    return _Interval(lower=lower, upper=upper)


def _within(interval: _Interval) -> Q:
    condition = Q()
    if interval.lower is not None:
        condition &= Q(created_at__gte=interval.lower)
    if interval.upper is not None:
        condition &= Q(created_at__lt=interval.upper)
    return condition


def _utc_midnight(value: datetime, *, up: bool) -> datetime:
    instant = value.astimezone(UTC)
    midnight = datetime.combine(instant.date(), time.min, tzinfo=UTC)
    return midnight + timedelta(days=1) if up and midnight < instant else midnight


@dataclass(frozen=True)
class _DaySplit:
    """An interval cut into whole UTC days, whose tests TestDayCount counts, and the partial
    days at either end, which are counted on the tests table (at most two days of tests)."""

    first_day: date | None  # whole days from this one (None: from the first test)
    end_day: date | None  # up to this one, exclusive (None: to the last test)
    partial: list[_Interval]
    any_whole_day: bool


def _split_days(interval: _Interval) -> _DaySplit:
    lower, upper = interval.lower, interval.upper
    whole_from = _utc_midnight(lower, up=True) if lower is not None else None
    whole_to = _utc_midnight(upper, up=False) if upper is not None else None
    if whole_from is not None and whole_to is not None and whole_from >= whole_to:
        return _DaySplit(first_day=None, end_day=None, partial=[interval], any_whole_day=False)
    partial = []
    if lower is not None and whole_from is not None and lower < whole_from:
        partial.append(_Interval(lower=lower, upper=whole_from))
    if upper is not None and whole_to is not None and whole_to < upper:
        partial.append(_Interval(lower=whole_to, upper=upper))
    return _DaySplit(
        first_day=whole_from.date() if whole_from is not None else None,
        end_day=whole_to.date() if whole_to is not None else None,
        partial=partial,
        any_whole_day=True,
    )


def _facet_catalogue() -> dict[str, Any]:
    """Names of every eval and target (with its department) and department, cached under
    ``test-facets``.

    Grouping by the tests' own eval_id/department_id/target_id columns needs no join; the labels
    come from this small catalogue, which changes only when an operator edits an eval, a
    department or a target.
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
            "targets": {
                str(pk): (name, str(department_id))
                for pk, name, department_id in Target.objects.values_list(
                    "id", "name", "department_id"
                )
            },
        }

    return cache_tags.cached([cache_tags.FACETS], "facet-catalogue", build)


def _catalogue_covering(
    eval_ids: set[str], department_ids: set[str], target_ids: set[str]
) -> dict[str, Any]:
    catalogue = _facet_catalogue()
    if (
        not eval_ids <= set(catalogue["evals"])
        or not department_ids <= set(catalogue["departments"])
        # A catalogue cached before targets were rows has no "targets" at all.
        or not target_ids <= set(catalogue.get("targets", ()))
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
    by_target: dict[str, int]
    # The evals and departments of the tests that pass every filter.
    matching_evals: list[str]
    matching_departments: list[str]


def _count_rows(
    *, tests: QuerySet[Test], day_counts: QuerySet[TestDayCount], interval: _Interval
) -> QuerySet[Any]:
    """(eval_id, department_id, target_id, count) rows that add up to the tests matching
    ``interval`` and the filters ``tests`` and ``day_counts`` already carry; a key may come twice
    (whole days and partial days), the caller adds them. One query however the range is cut."""
    split = _split_days(interval)
    parts: list[QuerySet[Any]] = []
    if split.any_whole_day:
        days = day_counts.filter(count__gt=0)
        if split.first_day is not None:
            days = days.filter(day__gte=split.first_day)
        if split.end_day is not None:
            days = days.filter(day__lt=split.end_day)
        parts.append(
            days.order_by()
            .values_list("eval_id", "department_id", "target_id")
            .annotate(n=Sum("count"))
        )
    if split.partial:
        edges = Q()
        for piece in split.partial:
            edges |= _within(piece)
        parts.append(
            tests.filter(edges)
            .order_by()
            .values_list("eval_id", "department_id", "target_id")
            .annotate(n=Count("id"))
        )
    first, *rest = parts
    return first.union(*rest, all=True) if rest else first


def _counts(
    rows: Iterable[tuple[Any, Any, Any, int]],
    *,
    selected_evals: set[str],
    selected_departments: set[str],
    selected_targets: set[str],
) -> _Counts:
    """The total and the three facet sections from (eval, department, target, count) rows over
    the tests that pass every filter but the three id filters: a row counts towards the total
    when it passes all three, and towards a section when it passes the other two. The rows are
    at most the number of (eval, target) pairs (twice, with a partial day).
    """
    total = 0
    by_eval: dict[str, int] = defaultdict(int)
    by_department: dict[str, int] = defaultdict(int)
    by_target: dict[str, int] = defaultdict(int)
    matching_evals: set[str] = set()
    matching_departments: set[str] = set()
    for eval_id, department_id, target_id, count in rows:
        if not count:
            continue
        eval_key, department_key, target_key = str(eval_id), str(department_id), str(target_id)
        eval_ok = not selected_evals or eval_key in selected_evals
        department_ok = not selected_departments or department_key in selected_departments
        target_ok = not selected_targets or target_key in selected_targets
        if department_ok and target_ok:
            by_eval[eval_key] += count
        if eval_ok and target_ok:
            by_department[department_key] += count
        if eval_ok and department_ok:
            by_target[target_key] += count
        if eval_ok and department_ok and target_ok:
            total += count
            matching_evals.add(eval_key)
            matching_departments.add(department_key)
    return _Counts(
        total=total,
        by_eval=dict(by_eval),
        by_department=dict(by_department),
        by_target=dict(by_target),
        matching_evals=sorted(matching_evals),
        matching_departments=sorted(matching_departments),
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
    target_ids: list[uuid.UUID] | None = None,
    is_archived: bool | None = None,
    start_date: date | datetime | None = None,
    end_date: date | datetime | None = None,
    eval_search: str | None = None,
    department_search: str | None = None,
    page_size: int = PAGE_SIZE_DEFAULT,
    page_offset: int = 0,
    order: str = "newest",
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
    if order not in ORDERINGS:
        raise ValidationFailed(
            f"order must be one of {', '.join(ORDERINGS)}.",
            fields={"order": [f"Must be one of {', '.join(ORDERINGS)}."]},
        )
    user = actor.user
    interval = _interval(start_date=start_date, end_date=end_date)
    # Filters that both the tests and their day counts carry (same column names).
    archived = Q() if is_archived is None else Q(is_archived=is_archived)
    # Subqueries on the eval and department tables, where the trigram indexes on the names live.
    named_evals = (
        Q(eval_id__in=Eval.objects.filter(name__icontains=eval_search).values("id"))
        if eval_search
        else Q()
    )
    named_departments = (
        Q(
            department_id__in=Department.objects.filter(name__icontains=department_search).values(
                "id"
            )
        )
        if department_search
        else Q()
    )
    tests = scope.visible_tests(user).filter(archived)
    seen_departments = scope.visible_department_ids(user)
    day_counts = TestDayCount.objects.filter(archived & named_evals & named_departments)
    if seen_departments is not None:
        day_counts = day_counts.filter(department_id__in=seen_departments)

    selected_evals = {str(pk) for pk in eval_ids or []}
    selected_departments = {str(pk) for pk in department_ids or []}
    selected_targets = {str(pk) for pk in target_ids or []}
    # An empty id list selects nothing in a facet, so it filters nothing (like null).
    by_eval = Q(eval_id__in=list(eval_ids)) if eval_ids else Q()
    by_department = Q(department_id__in=list(department_ids)) if department_ids else Q()
    by_target = Q(target_id__in=list(target_ids)) if target_ids else Q()
    filtered = tests.filter(_within(interval), by_eval & by_department & by_target)

    counts = _counts(
        _count_rows(
            tests=tests.filter(named_evals & named_departments),
            day_counts=day_counts,
            interval=interval,
        ),
        selected_evals=selected_evals,
        selected_departments=selected_departments,
        selected_targets=selected_targets,
    )
    total_count, eval_counts, department_counts, target_counts = (
        counts.total,
        counts.by_eval,
        counts.by_department,
        counts.by_target,
    )
    page: list[SearchRow] = []
    if page_offset < total_count:
        # The counts name the evals and departments that match: as literal ids they replace the
        # name searches exactly, and the planner can estimate them from its statistics (it
        # cannot see how many tests a name subquery selects, and then counts every test of
        # the matching evals instead of walking the created_at index to the page).
        few_evals = len(counts.matching_evals) <= NARROW_EVALS
        if few_evals and (eval_search or total_count <= NARROW_TOTAL):
            # With a small total, also a hint: without it, a rare match makes the planner walk
            # the whole created_at index looking for a page.
            filtered = filtered.filter(eval_id__in=counts.matching_evals)
        else:
            filtered = filtered.filter(named_evals)
        if department_search and len(counts.matching_departments) <= NARROW_EVALS:
            filtered = filtered.filter(department_id__in=counts.matching_departments)
        else:
            filtered = filtered.filter(named_departments)
        page = [
            SearchRow.from_values(values)
            for values in filtered.order_by(*ORDERINGS[order]).values_list(*PAGE_COLUMNS)[
                page_offset : page_offset + page_size
            ]
        ]

    catalogue = _catalogue_covering(
        set(eval_counts) | selected_evals,
        set(department_counts) | selected_departments,
        set(target_counts) | selected_targets,
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
    visible_targets = {
        key
        for key, (_, department_id) in catalogue.get("targets", {}).items()
        if key in selected_targets and scope.can_see_department(user, uuid.UUID(department_id))
    }
    return SearchResult(
        actor_name=actor.display_name,
        tests=page,
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
        target_filter=_section(
            key="target_ids",
            label="Target",
            counts=target_counts,
            labels={key: value[0] for key, value in catalogue.get("targets", {}).items()},
            selected=selected_targets,
            selectable=visible_targets,
        ),
        total_count=total_count,
    )
