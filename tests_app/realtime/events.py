"""The one typed helper that publishes realtime events (DESIGN §5).

Services and tasks call :func:`publish_on_commit` inside their transaction; the event is sent only
after the data it describes has committed, with a per-test increasing ``seq`` taken from the
database (so several web and worker processes never hand out the same number).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

logger = logging.getLogger(__name__)

EventType = Literal[
    "run.started",
    "run.step",
    "run.completed",
    "run.failed",
    "run.stopped",
    "grade.completed",
    "grade.failed",
    "test.completed",
    "test.stopped",
]


def group_name(test_id: uuid.UUID | str) -> str:
    return f"test-{test_id}"


def next_seq(test_id: uuid.UUID | str) -> int:
    from tests_app.models import Test

    with transaction.atomic():
        Test.objects.filter(pk=test_id).update(event_seq=F("event_seq") + 1)
        return int(Test.objects.filter(pk=test_id).values_list("event_seq", flat=True).get())


def send_event(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """Send now. Call only when the data is committed; prefer :func:`publish_on_commit`."""
    try:
        event = {
            "type": event_type,
            "seq": next_seq(test_id),
            "test_id": str(test_id),
            "invocation_id": str(invocation_id) if invocation_id else None,
            "run_id": str(run_id) if run_id else None,
            **data,
        }
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(group_name(test_id), {"type": "test.event", "event": event})
    except Exception:
        # Progress is a hint and the database is the truth: a lost event must not fail the work.
        logger.exception("Could not publish %s for test %s", event_type, test_id)


def publish_on_commit(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    transaction.on_commit(
        lambda: send_event(
            test_id=test_id,
            event_type=event_type,
            invocation_id=invocation_id,
            run_id=run_id,
            **data,
        )
    )
