"""A test's progress as the test page shows it: how far, how fast, and about how long is left.

Throughput is the runs finished since ``since`` (the run-all's start when one drives the test,
else the test's first claim) over the time since; the time left is what remains at that pace. Both
are estimates, so they are shown only once there is something to measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests_app.models import TestInvocation, TestRun

FINISHED = (TestRun.Status.COMPLETED, TestRun.Status.FAILED, TestRun.Status.STOPPED)
# Below this much time or this few runs, a pace would be noise.
MIN_SECONDS_MEASURED = 3.0
MIN_RUNS_MEASURED = 1


@dataclass(frozen=True)
class Progress:
    total: int
    finished: int
    remaining: int
    per_minute: float | None
    seconds_left: float | None

    @property
    def percent(self) -> int:
        return math.floor(100 * self.finished / self.total) if self.total else 0

    @property
    def pace(self) -> str:
        if self.per_minute is None:
            return ""
        if self.per_minute >= 10:
            return f"{self.per_minute:.0f} runs/min"
        return f"{self.per_minute:.1f} runs/min"

    @property
    def time_left(self) -> str:
        return time_left_words(self.seconds_left)


def measure(
    *, by_status: dict[str, int], since: datetime | None, finished_since: int, now: datetime
) -> Progress:
    total = sum(by_status.values())
    finished = sum(by_status.get(status, 0) for status in FINISHED)
    remaining = total - finished
    per_minute = seconds_left = None
    if since is not None and finished_since >= MIN_RUNS_MEASURED:
        elapsed = (now - since).total_seconds()
        if elapsed >= MIN_SECONDS_MEASURED:
            per_minute = finished_since * 60 / elapsed
            seconds_left = remaining * 60 / per_minute if remaining else 0.0
    return Progress(
        total=total,
        finished=finished,
        remaining=remaining,
        per_minute=per_minute,
        seconds_left=seconds_left,
    )


def time_left_words(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds <= 0:
        return "done"
    if seconds < 60:
        return "under a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left"


def finished_since(*, test_id: Any, since: datetime) -> int:
    """Runs of the test finished since ``since``: each ends with its invocation's end."""
    return TestInvocation.objects.filter(test_id=test_id, ended_at__gte=since).count()
