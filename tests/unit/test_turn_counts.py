"""TestTurnCount follows every write of replay steps, whoever makes it (migration 0007)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connection

from tests import factories
from tests.conftest import require_service
from tests_app.models import ReplayStep, TestInvocation, TestTurnCount

pytestmark = pytest.mark.django_db

Key = tuple[str, int, int]


def counted() -> tuple[Counter[Key], dict[Key, tuple[int | None, int | None]]]:
    turns: Counter[Key] = Counter()
    tokens: dict[Key, tuple[int | None, int | None]] = {}
    for row in TestTurnCount.objects.filter(turns__gt=0):
        key = (str(row.test_id), row.cycle, row.latency_ms)
        turns[key] = row.turns
        reported = row.reported_turns > 0
        tokens[key] = (
            row.prompt_tokens if reported else None,
            row.completion_tokens if reported else None,
        )
    return turns, tokens


def from_steps() -> tuple[Counter[Key], dict[Key, tuple[int | None, int | None]]]:
    turns: Counter[Key] = Counter()
    prompt: dict[Key, int | None] = {}
    completion: dict[Key, int | None] = {}
    for step in ReplayStep.objects.select_related("invocation__run"):
        key = (str(step.invocation.test_id), step.invocation.run.cycle, step.latency_ms)
        turns[key] += 1
        for sums, value in ((prompt, step.prompt_tokens), (completion, step.completion_tokens)):
            sums.setdefault(key, None)
            if value is not None:
                sums[key] = (sums[key] or 0) + value
    return turns, {key: (prompt[key], completion[key]) for key in turns}


def assert_consistent() -> None:
    turns, tokens = counted()
    expected_turns, expected_tokens = from_steps()
    assert turns == expected_turns
    assert tokens == expected_tokens


def invocation_in_cycle(cycle: int) -> TestInvocation:
    run = factories.TestRunFactory.create(cycle=cycle)
    return factories.TestInvocationFactory.create(run=run, test=run.test)


def test_counts_follow_inserts_updates_and_deletes() -> None:
    first = invocation_in_cycle(1)
    second = invocation_in_cycle(2)
    step = factories.ReplayStepFactory.create(
        invocation=first, turn=1, latency_ms=120, prompt_tokens=10, completion_tokens=3
    )
    factories.ReplayStepFactory.create(
        invocation=first, turn=2, latency_ms=120, prompt_tokens=None, completion_tokens=None
    )
    assert_consistent()
    turns, tokens = counted()
    assert turns[(str(first.test_id), 1, 120)] == 2
    assert tokens[(str(first.test_id), 1, 120)] == (10, 3)

    # In bulk, as the bench and imports write them.
    ReplayStep.objects.bulk_create(
        [
            ReplayStep(invocation=second, turn=turn, input="q", latency_ms=latency)
            for turn, latency in enumerate([5, 5, 7, 900], start=1)
        ]
    )
    assert_consistent()
    _, tokens = counted()
    # The reference target reports no tokens: the sums stay unknown, not zero.
    assert tokens[(str(second.test_id), 2, 5)] == (None, None)

    # A rewritten step: its old latency out, the new one in; tokens alone change too.
    ReplayStep.objects.filter(pk=step.pk).update(latency_ms=130, prompt_tokens=12)
    ReplayStep.objects.filter(pk=step.pk).update(completion_tokens=4)
    assert_consistent()

    ReplayStep.objects.filter(invocation=second, latency_ms=5).delete()
    assert_consistent()
    # Deleting a whole test takes its steps with it.
    first.test.delete()
    assert_consistent()
    assert counted()[0] == Counter(
        {(str(second.test_id), 2, 7): 1, (str(second.test_id), 2, 900): 1}
    )


def test_copy_is_counted(operator: Any) -> None:
    if connection.vendor != "postgresql":
        require_service("COPY is PostgreSQL only")
    invocation = invocation_in_cycle(1)
    columns = ["id", "created_at", "updated_at", "invocation_id", "turn", "input", "output"]
    columns += ["latency_ms", "prompt_tokens", "completion_tokens", "error"]
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(
            f"COPY tests_app_replaystep ({', '.join(columns)}) FROM STDIN"
        ) as copy,
    ):
        for turn in range(1, 51):
            copy.write_row(
                [
                    f"00000000-0000-0000-0000-{turn:012d}",
                    "2026-03-01T00:00:00Z",
                    "2026-03-01T00:00:00Z",
                    str(invocation.pk),
                    turn,
                    "q",
                    "a",
                    turn % 5,
                    10,
                    2,
                    "",
                ]
            )
    assert_consistent()
    turns, tokens = counted()
    assert turns[(str(invocation.test_id), 1, 0)] == 10
    assert tokens[(str(invocation.test_id), 1, 0)] == (100, 20)
