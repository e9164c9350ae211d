"""Graders: the LLM judge (when JUDGE_MODEL is configured) and the offline reference grader.

Both take a :class:`Transcript` (the rubric, the eval's description and the replayed turns with
their references) and return a :class:`Verdict`; they raise :class:`JudgeError` when no grade can
be given, and the grading service records that on the grade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings


def default_source() -> str:
    """The Grade source that ``end`` with ``grade=true`` will produce: ``ai`` only with a judge."""
    return "ai" if settings.JUDGE_MODEL else "reference"


class JudgeError(Exception):
    """No grade could be given (the judge failed, or there is nothing to compare).

    ``kind`` names what happened, for the failed grade's provenance: ``timeout``,
    ``unreachable``, ``refused``, ``too_long``, ``unusable``, ``malformed`` or ``nothing_to_grade``.
    """

    def __init__(self, sentence: str, *, kind: str = "nothing_to_grade") -> None:
        super().__init__(sentence)
        self.kind = kind


@dataclass(frozen=True)
class TranscriptTurn:
    turn: int
    input: str
    output: str
    reference: str | None
    error: str = ""


@dataclass(frozen=True)
class Transcript:
    rubric_name: str
    rubric_description: str
    criteria: list[dict[str, Any]]
    pass_threshold: float
    judge_instructions: str
    eval_name: str
    eval_description: str
    turns: list[TranscriptTurn]

    def rubric_snapshot(self) -> dict[str, Any]:
        return {
            "name": self.rubric_name,
            "description": self.rubric_description,
            "criteria": self.criteria,
            "pass_threshold": self.pass_threshold,
            "judge_instructions": self.judge_instructions,
        }


@dataclass(frozen=True)
class Verdict:
    source: str
    score: float
    passed: bool
    feedback: str
    criteria_scores: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    def grade(self, transcript: Transcript) -> Verdict: ...


def judge_for_settings() -> Judge:
    """The LLM judge when JUDGE_MODEL is set, else the offline reference grader."""
    from tests_app.judges.llm import LlmJudge
    from tests_app.judges.reference import ReferenceGrader

    if settings.JUDGE_MODEL:
        return LlmJudge.from_settings()
    return ReferenceGrader()
