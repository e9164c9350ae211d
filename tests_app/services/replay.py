"""Replay one invocation against its benchmark's target (DESIGN §4).

Called by the ``replay_invocation`` task. Safe to deliver twice: the work is claimed with a
conditional UPDATE (created → running), and a second delivery finds nothing to claim.

Turn semantics: system and tool messages (and assistant messages that only carry tool calls) are
context; each user message is one turn, sent with the history so far. The reference of a turn is
the last recorded assistant text before the next user message. In ``autoregressive`` mode the
model's own answer stands in for that recorded text in the history of later turns; in
``teacher_forced`` mode the recorded assistant messages are sent as they were.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Field
from django.utils import timezone

from tests_app.errors import ValidationFailed
from tests_app.models import Benchmark, BenchmarkEntry, ReplayStep, Test, TestInvocation, TestRun
from tests_app.realtime.events import publish_numbered_on_commit, publish_on_commit
from tests_app.services import test_state
from tests_app.targets import (
    Message,
    Target,
    TargetError,
    TargetReply,
    message_text,
    target_for,
)
from tests_app.targets.concurrency import target_slot

logger = logging.getLogger(__name__)

# Text columns stay readable in lists and exports; the model's full answer is rarely longer.
MAX_STEP_TEXT = 100_000
MAX_ERROR_TEXT = 4_000


@dataclass(frozen=True)
class PlannedTurn:
    turn: int
    # Index in entry.messages of the user message of this turn.
    index: int
    user_message: Message
    reference: str | None
    # Index of the recorded assistant text that is the reference (None when there is none).
    reference_index: int | None


def plan_turns(messages: list[Message]) -> list[PlannedTurn]:
    """The user turns of a recorded conversation, each with its reference answer."""
    turns: list[PlannedTurn] = []
    for index, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        reference: str | None = None
        reference_index: int | None = None
        for later in range(index + 1, len(messages)):
            role = messages[later].get("role")
            if role == "user":
                break
            if role == "assistant" and message_text(messages[later].get("content")):
                reference = message_text(messages[later].get("content"))
                reference_index = later
        turns.append(
            PlannedTurn(
                turn=len(turns) + 1,
                index=index,
                user_message=message,
                reference=reference,
                reference_index=reference_index,
            )
        )
    return turns


def _wire_message(message: Message) -> Message:
    # Only what the chat completions protocol knows; recordings may carry extra keys.
    allowed = ("role", "content", "name", "tool_calls", "tool_call_id")
    return {key: message[key] for key in allowed if key in message}


def history_for(
    messages: list[Message], turn: PlannedTurn, own_answers: dict[int, str], mode: str
) -> list[Message]:
    """The messages sent for ``turn``: everything recorded before its user message. In
    auto-regressive mode a recorded answer is swapped for the model's own one (keyed by the
    recorded answer's index), and a turn that had no recorded answer gets the model's answer
    right after its user message (keyed by the user message's index, stored negated)."""
    autoregressive = mode == Benchmark.ReplayMode.AUTOREGRESSIVE
    history: list[Message] = []
    for index, message in enumerate(messages[: turn.index + 1]):
        if autoregressive and index in own_answers:
            history.append({"role": "assistant", "content": own_answers[index]})
            continue
        history.append(_wire_message(message))
        if autoregressive and -index - 1 in own_answers and index != turn.index:
            history.append({"role": "assistant", "content": own_answers[-index - 1]})
    return history


def remember_answer(own_answers: dict[int, str], turn: PlannedTurn, content: str) -> None:
    """Keep the model's answer to ``turn`` for the history of later turns (see history_for)."""
    if turn.reference_index is not None:
        own_answers[turn.reference_index] = content
    else:
        # No recorded answer to replace: the model's answer still belongs in the history.
        own_answers[-turn.index - 1] = content


def slot_timing(target: Target) -> tuple[float, float]:
    """How long a turn holds its target slot at most (a lease outliving every retry of the call)
    and how long it waits for one."""
    return target.max_call_seconds + 30, max(60.0, target.max_call_seconds * 2)


def heartbeat_interval() -> float:
    """How often a running replay refreshes heartbeat_at: well inside the reaper's timeout."""
    return max(0.2, settings.REPLAY_HEARTBEAT_TIMEOUT / 4)


@contextlib.contextmanager
def _heartbeat_while(invocation_id: uuid.UUID) -> Iterator[None]:
    """Keep heartbeat_at fresh while a model call is in flight (a call with retries may outlast
    the reaper's timeout). The thread dies with the process, so a killed worker goes stale."""
    interval = heartbeat_interval()
    done = threading.Event()

    def beat() -> None:
        try:
            while not done.wait(interval):
                TestInvocation.objects.filter(
                    pk=invocation_id, status=TestInvocation.Status.RUNNING
                ).update(heartbeat_at=timezone.now())
        except Exception:
            logger.exception("Heartbeat of invocation %s failed", invocation_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{invocation_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=interval + 5)


@dataclass(frozen=True)
class ClaimedReplay:
    """What a replay needs, read when it was claimed. ``invocation`` carries only its id, test and
    run: every later write is a conditional UPDATE by id."""

    invocation: TestInvocation
    messages: list[Message]
    total_turns: int
    target: Any
    replay_mode: str
    # run.started's seq, when the claim took it (PostgreSQL); else it is taken after the commit.
    started_seq: int | None = None


@cache
def claim_sql() -> str:
    """Claim on PostgreSQL in one statement, without a transaction's BEGIN and COMMIT round
    trips: the invocation created → running and its run claimed → running, atomically, and read
    back what the replay needs (the entry's messages, the benchmark's target and mode) with the
    seq of its run.started event, taken with the claim (the test row first: ``claimed`` reads
    ``seq``, so the test is locked before the invocation, in every service's lock order)."""
    quote = connection.ops.quote_name
    invocation_table = quote(TestInvocation._meta.db_table)
    run_table = quote(TestRun._meta.db_table)
    entry_table = quote(BenchmarkEntry._meta.db_table)
    test_table = quote(Test._meta.db_table)
    benchmark_table = quote(Benchmark._meta.db_table)
    return f"""
        WITH seq AS (
            UPDATE {test_table} SET event_seq = event_seq + 1
            WHERE id = (
                SELECT test_id FROM {invocation_table}
                WHERE id = %(invocation_id)s AND status = %(created)s
            )
            RETURNING event_seq
        ), claimed AS (
            UPDATE {invocation_table} AS invocation SET
                status = %(running)s, started_at = %(now)s, heartbeat_at = %(now)s,
                updated_at = %(now)s
            FROM seq
            WHERE invocation.id = %(invocation_id)s AND invocation.status = %(created)s
            RETURNING invocation.id, invocation.run_id, invocation.test_id, seq.event_seq
        ), moved AS (
            -- PostgreSQL runs a data-modifying WITH clause whether or not it is read.
            UPDATE {run_table} AS run SET status = %(run_running)s, updated_at = %(now)s
            FROM claimed
            WHERE run.id = claimed.run_id AND run.status = %(run_claimed)s
        )
        SELECT claimed.test_id, claimed.run_id, entry.messages, entry.turns, benchmark.target,
            benchmark.replay_mode, claimed.event_seq
        FROM claimed
        JOIN {run_table} AS run ON run.id = claimed.run_id
        JOIN {entry_table} AS entry ON entry.id = run.entry_id
        JOIN {test_table} AS test ON test.id = claimed.test_id
        JOIN {benchmark_table} AS benchmark ON benchmark.id = test.benchmark_id
    """  # noqa: S608


def _json(value: Any) -> Any:
    # Django reads jsonb as text and parses it in the field; a raw cursor hands over the text.
    return json.loads(value) if isinstance(value, str) else value


def claim_parameters(invocation_id: uuid.UUID | str, now: datetime) -> dict[str, Any]:
    """The parameters of :func:`claim_sql`."""
    return {
        "invocation_id": invocation_id,
        "now": now,
        "running": TestInvocation.Status.RUNNING.value,
        "created": TestInvocation.Status.CREATED.value,
        "run_running": TestRun.Status.RUNNING.value,
        "run_claimed": TestRun.Status.CLAIMED.value,
    }


def claimed_from_row(invocation_id: uuid.UUID | str, row: tuple[Any, ...]) -> ClaimedReplay:
    """What :func:`claim_sql` read back, as the replay needs it."""
    test_id, run_id, messages, turns, target, replay_mode, started_seq = row
    return ClaimedReplay(
        invocation=TestInvocation(id=uuid.UUID(str(invocation_id)), test_id=test_id, run_id=run_id),
        messages=_json(messages),
        total_turns=int(turns),
        target=_json(target),
        replay_mode=str(replay_mode),
        started_seq=int(started_seq),
    )


def _claim_now(invocation_id: uuid.UUID | str, now: datetime) -> ClaimedReplay | None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_sql(), claim_parameters(invocation_id, now))
            row = cursor.fetchone()
        return None if row is None else claimed_from_row(invocation_id, row)
    with transaction.atomic():
        claimed = TestInvocation.objects.filter(
            pk=invocation_id, status=TestInvocation.Status.CREATED
        ).update(
            status=TestInvocation.Status.RUNNING, started_at=now, heartbeat_at=now, updated_at=now
        )
        if claimed != 1:
            return None
        invocation = TestInvocation.objects.select_related("run__entry", "test__benchmark").get(
            pk=invocation_id
        )
        TestRun.objects.filter(pk=invocation.run_id, status=TestRun.Status.CLAIMED).update(
            status=TestRun.Status.RUNNING, updated_at=now
        )
    entry, benchmark = invocation.run.entry, invocation.test.benchmark
    return ClaimedReplay(
        invocation=invocation,
        messages=entry.messages,
        total_turns=entry.turns,
        target=benchmark.target,
        replay_mode=benchmark.replay_mode,
    )


def _claim(invocation_id: uuid.UUID | str) -> ClaimedReplay | None:
    claimed = _claim_now(invocation_id, timezone.now())
    if claimed is None:
        return None
    event: dict[str, Any] = {
        "test_id": claimed.invocation.test_id,
        "event_type": "run.started",
        "invocation_id": claimed.invocation.pk,
        "run_id": claimed.invocation.run_id,
        "total_turns": claimed.total_turns,
    }
    if claimed.started_seq is not None:
        publish_numbered_on_commit(seq=claimed.started_seq, **event)
    else:
        publish_on_commit(**event)
    return claimed


@cache
def record_step_sql() -> tuple[str, list[Field[Any, Any]]]:
    """One statement for a step on PostgreSQL: the seq of its events, the conditional UPDATE of
    the invocation and the step's INSERT, which happens only when that UPDATE matched. The last
    turn's step also finishes the invocation (running → replayed) and takes two seqs, run.step's
    and run.completed's: a replay is one statement per turn. Returns the last seq taken.

    The test row is locked first (``moved`` reads ``seq``), as every service that moves a test's
    state locks it, and only while an invocation of it is running and not stopped; a stop that
    commits in between leaves a gap in the test's seqs, which a client answers by fetching."""
    fields = [f for f in ReplayStep._meta.concrete_fields if f.attname != "invocation_id"]
    quote = connection.ops.quote_name
    invocation_table = quote(TestInvocation._meta.db_table)
    test_table = quote(Test._meta.db_table)
    step_table = quote(ReplayStep._meta.db_table)
    column_list = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(f"%(value_{index})s" for index in range(len(fields)))
    sql = f"""
        WITH seq AS (
            UPDATE {test_table} SET event_seq = event_seq + %(events)s
            WHERE id = %(test_id)s AND EXISTS (
                SELECT 1 FROM {invocation_table}
                WHERE id = %(invocation_id)s AND status = %(running)s AND NOT stop_requested
            )
            RETURNING event_seq
        ), moved AS (
            UPDATE {invocation_table} AS invocation SET
                steps_count = steps_count + 1, heartbeat_at = %(now)s, updated_at = %(now)s,
                status = CASE WHEN %(finishes)s THEN %(replayed)s ELSE invocation.status END
            FROM seq
            WHERE invocation.id = %(invocation_id)s AND invocation.status = %(running)s
                AND NOT invocation.stop_requested
            RETURNING invocation.id, seq.event_seq
        ), step AS (
            INSERT INTO {step_table} ({column_list}, "invocation_id")
            SELECT {placeholders}, moved.id FROM moved
        )
        SELECT event_seq FROM moved
    """  # noqa: S608
    return sql, fields


def build_step(
    *, invocation: TestInvocation, turn: PlannedTurn, reply: TargetReply, now: datetime
) -> ReplayStep:
    """The step of one replayed turn, its texts cut to what a row keeps."""
    return ReplayStep(
        invocation=invocation,
        turn=turn.turn,
        input=message_text(turn.user_message.get("content"))[:MAX_STEP_TEXT],
        output=reply.content[:MAX_STEP_TEXT],
        reference=turn.reference[:MAX_STEP_TEXT] if turn.reference is not None else None,
        latency_ms=reply.latency_ms,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        created_at=now,
        updated_at=now,
    )


def record_step_parameters(
    step: ReplayStep,
    now: datetime,
    database: BaseDatabaseWrapper,
    *,
    test_id: uuid.UUID,
    finishes: bool,
) -> dict[str, Any]:
    """The parameters of :func:`record_step_sql` (``database`` only adapts the values);
    ``finishes``: the last turn's step, which also finishes the invocation."""
    _, fields = record_step_sql()
    return {
        **{
            f"value_{index}": field.get_db_prep_save(getattr(step, field.attname), database)
            for index, field in enumerate(fields)
        },
        "now": now,
        "invocation_id": step.invocation_id,
        "test_id": test_id,
        "running": TestInvocation.Status.RUNNING.value,
        "replayed": TestInvocation.Status.REPLAYED.value,
        "finishes": finishes,
        "events": 2 if finishes else 1,
    }


StepOutcome = Literal["stopped", "recorded", "finished"]


def step_events(
    invocation: TestInvocation, turn: PlannedTurn, total_turns: int, output: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run.step event of a step and the run.completed event of the last one (keyword
    arguments of the event senders, without their seq)."""
    common = {
        "test_id": invocation.test_id,
        "invocation_id": invocation.pk,
        "run_id": invocation.run_id,
        "total_turns": total_turns,
    }
    return (
        {**common, "event_type": "run.step", "turn": turn.turn, "output": output},
        {**common, "event_type": "run.completed", "status": TestInvocation.Status.REPLAYED},
    )


def _record_step(
    *,
    invocation: TestInvocation,
    turn: PlannedTurn,
    total_turns: int,
    reply: TargetReply,
    finishes: bool,
) -> StepOutcome:
    """Write one turn: "stopped" when the invocation stopped meanwhile (then nothing is written),
    "finished" when the step also finished it (the last turn, on PostgreSQL), else "recorded".

    The conditional UPDATE takes the invocation's row lock, so a concurrent stop either commits
    first (we write nothing) or waits for this step to commit.
    """
    now = timezone.now()
    step = build_step(invocation=invocation, turn=turn, reply=reply, now=now)
    step_event, completed_event = step_events(
        invocation, turn, total_turns, reply.content[:MAX_STEP_TEXT]
    )
    if connection.vendor == "postgresql":
        # One round trip in autocommit instead of four (BEGIN, UPDATE, INSERT, COMMIT) and the
        # seqs of its events: each wait is a GIL hand-off, and 32 replay threads share the GIL.
        sql, _ = record_step_sql()
        parameters = record_step_parameters(
            step, now, connection, test_id=invocation.test_id, finishes=finishes
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            row = cursor.fetchone()
        if row is None:
            return "stopped"
        seq = int(row[0])
        if not finishes:
            publish_numbered_on_commit(seq=seq, **step_event)
            return "recorded"
        publish_numbered_on_commit(seq=seq - 1, **step_event)
        publish_numbered_on_commit(seq=seq, **completed_event)
        return "finished"
    with transaction.atomic():
        moved = TestInvocation.objects.filter(
            pk=invocation.pk, status=TestInvocation.Status.RUNNING, stop_requested=False
        ).update(steps_count=F("steps_count") + 1, heartbeat_at=now, updated_at=now)
        if moved != 1:
            return "stopped"
        step.save(force_insert=True)
    # Outside a transaction (the worker) this sends at once: the step has committed.
    publish_on_commit(**step_event)
    return "recorded"


def _finish(invocation: TestInvocation, total_turns: int) -> None:
    # One statement: in autocommit it is its own transaction (no BEGIN and COMMIT round trips),
    # and publish_on_commit then sends at once, after it committed.
    finished = TestInvocation.objects.filter(
        pk=invocation.pk, status=TestInvocation.Status.RUNNING, stop_requested=False
    ).update(
        status=TestInvocation.Status.REPLAYED,
        heartbeat_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if finished == 1:
        publish_on_commit(
            test_id=invocation.test_id,
            event_type="run.completed",
            invocation_id=invocation.pk,
            run_id=invocation.run_id,
            status=TestInvocation.Status.REPLAYED,
            total_turns=total_turns,
        )


def fail_invocation(*, invocation_id: uuid.UUID | str, error: str) -> bool:
    """A running invocation fails for good: its run fails, the test may complete.

    Returns False when the invocation was no longer running (stopped, or reaped).
    """
    invocation = TestInvocation.objects.filter(pk=invocation_id).only("test_id", "run_id").first()
    if invocation is None:
        return False
    now = timezone.now()
    error = error[:MAX_ERROR_TEXT]
    with transaction.atomic():
        # Test lock first, like every service that moves the test's state, so locks never invert.
        test = test_state.lock_test(invocation.test_id)
        failed = TestInvocation.objects.filter(
            pk=invocation_id, status=TestInvocation.Status.RUNNING
        ).update(status=TestInvocation.Status.FAILED, error=error, ended_at=now, updated_at=now)
        if failed != 1:
            return False
        TestRun.objects.filter(
            pk=invocation.run_id,
            status__in=[TestRun.Status.CLAIMED, TestRun.Status.RUNNING],
        ).update(status=TestRun.Status.FAILED, updated_at=now)
        publish_on_commit(
            test_id=invocation.test_id,
            event_type="run.failed",
            invocation_id=invocation_id,
            run_id=invocation.run_id,
            error=error,
        )
        test_state.maybe_complete_test(test=test)
    return True


def replay_invocation(*, invocation_id: uuid.UUID | str) -> None:
    """Replay a ``created`` invocation turn by turn; see the module docstring.

    Never holds a transaction open during a model call. Stops before the next turn once the
    invocation is no longer running or a stop was requested (the stop service already moved the
    statuses and published the events): each step's conditional UPDATE is that check.
    """
    claimed = _claim(invocation_id)
    if claimed is None:
        logger.info("Invocation %s is missing or not created; nothing to replay", invocation_id)
        return
    invocation = claimed.invocation
    messages = [m for m in (claimed.messages or []) if isinstance(m, dict)]
    turns = plan_turns(messages)
    target: Target | None = None
    try:
        target = target_for(claimed.target)
        own_answers: dict[int, str] = {}
        outcome: StepOutcome = "recorded"
        # One heartbeat thread for the whole replay, not one per turn.
        with _heartbeat_while(invocation.pk):
            for turn in turns:
                # No separate "still running?" read: the claim has just seen the invocation
                # running, and every later turn follows a step whose conditional UPDATE saw it
                # running and not stopped (or the loop has returned).
                history = history_for(messages, turn, own_answers, claimed.replay_mode)
                lease_s, wait_s = slot_timing(target)
                with target_slot(target.key, lease_s=lease_s, wait_s=wait_s):
                    reply = target.complete(messages=history, reference=turn.reference)
                remember_answer(own_answers, turn, reply.content)
                outcome = _record_step(
                    invocation=invocation,
                    turn=turn,
                    total_turns=len(turns),
                    reply=reply,
                    finishes=turn is turns[-1],
                )
                if outcome == "stopped":
                    logger.info("Invocation %s stopped during turn %s", invocation.pk, turn.turn)
                    return
        if outcome != "finished":  # no turns, or SQLite: the finish is a statement of its own
            _finish(invocation, len(turns))
    except TargetError as error:
        fail_invocation(invocation_id=invocation.pk, error=str(error))
    except ValidationFailed as error:
        # A benchmark whose target JSON is malformed cannot be replayed; say why on the invocation.
        fail_invocation(invocation_id=invocation.pk, error=error.detail)
    except Exception as error:
        logger.exception("Replay of invocation %s crashed", invocation.pk)
        fail_invocation(
            invocation_id=invocation.pk, error=f"The replay failed unexpectedly: {error!r}"
        )
    finally:
        if target is not None:
            target.close()
