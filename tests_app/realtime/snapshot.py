"""The ``snapshot`` message a websocket client receives first (DESIGN §5).

Read order matters: the test row (with ``event_seq``) is read before the runs and invocations, so
everything in the snapshot is at least as new as event ``seq``. Events publish their number only
after their data committed, hence a client may treat every event up to ``seq`` as already
reflected here and apply later ones on top.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests_app.models import RunAll, Test, TestInvocation
from tests_app.selectors.test_detail import OPEN_INVOCATION_STATUSES, status_summary


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def current_invocation(*, test: Test) -> dict[str, Any] | None:
    """The newest invocation not yet ended (as ``current_invocation_id`` in get), or None."""
    invocation = (
        TestInvocation.objects.filter(test=test, status__in=OPEN_INVOCATION_STATUSES)
        .select_related("run")
        .order_by("-created_at", "-id")
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


def active_run_all(*, test: Test) -> dict[str, Any] | None:
    """The run-all driving the test, or None."""
    run_all = RunAll.objects.filter(test=test, status=RunAll.Status.ACTIVE).first()
    if run_all is None:
        return None
    return {
        "id": str(run_all.pk),
        "status": run_all.status,
        "concurrency": run_all.concurrency,
        "grade": run_all.grade,
        "max_runs": run_all.max_runs,
        "created_at": _iso(run_all.created_at),
    }


def build_snapshot(*, test_id: uuid.UUID | str) -> dict[str, Any]:
    # The summary reads the benchmark's runs per entry.
    test = Test.objects.select_related("benchmark").get(pk=test_id)
    return {
        "type": "snapshot",
        "seq": test.event_seq,
        "test_id": str(test.pk),
        "status": test.status,
        "is_archived": test.is_archived,
        "status_summary": status_summary(test),
        "current_invocation": current_invocation(test=test),
        # Grades still with the judge: the test's result is final once it is completed and
        # this is 0 (docs/realtime.md).
        "pending_grades": test.pending_grades,
        "run_all": active_run_all(test=test),
    }
