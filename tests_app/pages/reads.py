"""Page-only reads that the API does not return: one invocation's transcript and its grades.

Everything the API's ``get`` already returns comes from the shared detail selector; these add the
turn-by-turn view, which the API leaves to exports.
"""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from tests_app.models import Grade, ReplayStep, RunAll, TestInvocation

# A transcript longer than this is cut (the export has all of it); keeps the page bounded.
MAX_TURNS_SHOWN = 200
MAX_GRADES_SHOWN = 50


@dataclass
class TranscriptTurn:
    turn: int
    input: str
    output: str
    reference: str | None
    error: str
    latency_ms: int
    diff_reference: SafeString
    diff_output: SafeString
    matches: bool


def word_diff(reference: str, output: str) -> tuple[SafeString, SafeString]:
    """Both texts as escaped HTML with ``<del>``/``<ins>`` around the words that differ."""
    ref_words, out_words = reference.split(" "), output.split(" ")
    left: list[str] = []
    right: list[str] = []
    matcher = difflib.SequenceMatcher(a=ref_words, b=out_words, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        ref_part = escape(" ".join(ref_words[a0:a1]))
        out_part = escape(" ".join(out_words[b0:b1]))
        if op == "equal":
            left.append(ref_part)
            right.append(out_part)
            continue
        if a1 > a0:
            left.append(f"<del>{ref_part}</del>")
        if b1 > b0:
            right.append(f"<ins>{out_part}</ins>")
    # Escaped word by word above; the only markup added is del/ins.
    return mark_safe(" ".join(left)), mark_safe(" ".join(right))  # noqa: S308


def transcript(*, invocation: TestInvocation) -> list[TranscriptTurn]:
    steps = ReplayStep.objects.filter(invocation=invocation).order_by("turn")[:MAX_TURNS_SHOWN]
    turns = []
    for step in steps:
        reference = step.reference
        if reference is None:
            left, right = mark_safe(""), escape(step.output)
        else:
            left, right = word_diff(reference, step.output)
        turns.append(
            TranscriptTurn(
                turn=step.turn,
                input=step.input,
                output=step.output,
                reference=reference,
                error=step.error,
                latency_ms=step.latency_ms,
                diff_reference=left,
                diff_output=right,
                matches=reference is not None and reference.strip() == step.output.strip(),
            )
        )
    return turns


def grades(*, invocation: TestInvocation) -> list[Grade]:
    return list(
        Grade.objects.filter(invocation=invocation)
        .select_related("actor")
        .order_by("-created_at")[:MAX_GRADES_SHOWN]
    )


def invocation_of_test(*, test_id: Any, invocation_id: Any) -> TestInvocation | None:
    """The invocation, only if it belongs to this (already visibility-checked) test."""
    try:
        invocation_uuid = uuid.UUID(str(invocation_id))
    except ValueError:
        return None
    return (
        TestInvocation.objects.select_related("run", "run__entry", "actor")
        .filter(pk=invocation_uuid, test_id=test_id)
        .first()
    )


def newest_invocation(*, test_id: Any) -> TestInvocation | None:
    return (
        TestInvocation.objects.select_related("run", "run__entry", "actor")
        .filter(test_id=test_id)
        .order_by("-created_at")
        .first()
    )


OPEN_STATUSES = (
    TestInvocation.Status.CREATED,
    TestInvocation.Status.RUNNING,
    TestInvocation.Status.REPLAYED,
)
# The open invocations listed on a test page; more is said as a count.
MAX_OPEN_SHOWN = 10


def open_invocations(*, test_id: Any) -> tuple[list[TestInvocation], bool]:
    """The test's invocations not yet ended, failed or stopped, oldest first (the one waiting
    longest is the first to deal with), and whether there are more than shown."""
    rows = list(
        TestInvocation.objects.select_related("run", "run__entry", "actor")
        .filter(test_id=test_id, status__in=OPEN_STATUSES)
        .order_by("created_at")[: MAX_OPEN_SHOWN + 1]
    )
    return rows[:MAX_OPEN_SHOWN], len(rows) > MAX_OPEN_SHOWN


def newest_open_invocation(*, test_id: Any) -> TestInvocation | None:
    """What the page's Stop acts on: stopping any open invocation stops the whole test."""
    return (
        TestInvocation.objects.filter(test_id=test_id, status__in=OPEN_STATUSES)
        .order_by("-created_at")
        .first()
    )


def newest_run_all(*, test_id: Any) -> RunAll | None:
    """The test's run-all: the active one, else the last one (the page says how it ended)."""
    return (
        RunAll.objects.select_related("started_by")
        .filter(test_id=test_id)
        .order_by("-created_at")
        .first()
    )
