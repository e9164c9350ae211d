"""Realtime events (DESIGN §5): :func:`publish_on_commit` is the one way to publish.

Services and tasks call it inside their transaction; once the data it describes has committed,
the event takes the test's next ``seq`` from the database (so several web and worker processes
never hand out the same number) and goes to the channel layer's group of the test.

Sends go through one long-lived event loop per process that owns the channel layer's connections,
rather than a new loop and a new Redis connection per event, and the caller does not wait for the
send. The loop sends the events of one test one after another, in the order they were handed
over; different tests' events go out concurrently. A send that fails is logged and dropped:
progress is a hint and the database is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections import deque
from functools import partial
from typing import Any, Literal

from channels.layers import get_channel_layer
from django.db import DatabaseError, connection, transaction

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
    "test.retried",
    "run_all.started",
    "run_all.finished",
]

# A send gets this long from the layer; beyond it the event is dropped (and logged), not the work.
SEND_TIMEOUT_S = 5.0


def group_name(test_id: uuid.UUID | str) -> str:
    return f"test-{test_id}"


def publish_on_commit(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    seq: int | None = None,
    **data: Any,
) -> None:
    """Send the event once the current transaction commits (at once outside one). ``seq``: the
    number the statement that wrote the event's data already took (else one is taken then)."""
    transaction.on_commit(
        partial(
            send_event,
            test_id=test_id,
            event_type=event_type,
            invocation_id=invocation_id,
            run_id=run_id,
            seq=seq,
            **data,
        )
    )


def next_seq(test_id: uuid.UUID | str) -> int:
    """Take the test's next event number: one UPDATE ... RETURNING, its own transaction.

    One statement because every event of a test bumps the same row: an update and a read in a
    transaction would hold its lock across round trips, and every replay of the test would queue
    behind it. The ORM's update() cannot return the new value."""
    from tests_app.models import Test

    table = connection.ops.quote_name(Test._meta.db_table)
    pk = Test._meta.pk.get_db_prep_value(uuid.UUID(str(test_id)), connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",  # noqa: S608
            [pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise Test.DoesNotExist(f"No test {test_id}")
    return int(row[0])


def send_event(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    seq: int | None = None,
    **data: Any,
) -> None:
    """What :func:`publish_on_commit` runs after the commit: number the event (unless it was
    numbered with its data) and hand it to the sender. Never raises: a lost event must not fail
    the work."""
    try:
        seq = next_seq(test_id) if seq is None else seq
    except (DatabaseError, LookupError):
        logger.exception("Could not number %s for test %s", event_type, test_id)
        return
    event = {
        "type": event_type,
        "seq": seq,
        "test_id": str(test_id),
        "invocation_id": str(invocation_id) if invocation_id else None,
        "run_id": str(run_id) if run_id else None,
        **data,
    }
    _sender().send(group_name(test_id), {"type": "test.event", "event": event})


class _Sender:
    """This process's sending loop, on a daemon thread. Only the loop touches ``_queues``: per
    group, the messages waiting behind the one being sent."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        threading.Thread(target=self.loop.run_forever, name="realtime-events", daemon=True).start()

    def send(self, group: str, message: dict[str, Any]) -> None:
        layer = get_channel_layer()
        if layer is not None:
            self.loop.call_soon_threadsafe(self._enqueue, layer, group, message)

    def _enqueue(self, layer: Any, group: str, message: dict[str, Any]) -> None:
        waiting = self._queues.get(group)
        if waiting is not None:
            waiting.append(message)
            return
        self._queues[group] = deque([message])
        task = self.loop.create_task(self._drain(layer, group))
        self._tasks.add(task)  # the loop keeps only weak references to its tasks
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, layer: Any, group: str) -> None:
        waiting = self._queues[group]
        try:
            while waiting:
                message = waiting.popleft()
                try:
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await layer.group_send(group, message)
                except Exception as error:
                    logger.error("Could not send a realtime event to %s: %r", group, error)
        finally:
            del self._queues[group]


_process_sender: _Sender | None = None
_process_sender_pid = 0
_sender_lock = threading.Lock()


def _sender() -> _Sender:
    global _process_sender, _process_sender_pid
    with _sender_lock:
        # After a fork the loop's thread is gone in the child: start another there.
        if _process_sender is None or _process_sender_pid != os.getpid():
            _process_sender, _process_sender_pid = _Sender(), os.getpid()
        return _process_sender
