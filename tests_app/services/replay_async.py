"""The asyncio replay engine: a Celery worker process's replays on one event loop (DESIGN §4, §6).

The threaded path (:mod:`tests_app.services.replay`) gives each replay a pool thread, and a replay
is some fifteen round trips (claim, model call, step and event per turn, finish): with 32 threads
each round trip waits to take the interpreter lock back, and the handing over cost the worker
about as much CPU as the work itself (the bench's replay scenario: about 13 ms of worker CPU a
replay). Here the task's pool thread hands the replay to the process's event loop
(:func:`tests_app.realtime.events.process_loop`) and waits for it; the loop runs every replay of
the process with asyncio clients: psycopg's async pool, an aiohttp session for the model calls
(:meth:`tests_app.targets.openai.OpenAITarget.acomplete`), redis.asyncio for the target's slots,
and the channel layer for the events, without a thread hop.

Same semantics as the threaded path, statement for statement: the claim and the steps (the last
of which finishes the invocation) are the same conditional statements, shared with
:mod:`~tests_app.services.replay`, so a second delivery, a stop between turns and a stop during a
call behave alike; each statement takes the seqs of its events, so a replay is one round trip to
PostgreSQL per turn and one for the claim. A failure is recorded by the calling thread with the
threaded path's :func:`~tests_app.services.replay.fail_invocation` (it moves the test's state,
under its lock).

Used by Celery workers on PostgreSQL with Redis when ``REPLAY_ENGINE=asyncio`` (the default);
eager runs (the embedded runtime's background threads, the test suite's in-transaction tasks)
and other databases take the threaded path.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from psycopg_pool import AsyncConnectionPool

from tests_app.errors import ValidationFailed
from tests_app.models import TestInvocation
from tests_app.realtime.events import (
    process_loop,
    send_event_from_loop,
    send_numbered_from_loop,
    started_process_loop,
)
from tests_app.services import replay
from tests_app.targets import Target, TargetError, target_for
from tests_app.targets.concurrency import async_target_slot, close_async_redis
from tests_app.targets.openai import close_async_clients

logger = logging.getLogger(__name__)

# Connections of the loop's pool kept open between replays; it grows to the process's
# DATABASE_POOL_MAX when replays overlap (a replay holds one only during a statement).
_POOL_MIN = 2
# psycopg's own default: a statement is prepared once it has run this many times on a connection.
PREPARE_THRESHOLD = 5
# How long a replay waits for the pool's first connections, and later for a free connection.
POOL_TIMEOUT_S = 10.0


def enabled() -> bool:
    """Whether a Celery worker replays on the event loop (else on its pool thread)."""
    return (
        settings.REPLAY_ENGINE == "asyncio"
        and connection.vendor == "postgresql"
        and bool(settings.REDIS_URL)
    )


@dataclass(frozen=True)
class Failure:
    invocation_id: uuid.UUID
    error: str


def _pool_kwargs(database: BaseDatabaseWrapper) -> tuple[dict[str, Any], int]:
    """psycopg connect arguments of Django's database settings (the same server, user, options
    and type adapters), in autocommit, and the pool's maximum size."""
    params = dict(database.get_connection_params())
    params.pop("cursor_factory", None)  # a sync cursor class; the async default is right here
    # psycopg prepares a statement on its fifth execution on a connection; Django's own
    # connections prepare only when asked (see DATABASE_PREPARED_STATEMENTS in the settings).
    params["prepare_threshold"] = (
        PREPARE_THRESHOLD if settings.DATABASE_PREPARED_STATEMENTS else None
    )
    pool_options = database.settings_dict.get("OPTIONS", {}).get("pool")
    max_size = pool_options.get("max_size", 20) if isinstance(pool_options, dict) else 20
    return {**params, "autocommit": True}, max(_POOL_MIN, int(max_size))


_pools: dict[asyncio.AbstractEventLoop, asyncio.Task[AsyncConnectionPool]] = {}


async def _open_pool(kwargs: dict[str, Any], max_size: int) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = AsyncConnectionPool(
        conninfo="",
        kwargs=kwargs,
        min_size=min(_POOL_MIN, max_size),
        max_size=max_size,
        timeout=POOL_TIMEOUT_S,
        name="replay-async",
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=POOL_TIMEOUT_S)
    except BaseException:
        # Unreachable: stop its reconnect attempts; the next replay tries a new pool.
        await pool.close()
        raise
    return pool


def _failed(opening: asyncio.Task[AsyncConnectionPool]) -> bool:
    return opening.done() and (opening.cancelled() or opening.exception() is not None)


async def _pool(kwargs: dict[str, Any], max_size: int) -> AsyncConnectionPool:
    """This loop's pool, opened once; replays that start meanwhile wait for the same opening."""
    loop = asyncio.get_running_loop()
    opening = _pools.get(loop)
    if opening is None or _failed(opening):
        opening = _pools[loop] = loop.create_task(_open_pool(kwargs, max_size))
    return await asyncio.shield(opening)


async def _close_loop_resources() -> None:
    opening = _pools.pop(asyncio.get_running_loop(), None)
    if opening is not None and opening.done() and not _failed(opening):
        await opening.result().close()
    await close_async_clients()
    await close_async_redis()


def close() -> None:
    """Close what this process's loop holds for replays (its database pool, model clients and
    Redis client): a worker shutting down, a test suite about to drop its database. The next
    replay opens new ones."""
    loop = started_process_loop()
    if loop is not None:
        asyncio.run_coroutine_threadsafe(_close_loop_resources(), loop).result(timeout=30)


@cache
def _finish_sql() -> str:
    quote = connection.ops.quote_name
    return f"""
        UPDATE {quote(TestInvocation._meta.db_table)} SET
            status = %(replayed)s, heartbeat_at = %(now)s, updated_at = %(now)s
        WHERE id = %(invocation_id)s AND status = %(running)s AND NOT stop_requested
        RETURNING id
    """  # noqa: S608


@cache
def _heartbeat_sql() -> str:
    quote = connection.ops.quote_name
    return f"""
        UPDATE {quote(TestInvocation._meta.db_table)} SET heartbeat_at = %(now)s
        WHERE id = %(invocation_id)s AND status = %(running)s
    """  # noqa: S608


async def _heartbeat(pool: AsyncConnectionPool, invocation_id: uuid.UUID) -> None:
    """Keep heartbeat_at fresh while the replay runs (a call with retries may outlast the
    reaper's timeout); cancelled when it ends. Dies with the process, so a killed worker goes
    stale and the reaper gives the run back."""
    interval = replay.heartbeat_interval()
    while True:
        await asyncio.sleep(interval)
        try:
            async with pool.connection() as conn:
                await conn.execute(
                    _heartbeat_sql(),
                    {
                        "now": timezone.now(),
                        "invocation_id": invocation_id,
                        "running": TestInvocation.Status.RUNNING.value,
                    },
                )
        except Exception:
            logger.exception("Heartbeat of invocation %s failed", invocation_id)


async def _finish_without_turns(
    pool: AsyncConnectionPool, invocation: TestInvocation, total_turns: int
) -> None:
    """An entry without user turns: nothing to call, the invocation is replayed at once (a
    replay with turns finishes in its last step's statement)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            _finish_sql(),
            {
                "replayed": TestInvocation.Status.REPLAYED.value,
                "now": timezone.now(),
                "invocation_id": invocation.pk,
                "running": TestInvocation.Status.RUNNING.value,
            },
        )
        if await cursor.fetchone() is not None:
            await send_event_from_loop(
                conn,
                test_id=invocation.test_id,
                event_type="run.completed",
                invocation_id=invocation.pk,
                run_id=invocation.run_id,
                status=TestInvocation.Status.REPLAYED,
                total_turns=total_turns,
            )


async def _replay(
    invocation_id: str, database: BaseDatabaseWrapper, pool_kwargs: dict[str, Any], pool_max: int
) -> Failure | None:
    """The replay of :func:`replay.replay_invocation`, on the loop; returns the failure for the
    calling thread to record. Errors before the claim propagate (the task retries them).

    Its events take their seqs in the statements that write their data (the claim, each step)
    and are handed to the sender at once, in order; their sends are under way before the task
    ends, so a failure recorded afterwards by the calling thread is sent after them."""
    pool = await _pool(pool_kwargs, pool_max)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            replay.claim_sql(), replay.claim_parameters(invocation_id, timezone.now())
        )
        row = await cursor.fetchone()
        if row is None:
            logger.info("Invocation %s is missing or not created; nothing to replay", invocation_id)
            return None
        claimed = replay.claimed_from_row(invocation_id, row)
        invocation = claimed.invocation
    send_numbered_from_loop(
        seq=int(claimed.started_seq or 0),
        test_id=invocation.test_id,
        event_type="run.started",
        invocation_id=invocation.pk,
        run_id=invocation.run_id,
        total_turns=claimed.total_turns,
    )
    messages = [m for m in (claimed.messages or []) if isinstance(m, dict)]
    turns = replay.plan_turns(messages)
    target: Target | None = None
    heartbeat = asyncio.create_task(_heartbeat(pool, invocation.pk))
    try:
        target = target_for(claimed.target)
        own_answers: dict[int, str] = {}
        step_sql, _ = replay.record_step_sql()
        for turn in turns:
            history = replay.history_for(messages, turn, own_answers, claimed.replay_mode)
            lease_s, wait_s = replay.slot_timing(target)
            async with async_target_slot(target.key, lease_s=lease_s, wait_s=wait_s):
                reply = await target.acomplete(messages=history, reference=turn.reference)
            replay.remember_answer(own_answers, turn, reply.content)
            now = timezone.now()
            step = replay.build_step(invocation=invocation, turn=turn, reply=reply, now=now)
            finishes = turn is turns[-1]
            parameters = replay.record_step_parameters(
                step, now, database, test_id=invocation.test_id, finishes=finishes
            )
            async with pool.connection() as conn:
                cursor = await conn.execute(step_sql, parameters)
                row = await cursor.fetchone()
            if row is None:
                logger.info("Invocation %s stopped during turn %s", invocation.pk, turn.turn)
                return None
            seq = int(row[0])
            step_event, completed_event = replay.step_events(
                invocation, turn, len(turns), step.output
            )
            send_numbered_from_loop(seq=seq - 1 if finishes else seq, **step_event)
            if finishes:
                send_numbered_from_loop(seq=seq, **completed_event)
        if not turns:
            await _finish_without_turns(pool, invocation, len(turns))
        return None
    except TargetError as error:
        return Failure(invocation.pk, str(error))
    except ValidationFailed as error:
        # A benchmark whose target JSON is malformed cannot be replayed; say why on the invocation.
        return Failure(invocation.pk, error.detail)
    except Exception as error:
        logger.exception("Replay of invocation %s crashed", invocation.pk)
        return Failure(invocation.pk, f"The replay failed unexpectedly: {error!r}")
    finally:
        heartbeat.cancel()
        if target is not None:
            target.close()


def replay_invocation(*, invocation_id: uuid.UUID | str) -> None:
    """Replay on this process's event loop; the calling (pool) thread waits, then records a
    failure. A database error before the claim is raised as Django's OperationalError, which the
    task retries like the threaded path's."""
    # Built here, on a thread with a Django connection: the statements' texts (cached) and the
    # wrapper that adapts values. The loop only reads them; it never uses Django's connection.
    replay.claim_sql()
    replay.record_step_sql()
    _finish_sql()
    _heartbeat_sql()
    database = connections[DEFAULT_DB_ALIAS]
    pool_kwargs, pool_max = _pool_kwargs(database)
    future = asyncio.run_coroutine_threadsafe(
        _replay(str(invocation_id), database, pool_kwargs, pool_max), process_loop()
    )
    try:
        failure = future.result()
    except psycopg.OperationalError as error:
        raise OperationalError(str(error)) from error
    if failure is not None:
        replay.fail_invocation(invocation_id=failure.invocation_id, error=failure.error)
