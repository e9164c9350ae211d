"""get: one test with everything the detail view shows, in a fixed number of queries.

The query budget does not grow with the test: counts come from one GROUP BY, runs and invocations
are pages, each invocation's grade comes from one subquery-picked id list, and entries and exports
are capped. ``select_related`` is only used for single-valued relations. Counts that a page needs
ride on the page's own query as scalar subqueries (PostgreSQL runs an uncorrelated one once).

The API and the pages read the same plain data (Python values: UUIDs, datetimes). The API renders
it with orjson as it is: no output serializer walks the ~800 nested objects of a large answer,
and orjson writes ids and timestamps as DRF's fields would (tests/api/test_get.py checks that).
A completed test's cached copy for the API is kept as written (see ``wire``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from tests_app import cache_tags
from tests_app.actors import display_name
from tests_app.figures import ScoreMoments
from tests_app.models import BenchmarkEntry, Grade, Test, TestInvocation, TestRun, Upload
from tests_app.selectors.scope import can_operate_department, get_visible_test
from tests_app.selectors.test_figures import (
    figures_of_test,
    step_histograms,
    summarized_runs,
)

ENTRIES_LIMIT = 500
EXPORTS_LIMIT = 20
RUN_STATUSES = [status.value for status in TestRun.Status]
FINISHED_RUN_STATUSES = {TestRun.Status.COMPLETED, TestRun.Status.FAILED, TestRun.Status.STOPPED}
OPEN_INVOCATION_STATUSES = [
    TestInvocation.Status.CREATED,
    TestInvocation.Status.RUNNING,
    TestInvocation.Status.REPLAYED,
]


@dataclass(frozen=True)
class RunsPage:
    size: int
    offset: int


def runs_page(*, size: int | None, offset: int | None) -> RunsPage:
    """The requested page, clamped to the configured bounds."""
    page_size = settings.GET_RUNS_PAGE_SIZE if size is None else size
    page_size = max(1, min(page_size, settings.GET_RUNS_PAGE_SIZE_MAX))
    return RunsPage(size=page_size, offset=max(0, offset or 0))


def download_url(upload_id: uuid.UUID) -> str:
    return f"/api/v5/uploads/{upload_id}/download"


def status_summary(test: Test) -> dict[str, Any]:
    """get's ``status_summary`` (TestStatusSummary of DESIGN §3, over the current cycle in
    infinite mode), also the websocket snapshot's, so the two never disagree.

    Counts by status and the figures of tests_app.figures, in two queries: the runs' counts
    and score sums (one row, or one per entry when runs_per_entry > 1, for pass@k and the
    entry-clustered interval of the mean), and the histogram of the replay steps' latencies."""
    runs = TestRun.objects.filter(summarized_runs(test))
    per_entry = test.benchmark.runs_per_entry > 1
    graded_runs = Q(score__isnull=False)
    columns: dict[str, Any] = {
        **{status: Count("pk", filter=Q(status=status)) for status in RUN_STATUSES},
        "graded": Count("pk", filter=graded_runs),
        "passed": Count("pk", filter=graded_runs & Q(passed=True)),
        "score_sum": Coalesce(Sum("score"), 0.0),
        "score_square_sum": Coalesce(Sum(F("score") * F("score")), 0.0),
    }
    if per_entry:
        # Plain numbers without the entry's id: a thousand entries cost a thousand small rows.
        rows = list(runs.order_by().values("entry_id").annotate(**columns).values_list(*columns))
    else:
        rows = [tuple(runs.aggregate(**columns).values())]
    table = np.array(rows, dtype=float).reshape(-1, len(columns))
    sums = dict(zip(columns, table.sum(axis=0).tolist(), strict=True))
    by_status = {status: int(sums[status]) for status in RUN_STATUSES}
    graded, passed, score_sum = int(sums["graded"]), int(sums["passed"]), sums["score_sum"]
    total = sum(by_status.values())
    finished = sum(by_status[status] for status in FINISHED_RUN_STATUSES)
    graded_by_entry: np.ndarray | None = None
    passed_by_entry: np.ndarray | None = None
    if per_entry:
        graded_column, passed_column = len(RUN_STATUSES), len(RUN_STATUSES) + 1
        graded_by_entry, passed_by_entry = table[:, graded_column], table[:, passed_column]
        moments = ScoreMoments.of_entries(graded_by_entry, table[:, passed_column + 1])
    else:
        moments = ScoreMoments.of_runs(
            graded=graded, score_sum=score_sum, score_square_sum=sums["score_square_sum"]
        )
    return {
        "total_runs": total,
        "by_status": by_status,
        "graded": graded,
        "passed": passed,
        "not_passed": graded - passed,
        "pass_rate": passed / graded if graded else None,
        "mean_score": score_sum / graded if graded else None,
        "cycle": test.cycle,
        "progress": finished / total if total else 0.0,
        **figures_of_test(
            test=test,
            passed=passed,
            graded=graded,
            moments=moments,
            graded_by_entry=graded_by_entry,
            passed_by_entry=passed_by_entry,
            histogram=step_histograms([test])[test.pk],
        ),
    }


def _runs(test: Test, page: RunsPage) -> list[dict[str, Any]]:
    # Renamed in place below, which the TypedDict rows the stubs give values() do not allow.
    rows: list[Any] = list(
        TestRun.objects.filter(test=test)
        .order_by("-cycle", "-ordinal")
        .annotate(entry_title=F("entry__title"))
        .values(
            "id",
            "ordinal",
            "cycle",
            "entry_id",
            "entry_title",
            "status",
            "latest_invocation_id",
            "score",
            "passed",
        )[page.offset : page.offset + page.size]
    )
    for row in rows:
        row["invocation_id"] = row.pop("latest_invocation_id")
    return rows


def _display_name(username: str | None, first_name: str | None, last_name: str | None) -> str:
    # actors.display_name for a user read as columns: the full name, else the username.
    if username is None:
        return ""
    return f"{first_name or ''} {last_name or ''}".strip() or username


def _open_invocations(test: Test) -> QuerySet[TestInvocation]:
    return TestInvocation.objects.filter(test=test, status__in=OPEN_INVOCATION_STATUSES).order_by(
        "-created_at", "-id"
    )


def _invocations(test: Test, page: RunsPage) -> tuple[list[dict[str, Any]], uuid.UUID | None]:
    """A page of invocations, newest first, and the newest one not yet ended (of any page).

    Plain column values, no model instances: a page is a few hundred rows with their grades.
    """
    # The grade shown is the current one (newest done), else the newest of any status, so a
    # pending AI grade is visible while the judge works.
    current_grade = (
        Grade.objects.filter(invocation=OuterRef("pk"))
        .annotate(
            done_first=Case(
                When(status=Grade.Status.DONE, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("done_first", "-created_at")
        .values("pk")[:1]
    )
    rows = list(
        TestInvocation.objects.filter(test=test)
        .order_by("-created_at", "-id")
        .values(
            "id",
            "run_id",
            "run__ordinal",
            "run__cycle",
            "status",
            "client",
            "actor__username",
            "actor__first_name",
            "actor__last_name",
            "started_at",
            "ended_at",
            "error",
            "steps_count",
            current_grade_id=Subquery(current_grade),
            # Uncorrelated: evaluated once for the page, not once per row.
            open_invocation_id=Subquery(_open_invocations(test).values("pk")[:1]),
        )[page.offset : page.offset + page.size]
    )
    if rows:
        open_invocation_id = rows[0]["open_invocation_id"]
    elif page.offset:
        # A page past the end carries no row to read it from.
        open_invocation_id = _open_invocations(test).values_list("pk", flat=True).first()
    else:
        open_invocation_id = None  # no invocation at all
    grade_ids = [row["current_grade_id"] for row in rows if row["current_grade_id"]]
    grades = {
        grade["id"]: grade
        for grade in Grade.objects.filter(pk__in=grade_ids).values(
            "id", "source", "status", "score", "passed", "feedback", "created_at"
        )
    }
    items = [
        {
            "id": row["id"],
            "run_id": row["run_id"],
            "run_ordinal": row["run__ordinal"],
            "cycle": row["run__cycle"],
            "status": row["status"],
            "client": row["client"],
            "actor_name": _display_name(
                row["actor__username"], row["actor__first_name"], row["actor__last_name"]
            ),
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "error": row["error"],
            "steps_count": row["steps_count"],
            "grade": grades.get(row["current_grade_id"]),
        }
        for row in rows
    ]
    return items, open_invocation_id


def _entries(test: Test) -> dict[str, Any]:
    entries = BenchmarkEntry.objects.filter(benchmark_id=test.benchmark_id)
    # The total rides on the capped page as a scalar subquery instead of a second query.
    total = entries.order_by().values("benchmark_id").annotate(total=Count("pk")).values("total")
    rows = list(
        entries.order_by("position")
        .annotate(total=Subquery(total))
        .values_list("id", "position", "title", "turns", "total")[:ENTRIES_LIMIT]
    )
    return {
        "total": rows[0][4] if rows else 0,
        "items": [
            {"id": pk, "position": position, "title": title, "turns": turns}
            for pk, position, title, turns, _ in rows
        ],
    }


def _resources(test: Test) -> dict[str, Any]:
    exports = Upload.objects.filter(test=test, kind=Upload.Kind.EXPORT).order_by("-created_at")
    return {
        "benchmark": {"id": test.benchmark.pk, "name": test.benchmark.name},
        "eval": {"id": test.eval.pk, "name": test.eval.name},
        "rubric": {"id": test.eval.rubric.pk, "name": test.eval.rubric.name},
        "department": {"id": test.department.pk, "name": test.department.name},
        "exports": [
            {
                "upload_id": upload["id"],
                "file_name": upload["file_name"],
                "row_count": upload["row_count"],
                "created_at": upload["created_at"],
                "download_url": download_url(upload["id"]),
            }
            for upload in exports.values("id", "file_name", "row_count", "created_at")[
                :EXPORTS_LIMIT
            ]
        ],
    }


def get_test_detail(
    *,
    user: Any,
    test_id: uuid.UUID,
    runs_page_size: int | None = None,
    runs_page_offset: int | None = None,
    wire: bool = False,
) -> dict[str, Any]:
    """Everything the reference page's get returns, as plain data; NotFound if invisible.

    ``wire``: a completed test's cached copy holds what the API writes (ids and timestamps as
    strings), which unpickles much faster than Python's UUIDs and datetimes; pages ask for
    Python values.
    """
    test = get_visible_test(
        user=user,
        test_id=test_id,
        queryset=Test.objects.select_related(
            "benchmark", "eval__rubric", "department", "target", "created_by"
        ),
    )
    page = runs_page(size=runs_page_size, offset=runs_page_offset)

    def build() -> dict[str, Any]:
        return _detail(test=test, user=user, page=page)

    if test.status == Test.Status.COMPLETED:
        # A completed test changes only through grades, exports, archiving and admin renames,
        # each of which invalidates its tag; and the answer is the same for every caller who may
        # see it (show_controls is false once a test is finished), so it is cached per page.
        form = "wire" if wire else "python"
        return cache_tags.cached(
            cache_tags.detail_tags(test.pk),
            f"get:{test.pk}:{page.size}:{page.offset}:{form}",
            (lambda: _as_written(build())) if wire else build,
        )
    return build()


def _as_written(detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` as the API's JSON has it: strings for ids and timestamps."""
    written: dict[str, Any] = orjson.loads(
        orjson.dumps(detail, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
    )
    return written


def target_summary(test: Test) -> dict[str, Any]:
    """What a test ran against: the target's id and (current) name, and the kind and model of
    the snapshot taken at start, which later edits of the target do not change."""
    snapshot = test.target_snapshot or {}
    return {
        "id": test.target_id,
        "name": test.target.name,
        "kind": snapshot.get("kind") or "reference",
        "model": snapshot.get("model") or "",
    }


def _detail(*, test: Test, user: Any, page: RunsPage) -> dict[str, Any]:
    runs = _runs(test, page)
    invocations, current_invocation_id = _invocations(test, page)
    finished = test.status in {Test.Status.COMPLETED, Test.Status.STOPPED}
    return {
        "test": {
            "id": test.pk,
            "benchmark_id": test.benchmark_id,
            "benchmark_name": test.benchmark.name,
            "eval_id": test.eval_id,
            "department_id": test.department_id,
            "department_name": test.department.name,
            "status": test.status,
            "infinite_mode": test.infinite_mode,
            "cycle": test.cycle,
            "is_archived": test.is_archived,
            "created_at": test.created_at,
            "started_at": test.started_at,
            "finished_at": test.finished_at,
            "created_by_name": display_name(test.created_by),
            "target": target_summary(test),
        },
        "invocations": invocations,
        "status": test.status,
        "eval_name": test.eval.name,
        "eval_description": test.eval.description,
        "rubric_name": test.eval.rubric.name,
        "infinite_mode": test.infinite_mode,
        "runs": runs,
        "status_summary": status_summary(test),
        "show_controls": (
            can_operate_department(user, test.department_id)
            and not test.is_archived
            and not finished
        ),
        "current_invocation_id": current_invocation_id,
        "has_runs_or_groups": test.total_runs > 0 or bool(runs),
        "entries": _entries(test),
        "resources": _resources(test),
    }
