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
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tests_app.errors import ValidationFailed
from tests_app.models import Benchmark, ReplayStep, TestInvocation, TestRun
from tests_app.realtime.events import publish_on_commit
from tests_app.services import test_state
from tests_app.targets import Message, Target, TargetError, TargetReply, message_text, target_for
from tests_app.targets.concurrency import Lease, target_slot

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


class Heartbeat:
    """Keeps ``heartbeat_at`` of a running invocation fresh, and the lease of the target slot
    its model call holds, while the replay runs: a call with retries may outlast the reaper's
    timeout. The thread dies with the process, so a killed worker's invocation goes stale and
    its slot expires."""

    def __init__(self, invocation_id: uuid.UUID) -> None:
        self.invocation_id = invocation_id
        self.lease: Lease | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()

    def _beat(self) -> None:
        interval = max(0.2, settings.REPLAY_HEARTBEAT_TIMEOUT / 4)
        try:
            while not self._done.wait(interval):
                try:
                    TestInvocation.objects.filter(
                        pk=self.invocation_id, status=TestInvocation.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
                    if self.lease is not None:
                        self.lease.renew()
                except Exception:
                    logger.exception("Heartbeat of invocation %s failed", self.invocation_id)
                finally:
                    connection.close()
        finally:
            connection.close()


@dataclass(frozen=True)
class ClaimedReplay:
    """What a replay needs, read when it was claimed."""

    invocation: TestInvocation
    messages: list[Message]
    target: Any
    replay_mode: str


def _claim(invocation_id: uuid.UUID | str) -> ClaimedReplay | None:
    """created → running for the invocation, then claimed → running for its run.

    Two statements, each its own transaction: the invocation's conditional UPDATE is the claim
    (a second delivery matches nothing), and a run left ``claimed`` by a crash in between is
    ``claimed or running`` to every reader that cares (the reaper, the counters)."""
    now = timezone.now()
    claimed = TestInvocation.objects.filter(
        pk=invocation_id, status=TestInvocation.Status.CREATED
    ).update(status=TestInvocation.Status.RUNNING, started_at=now, heartbeat_at=now, updated_at=now)
    if claimed != 1:
        return None
    # Plain values, not five models: the replay needs these and nothing else.
    row = TestInvocation.objects.values(
        "test_id",
        "run_id",
        "run__entry__messages",
        "run__entry__turns",
        "test__benchmark__target",
        "test__benchmark__replay_mode",
    ).get(pk=invocation_id)
    TestRun.objects.filter(pk=row["run_id"], status=TestRun.Status.CLAIMED).update(
        status=TestRun.Status.RUNNING, updated_at=now
    )
    invocation = TestInvocation(id=invocation_id, test_id=row["test_id"], run_id=row["run_id"])
    publish_on_commit(
        test_id=invocation.test_id,
        event_type="run.started",
        invocation_id=invocation.pk,
        run_id=invocation.run_id,
        total_turns=row["run__entry__turns"],
    )
    return ClaimedReplay(
        invocation=invocation,
        messages=[m for m in row["run__entry__messages"] or [] if isinstance(m, dict)],
        target=row["test__benchmark__target"],
        replay_mode=row["test__benchmark__replay_mode"],
    )


def _record_step(
    *, invocation: TestInvocation, turn: PlannedTurn, total_turns: int, reply: TargetReply
) -> bool:
    """Write one turn, and finish the invocation (running → replayed) with the last one. False
    when the invocation stopped meanwhile: then nothing is written.

    The conditional UPDATE is the stop check: a stop that commits before it leaves nothing to
    write. The step row follows in a statement of its own; a stop in between finds a turn whose
    answer had already come back, and keeps it.
    """
    now = timezone.now()
    finishes = turn.turn == total_turns
    output = reply.content[:MAX_STEP_TEXT]
    finished = {"status": TestInvocation.Status.REPLAYED} if finishes else {}
    moved = TestInvocation.objects.filter(
        pk=invocation.pk, status=TestInvocation.Status.RUNNING, stop_requested=False
    ).update(steps_count=turn.turn, heartbeat_at=now, updated_at=now, **finished)
    if moved != 1:
        return False
    ReplayStep.objects.create(
        invocation_id=invocation.pk,
        turn=turn.turn,
        input=message_text(turn.user_message.get("content"))[:MAX_STEP_TEXT],
        output=output,
        reference=turn.reference[:MAX_STEP_TEXT] if turn.reference is not None else None,
        latency_ms=reply.latency_ms,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        created_at=now,
        updated_at=now,
    )
    event = partial(
        publish_on_commit,
        test_id=invocation.test_id,
        invocation_id=invocation.pk,
        run_id=invocation.run_id,
        total_turns=total_turns,
    )
    event(event_type="run.step", turn=turn.turn, output=output)
    if finishes:
        event(event_type="run.completed", status=TestInvocation.Status.REPLAYED)
    return True


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


def _call(
    target: Target, history: list[Message], turn: PlannedTurn, beat: Heartbeat
) -> TargetReply:
    """One model call inside a target slot, with no database connection held meanwhile."""
    _release_connection()
    wait_s = max(60.0, target.max_call_seconds * 2)
    with target_slot(target.key, wait_s=wait_s) as lease:
        beat.lease = lease
        try:
            return target.complete(messages=history, reference=turn.reference)
        finally:
            beat.lease = None


def replay_invocation(*, invocation_id: uuid.UUID | str) -> None:
    """Replay a ``created`` invocation turn by turn; see the module docstring.

    Stops before the next turn once the invocation is no longer running or a stop was requested
    (the stop service already moved the statuses and published the events): each step's
    conditional UPDATE is that check.
    """
    claimed = _claim(invocation_id)
    if claimed is None:
        logger.info("Invocation %s is missing or not created; nothing to replay", invocation_id)
        return
    invocation = claimed.invocation
    turns = plan_turns(claimed.messages)
    try:
        target = target_for(claimed.target)
        own_answers: dict[int, str] = {}
        with Heartbeat(invocation.pk) as beat:
            for turn in turns:
                history = history_for(claimed.messages, turn, own_answers, claimed.replay_mode)
                reply = _call(target, history, turn, beat)
                remember_answer(own_answers, turn, reply.content)
                if not _record_step(
                    invocation=invocation, turn=turn, total_turns=len(turns), reply=reply
                ):
                    logger.info("Invocation %s stopped during turn %s", invocation.pk, turn.turn)
                    return
        if not turns:
            _finish_without_turns(invocation)
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
