"""Replay one invocation against its benchmark's target (DESIGN §4).

Called by the ``replay_invocation`` task. Safe to deliver twice: the work is claimed with a
conditional UPDATE (created → running), and a second delivery finds nothing to claim.

Turn semantics: system and tool messages (and assistant messages that only carry tool calls) are
context; each user message is one turn, sent with the history so far. The reference of a turn is
the last recorded assistant text before the next user message. In ``autoregressive`` mode the
model's own answer stands in for that recorded text in the history of later turns; in
``teacher_forced`` mode the recorded assistant messages are sent as they were.

No transaction is open during a model call, and no database connection is held either: with
hundreds of replays waiting on a model at once, connections go back to the pool between turns.
A write that numbers the test's events waits its turn in the process (:func:`_test_row_lock`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Field
from django.utils import timezone

from tests_app.errors import ValidationFailed
from tests_app.models import (
    Benchmark,
    BenchmarkEntry,
    ReplayStep,
    Test,
    TestInvocation,
    TestRun,
)
from tests_app.outages import INFRASTRUCTURE_ERRORS, until_it_works
from tests_app.realtime.events import publish_on_commit
from tests_app.services import test_state
from tests_app.services.heartbeats import Beat, heartbeats
from tests_app.targets import Message, Target, TargetError, TargetReply, message_text, target_for
from tests_app.targets.concurrency import target_slot

logger = logging.getLogger(__name__)

# Text columns stay readable in lists and exports; the model's full answer is rarely longer.
MAX_STEP_TEXT = 100_000
MAX_ERROR_TEXT = 4_000

# The claim and each step bump the test's event counter, so PostgreSQL runs a test's writes one
# at a time on its row whatever we do. Inside a process they queue on a lock instead: a thread
# waiting there holds neither a pooled connection nor a backend, while one waiting on the row lock
# holds both, and hundreds of replays of one test would all wait that way. The row lock still
# orders the writes of different processes.
_TEST_ROW_LOCKS = tuple(threading.Lock() for _ in range(64))
# A claim learns its test only as it runs: the claims of a process queue on one lock.
_CLAIM_LOCK = threading.Lock()


def _test_row_lock(test_id: uuid.UUID) -> threading.Lock:
    """This process's lock for the writes that bump ``test_id``'s row (tests share a few)."""
    return _TEST_ROW_LOCKS[hash(test_id) % len(_TEST_ROW_LOCKS)]


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


@dataclass(frozen=True)
class ClaimedReplay:
    """What a replay needs, read when it was claimed."""

    invocation: TestInvocation
    messages: list[Message]
    target: Any
    replay_mode: str


@cache
def _claim_statement() -> str:
    """PostgreSQL's claim, one statement: the invocation created → running and its run claimed →
    running, the seq of run.started taken (the test row locked first, as every service that
    moves a test's state locks it), and what the replay needs read back.

    Kept beside the ORM's claim for the same reason as :func:`_step_statement`."""
    quote = connection.ops.quote_name
    invocation_table = quote(TestInvocation._meta.db_table)
    run_table = quote(TestRun._meta.db_table)
    test_table = quote(Test._meta.db_table)
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
            RETURNING invocation.run_id, invocation.test_id, invocation.run_all_id, seq.event_seq
        ), moved AS (
            UPDATE {run_table} AS run SET status = %(running)s, updated_at = %(now)s
            FROM claimed
            WHERE run.id = claimed.run_id AND run.status = %(claimed)s
        )
        SELECT claimed.test_id, claimed.run_id, claimed.run_all_id, entry.messages, entry.turns,
            test.target_snapshot, benchmark.replay_mode, claimed.event_seq
        FROM claimed
        JOIN {run_table} AS run ON run.id = claimed.run_id
        JOIN {quote(BenchmarkEntry._meta.db_table)} AS entry ON entry.id = run.entry_id
        JOIN {test_table} AS test ON test.id = claimed.test_id
        JOIN {quote(Benchmark._meta.db_table)} AS benchmark ON benchmark.id = test.benchmark_id
    """  # noqa: S608


def _json(value: Any) -> Any:
    # Django reads jsonb as text and decodes it in the field; a plain cursor hands over the text.
    return json.loads(value) if isinstance(value, str) else value


def _claim(invocation_id: uuid.UUID | str) -> ClaimedReplay | None:
    """created → running for the invocation and claimed → running for its run; None when it is
    not ``created`` (a second delivery, a stop that came first, an unknown id)."""
    now = timezone.now()
    seq: int | None = None
    if connection.vendor == "postgresql":
        with _CLAIM_LOCK, connection.cursor() as cursor:
            cursor.execute(
                _claim_statement(),
                {
                    "invocation_id": invocation_id,
                    "now": now,
                    "created": TestInvocation.Status.CREATED.value,
                    "running": TestInvocation.Status.RUNNING.value,
                    "claimed": TestRun.Status.CLAIMED.value,
                },
            )
            found = cursor.fetchone()
        if found is None:
            return None
        test_id, run_id, run_all_id, messages, turns, target, replay_mode, seq = found
        messages, target = _json(messages), _json(target)
    else:
        with transaction.atomic():
            claimed = TestInvocation.objects.filter(
                pk=invocation_id, status=TestInvocation.Status.CREATED
            ).update(
                status=TestInvocation.Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
            )
            if claimed != 1:
                return None
            test_id, run_id, run_all_id, messages, turns, target, replay_mode = (
                TestInvocation.objects.values_list(
                    "test_id",
                    "run_id",
                    "run_all_id",
                    "run__entry__messages",
                    "run__entry__turns",
                    "test__target_snapshot",
                    "test__benchmark__replay_mode",
                ).get(pk=invocation_id)
            )
            TestRun.objects.filter(pk=run_id, status=TestRun.Status.CLAIMED).update(
                status=TestRun.Status.RUNNING, updated_at=now
            )
    invocation = TestInvocation(
        id=uuid.UUID(str(invocation_id)), test_id=test_id, run_id=run_id, run_all_id=run_all_id
    )
    publish_on_commit(
        test_id=test_id,
        event_type="run.started",
        invocation_id=invocation.pk,
        run_id=run_id,
        seq=seq,
        total_turns=turns,
    )
    return ClaimedReplay(
        invocation=invocation,
        messages=[m for m in messages or [] if isinstance(m, dict)],
        target=target,
        replay_mode=replay_mode,
    )


@cache
def _step_statement() -> tuple[str, list[Field[Any, Any]]]:
    """PostgreSQL's step, one statement: bump the test's event seq (its row locked first, as
    every service that moves a test's state locks it), move the invocation if it is running and
    not stopped (finishing it on the last turn) and insert the step, returning the last seq.

    Kept beside the ORM's steps because a replay's CPU is mostly its per-turn statements: one
    round trip and one commit instead of several (bench/README.md, replay CPU per turn).
    """
    fields = [f for f in ReplayStep._meta.concrete_fields if f.attname != "invocation_id"]
    quote = connection.ops.quote_name
    invocation_table = quote(TestInvocation._meta.db_table)
    # A concrete field always has a column; the stubs type it for any field.
    columns = ", ".join(quote(cast(str, field.column)) for field in fields)
    values = ", ".join(f"%(value_{index})s" for index in range(len(fields)))
    sql = f"""
        WITH seq AS (
            UPDATE {quote(Test._meta.db_table)} SET event_seq = event_seq + %(events)s
            WHERE id = %(test_id)s AND EXISTS (
                SELECT 1 FROM {invocation_table}
                WHERE id = %(invocation_id)s AND status = %(running)s AND NOT stop_requested
            )
            RETURNING event_seq
        ), moved AS (
            UPDATE {invocation_table} AS invocation SET
                steps_count = %(turn)s, heartbeat_at = %(now)s, updated_at = %(now)s,
                status = CASE WHEN %(finishes)s THEN %(replayed)s ELSE invocation.status END
            FROM seq
            WHERE invocation.id = %(invocation_id)s AND invocation.status = %(running)s
                AND NOT invocation.stop_requested
            RETURNING invocation.id, seq.event_seq
        ), step AS (
            INSERT INTO {quote(ReplayStep._meta.db_table)} ({columns}, "invocation_id")
            SELECT {values}, moved.id FROM moved
        )
        SELECT event_seq FROM moved
    """  # noqa: S608
    return sql, fields


def _record_step(
    *, invocation: TestInvocation, turn: PlannedTurn, total_turns: int, reply: TargetReply
) -> bool:
    """Write one turn, and finish the invocation (running → replayed) with the last one. False
    when the invocation stopped meanwhile: then nothing is written.

    The conditional UPDATE is the stop check and takes the invocation's row lock, so a
    concurrent stop either commits first (nothing is written) or waits for this step.
    """
    now = timezone.now()
    finishes = turn.turn == total_turns
    step = ReplayStep(
        invocation_id=invocation.pk,
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
    try:
        with _test_row_lock(invocation.test_id):
            seqs = _write_step(step, invocation=invocation, finishes=finishes)
    except IntegrityError:
        # An earlier attempt committed but its answer was lost with the connection: the step
        # is there, and so is the update that came with it.
        if not ReplayStep.objects.filter(invocation_id=invocation.pk, turn=turn.turn).exists():
            raise
        seqs = (None, None)
    if seqs is None:
        return False
    event = partial(
        publish_on_commit,
        test_id=invocation.test_id,
        invocation_id=invocation.pk,
        run_id=invocation.run_id,
        total_turns=total_turns,
    )
    event(event_type="run.step", seq=seqs[0], turn=step.turn, output=step.output)
    if finishes:
        event(event_type="run.completed", seq=seqs[1], status=TestInvocation.Status.REPLAYED)
    return True


def _write_step(
    step: ReplayStep, *, invocation: TestInvocation, finishes: bool
) -> tuple[int | None, int | None] | None:
    """The writes of :func:`_record_step`; None when the invocation was no longer running, else
    the seqs its events took with the data (PostgreSQL; else they take theirs on commit)."""
    if connection.vendor != "postgresql":
        finished = {"status": TestInvocation.Status.REPLAYED} if finishes else {}
        with transaction.atomic():
            moved = TestInvocation.objects.filter(
                pk=invocation.pk, status=TestInvocation.Status.RUNNING, stop_requested=False
            ).update(
                steps_count=step.turn,
                heartbeat_at=step.created_at,
                updated_at=step.created_at,
                **finished,
            )
            if moved != 1:
                return None
            step.save(force_insert=True)
        return None, None
    sql, fields = _step_statement()
    parameters = {
        **{
            f"value_{index}": field.get_db_prep_save(getattr(step, field.attname), connection)
            for index, field in enumerate(fields)
        },
        "events": 2 if finishes else 1,
        "test_id": invocation.test_id,
        "invocation_id": invocation.pk,
        "running": TestInvocation.Status.RUNNING.value,
        "replayed": TestInvocation.Status.REPLAYED.value,
        "turn": step.turn,
        "now": step.created_at,
        "finishes": finishes,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        row = cursor.fetchone()
    if row is None:
        return None
    last = int(row[0])
    return (last - 1, last) if finishes else (last, None)


def _finish_without_turns(invocation: TestInvocation) -> None:
    """An entry without user turns: nothing to call, the invocation is replayed at once."""
    with transaction.atomic():
        finished = TestInvocation.objects.filter(
            pk=invocation.pk, status=TestInvocation.Status.RUNNING, stop_requested=False
        ).update(status=TestInvocation.Status.REPLAYED, updated_at=timezone.now())
        if finished == 1:
            publish_on_commit(
                test_id=invocation.test_id,
                event_type="run.completed",
                invocation_id=invocation.pk,
                run_id=invocation.run_id,
                status=TestInvocation.Status.REPLAYED,
                total_turns=0,
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


def _release_connection() -> None:
    """Give this thread's connection back to the pool while the model answers. Only a pooled
    connection: elsewhere it is the thread's own, and opening it again costs more than it saves."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()


def _call(target: Target, history: list[Message], turn: PlannedTurn, beat: Beat) -> TargetReply:
    """One model call inside a target slot, with no database connection held meanwhile."""
    call_id = f"{beat.invocation_id}/{turn.turn}"
    _release_connection()
    wait_s = max(60.0, target.max_call_seconds * 2)
    with target_slot(target.key, wait_s=wait_s) as lease:
        beat.lease = lease
        try:
            return target.complete(messages=history, reference=turn.reference, call_id=call_id)
        finally:
            beat.lease = None


def replay_invocation(*, invocation_id: uuid.UUID | str) -> TestInvocation | None:
    """Replay a ``created`` invocation turn by turn; see the module docstring. Returns the
    invocation it claimed (its ids and run-all), None when there was nothing to claim.

    Stops before the next turn once the invocation is no longer running or a stop was requested
    (the stop service already moved the statuses and published the events): each step's
    conditional UPDATE is that check. A database or Redis error is retried where it happens
    (tests_app.outages), so a passing fault neither fails the run nor calls the model again for a
    turn it answered; one that lasts past the heartbeat's timeout propagates, and the sweep gives
    the run back.
    """
    claimed = until_it_works(lambda: _claim(invocation_id), what="The claim of a replay")
    if claimed is None:
        logger.info("Invocation %s is missing or not created; nothing to replay", invocation_id)
        return None
    invocation = claimed.invocation
    turns = plan_turns(claimed.messages)
    try:
        target = target_for(claimed.target)
        own_answers: dict[int, str] = {}
        with heartbeats.beating(invocation.pk) as beat:
            for turn in turns:
                history = history_for(claimed.messages, turn, own_answers, claimed.replay_mode)
                reply = _call(target, history, turn, beat)
                remember_answer(own_answers, turn, reply.content)
                recorded = until_it_works(
                    partial(
                        _record_step,
                        invocation=invocation,
                        turn=turn,
                        total_turns=len(turns),
                        reply=reply,
                    ),
                    what=f"Turn {turn.turn} of invocation {invocation.pk}",
                )
                if not recorded:
                    logger.info("Invocation %s stopped during turn %s", invocation.pk, turn.turn)
                    return invocation
        if not turns:
            until_it_works(partial(_finish_without_turns, invocation), what="A finish")
    except TargetError as error:
        _fail(invocation.pk, str(error))
    except ValidationFailed as error:
        # A benchmark whose target JSON is malformed cannot be replayed; say why on the invocation.
        _fail(invocation.pk, error.detail)
    except INFRASTRUCTURE_ERRORS:
        raise  # an outage longer than the retries: the task is retried, the sweep reaps
    except Exception as error:
        logger.exception("Replay of invocation %s crashed", invocation.pk)
        _fail(invocation.pk, f"The replay failed unexpectedly: {error!r}")
    return invocation


def _fail(invocation_id: uuid.UUID, error: str) -> None:
    until_it_works(
        partial(fail_invocation, invocation_id=invocation_id, error=error),
        what=f"The failure of invocation {invocation_id}",
    )
