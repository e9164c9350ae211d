"""One invocation of a visible test: its status, and once its replay is over, its steps.

The MCP tool ``wait_for_invocation`` polls the status (one small query after the visibility
check) and reads the steps once, when the wait is over.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests_app.errors import NotFound
from tests_app.models import ReplayStep, TestInvocation
from tests_app.selectors.scope import get_visible_test

# Like the transcript page: a longer replay is cut here (its export has every turn).
MAX_STEPS = 200

# Statuses after which the replay writes nothing more.
SETTLED_STATUSES = frozenset(
    {
        TestInvocation.Status.REPLAYED,
        TestInvocation.Status.ENDED,
        TestInvocation.Status.FAILED,
        TestInvocation.Status.STOPPED,
    }
)


def get_visible_invocation(
    *, user: Any, test_id: uuid.UUID | str, invocation_id: uuid.UUID | str
) -> TestInvocation:
    """The invocation, if it belongs to a test the caller may see; NotFound otherwise."""
    test = get_visible_test(user=user, test_id=test_id)
    invocation = (
        TestInvocation.objects.only(
            "id", "test_id", "run_id", "status", "client", "error", "steps_count"
        )
        .filter(pk=invocation_id, test_id=test.pk)
        .first()
    )
    if invocation is None:
        raise NotFound("No invocation with that id in this test is visible to you.")
    return invocation


def invocation_steps(*, invocation: TestInvocation) -> list[dict[str, Any]]:
    """The replayed turns in order, at most ``MAX_STEPS``."""
    steps = ReplayStep.objects.filter(invocation=invocation).order_by("turn")[:MAX_STEPS]
    return [
        {
            "turn": step.turn,
            "input": step.input,
            "output": step.output,
            "reference": step.reference,
            "error": step.error,
            "latency_ms": step.latency_ms,
        }
        for step in steps
    ]
