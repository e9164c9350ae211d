"""The one typed helper that publishes realtime events (DESIGN §5).

Services and tasks call :func:`publish_on_commit` inside their transaction; the event is sent only
after the data it describes has committed, with a per-test increasing ``seq`` taken from the
database (so several web and worker processes never hand out the same number).

Two costs are kept off the hot path of a replay, which publishes every turn from up to 32 worker
threads: the seq is one short statement in its own transaction (the test row stays locked for
microseconds, not for a Python round trip under a busy GIL), and sends go through one long-lived
event loop per process that owns the channel layer's connections, instead of a new loop and a new
Redis connection per event. The caller does not wait for the send: it hands the event to that loop
and goes on (a replay thread would otherwise sit out the layer's round trips five times per
replay). The loop sends the events of one test one after another, in the order they were handed
over, so each thread's events arrive in its order; different tests' events go out concurrently.
Events of a test handed over while one of its sends is under way go out together in the next
send (with Redis, one round trip for a test nobody is watching, however many events).
The asyncio replay engine runs on that same loop and schedules its sends there directly
(:func:`send_numbered_from_loop`), in the same order per test.

A replay on PostgreSQL takes its events' numbers in the statements that write their data (the
claim takes run.started's, a step run.step's, the last step run.completed's as well): the number
and the data commit together, with the test row locked first, as every service that moves a
test's state locks it, and a replay needs no round trip of its own per event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from typing import Any, Literal

from channels.layers import get_channel_layer
from django.db import connection, transaction

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

# A send gets this long from the layer; beyond it the event is dropped (and logged), not the work.
SEND_TIMEOUT_S = 5.0

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()
# Touched only on the sender loop's thread: per group, the messages waiting for its sender (the
# entry lives while that sender runs), and the senders under way (the loop keeps only weak
# references to its tasks).
_pending: dict[str, list[dict[str, Any]]] = {}
_senders: set[asyncio.Task[None]] = set()


def group_name(test_id: uuid.UUID | str) -> str:
    return f"test-{test_id}"


# One statement, so the test row is locked only while PostgreSQL runs it. On PostgreSQL
# set_config(..., true) is SET LOCAL in the same round trip: it lasts until this statement's own
# implicit transaction commits, so only the seq bump skips waiting for the WAL flush.
_SEQ_FAST_COMMIT = (
    "UPDATE tests_app_test SET event_seq = event_seq + 1"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS fast_commit"
    " WHERE tests_app_test.id = %s RETURNING event_seq"
)
_SEQ = "UPDATE tests_app_test SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq"


def next_seq(test_id: uuid.UUID | str) -> int:
    """Take the test's next event number: one UPDATE ... RETURNING, committed on its own.

    Outside a transaction (the on-commit case) the statement is its own transaction and releases
    the row lock at once. On PostgreSQL it commits without waiting for the WAL flush: that is
    safe for a hint, because the data the event describes committed durably before, and a later
    durable commit flushes this one too; a server crash can at worst lose the last few bumps,
    after which events repeat a seq that clients already saw and a client re-fetches with get.
    Inside a caller's transaction (tests, or a direct call) it simply joins it.
    """
    from tests_app.models import Test

    fast_commit = connection.vendor == "postgresql" and not connection.in_atomic_block
    pk = Test._meta.pk.get_db_prep_value(
        test_id if isinstance(test_id, uuid.UUID) else uuid.UUID(str(test_id)), connection
    )
    with connection.cursor() as cursor:
        cursor.execute(_SEQ_FAST_COMMIT if fast_commit else _SEQ, [pk])
        row = cursor.fetchone()
    if row is None:
        raise Test.DoesNotExist(f"No test {test_id}")
    return int(row[0])


def process_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop, on a daemon thread, started on first use: it owns the channel
    layer's connections for the sends, and runs the replays of the asyncio engine
    (tests_app.services.replay_async), whose events are then sent without a thread hop."""
    global _loop, _loop_pid
    loop = _loop
    if loop is not None and _loop_pid == os.getpid():
        return loop
    with _loop_lock:
        # After a fork the thread is gone in the child: start a new one there.
        if _loop is None or _loop_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="realtime-events", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def started_process_loop() -> asyncio.AbstractEventLoop | None:
    """This process's loop if it has been started (None otherwise, or in a forked child)."""
    return _loop if _loop is not None and _loop_pid == os.getpid() else None


def _enqueue(layer: Any, group: str, message: dict[str, Any]) -> None:
    """On the sender loop: queue the message behind the group's earlier ones, and start the
    group's sender unless it runs already."""
    waiting = _pending.get(group)
    if waiting is not None:
        waiting.append(message)
        return
    _pending[group] = [message]
    task = asyncio.get_running_loop().create_task(_send_pending(layer, group))
    _senders.add(task)
    task.add_done_callback(_senders.discard)


async def _send_pending(layer: Any, group: str) -> None:
    """A group's sender: everything queued for the group, in order; what was queued while a
    send was under way goes out together in the next one (one Redis round trip for a group
    nobody listens to, however many events: :meth:`RedisChannelLayer.group_send_many`)."""
    waiting = _pending[group]
    try:
        while waiting:
            batch = waiting[:]
            del waiting[:]
            try:
                await asyncio.wait_for(_group_send_all(layer, group, batch), SEND_TIMEOUT_S)
            except Exception as error:
                # Progress is a hint and the database is the truth: a lost event must not fail
                # the work, nor stop the group's later events.
                logger.error("Could not send %s realtime event(s): %r", len(batch), error)
    finally:
        del _pending[group]


async def _group_send_all(layer: Any, group: str, messages: list[dict[str, Any]]) -> None:
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        await send_many(group, messages)
        return
    for message in messages:
        await layer.group_send(group, message)


def _send(group: str, message: dict[str, Any]) -> None:
    """Hand the message to this process's sender loop; returns before it is sent."""
    layer = get_channel_layer()
    if layer is None:
        return
    process_loop().call_soon_threadsafe(_enqueue, layer, group, message)


def event_message(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    seq: int,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """The layer message of one event; the consumers forward ``event`` to their sockets."""
    event = {
        "type": event_type,
        "seq": seq,
        "test_id": str(test_id),
        "invocation_id": str(invocation_id) if invocation_id else None,
        "run_id": str(run_id) if run_id else None,
        **data,
    }
    return {"type": "test.event", "event": event}


async def send_event_from_loop(
    connection: Any,
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """:func:`send_event` for code running on :func:`process_loop` with an autocommit
    ``psycopg.AsyncConnection`` (the asyncio replay engine): the same fast-commit seq, then the
    send is scheduled in order with this process's other sends of the test, without waiting."""
    try:
        cursor = await connection.execute(_SEQ_FAST_COMMIT, [test_id])
        row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"No test {test_id}")
    except Exception:
        # Progress is a hint and the database is the truth: a lost event must not fail the work.
        logger.exception("Could not publish %s for test %s", event_type, test_id)
        return
    send_numbered_from_loop(
        seq=int(row[0]),
        test_id=test_id,
        event_type=event_type,
        invocation_id=invocation_id,
        run_id=run_id,
        **data,
    )


def send_numbered_from_loop(
    *,
    seq: int,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """Send an event whose seq was taken by the statement that committed its data (the replay's
    claim and steps), from code on :func:`process_loop`: scheduled in order with this process's
    other sends of the test, without waiting."""
    try:
        message = event_message(
            test_id=test_id,
            event_type=event_type,
            seq=seq,
            invocation_id=invocation_id,
            run_id=run_id,
            **data,
        )
        layer = get_channel_layer()
        if layer is None:
            return
        _enqueue(layer, group_name(test_id), message)
    except Exception:
        logger.exception("Could not publish %s for test %s", event_type, test_id)


def send_numbered_event(
    *,
    seq: int,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """Send now an event whose seq was taken with its data (see the module's docstring). Call
    only when the data is committed; prefer :func:`publish_numbered_on_commit`."""
    try:
        message = event_message(
            test_id=test_id,
            event_type=event_type,
            seq=seq,
            invocation_id=invocation_id,
            run_id=run_id,
            **data,
        )
        _send(group_name(test_id), message)
    except Exception:
        # Progress is a hint and the database is the truth: a lost event must not fail the work.
        logger.exception("Could not publish %s for test %s", event_type, test_id)


def publish_numbered_on_commit(
    *,
    seq: int,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """:func:`publish_on_commit` for an event whose seq was taken with its data, in the same
    statement (the replay's claim and steps on PostgreSQL): sent once that has committed."""
    transaction.on_commit(
        lambda: send_numbered_event(
            seq=seq,
            test_id=test_id,
            event_type=event_type,
            invocation_id=invocation_id,
            run_id=run_id,
            **data,
        )
    )


def send_event(
    *,
    test_id: uuid.UUID | str,
    event_type: EventType,
    invocation_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    **data: Any,
) -> None:
    """Send now, with the test's next seq. Call only when the data is committed; prefer
    :func:`publish_on_commit`."""
    try:
        seq = next_seq(test_id)
    except Exception:
        # Progress is a hint and the database is the truth: a lost event must not fail the work.
        logger.exception("Could not publish %s for test %s", event_type, test_id)
        return
    send_numbered_event(
        seq=seq,
        test_id=test_id,
        event_type=event_type,
        invocation_id=invocation_id,
        run_id=run_id,
        **data,
    )


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
