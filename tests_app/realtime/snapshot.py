"""The ``snapshot`` message a websocket client receives first (DESIGN §5).

Read order matters: the test row (with ``event_seq``) is read before the runs and invocations, so
everything in the snapshot is at least as new as event ``seq``. Events publish their number only
after their data committed, hence a client may treat every event up to ``seq`` as already
reflected here and apply later ones on top.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Avg, Count, Q

from tests_app.models import Test, TestInvocation, TestRun

FINISHED_RUN_STATUSES = (TestRun.Status.COMPLETED, TestRun.Status.FAILED, TestRun.Status.STOPPED)
UNENDED_INVOCATION_STATUSES = (
    TestInvocation.Status.CREATED,
    TestInvocation.Status.RUNNING,
    TestInvocation.Status.REPLAYED,
)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def status_summary(*, test: Test) -> dict[str, Any]:
    """TestStatusSummary of DESIGN §3, over the current cycle in infinite mode. One query."""
    runs = TestRun.objects.filter(test=test)
    if test.infinite_mode:
        runs = runs.filter(cycle=test.cycle)
    counts = runs.aggregate(
        total=Count("pk"),
        graded=Count("pk", filter=Q(score__isnull=False)),
        passed=Count("pk", filter=Q(score__isnull=False, passed=True)),
        mean_score=Avg("score"),
        **{
            status: Count("pk", filter=Q(status=status))
            for status in TestRun.Status.values  # six fixed statuses, one aggregate each
        },
    )
    total, graded, passed = counts["total"], counts["graded"], counts["passed"]
    finished = sum(counts[status] for status in FINISHED_RUN_STATUSES)
    return {
        "total_runs": total,
        "by_status": {status: counts[status] for status in TestRun.Status.values},
        "graded": graded,
        "passed": passed,
        "not_passed": graded - passed,
        "pass_rate": passed / graded if graded else None,
        "mean_score": counts["mean_score"],
        "cycle": test.cycle,
        "progress": finished / total if total else 0.0,
    }


def current_invocation(*, test: Test) -> dict[str, Any] | None:
    """The newest invocation not yet ended (as ``current_invocation_id`` in get), or None."""
    invocation = (
        TestInvocation.objects.filter(test=test, status__in=UNENDED_INVOCATION_STATUSES)
        .select_related("run")
        .order_by("-created_at")
        .first()
    )
    if invocation is None:
        return None
    return {
        "id": str(invocation.pk),
        "run_id": str(invocation.run_id),
        "run_ordinal": invocation.run.ordinal,
        "cycle": invocation.run.cycle,
        "status": invocation.status,
        "client": invocation.client,
        "started_at": _iso(invocation.started_at),
        "steps_count": invocation.steps_count,
    }


def build_snapshot(*, test_id: uuid.UUID | str) -> dict[str, Any]:
    test = Test.objects.get(pk=test_id)
    return {
        "type": "snapshot",
        "seq": test.event_seq,
        "test_id": str(test.pk),
        "status": test.status,
        "is_archived": test.is_archived,
        "status_summary": status_summary(test=test),
        "current_invocation": current_invocation(test=test),
    }
