"""The offline grader: compares each replayed answer with its recorded reference.

It is a text comparison, not an AI, and says so in the grade's source, provenance and feedback.
Each turn scores the mean of two similarities of the normalized texts (lowercase, punctuation
dropped, whitespace collapsed): token F1 (word overlap, order-free) and difflib's ratio (order-
aware). The grade is the mean over the turns that have a reference; a turn that errored scores 0.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any

from tests_app.judges import JudgeError, Transcript, Verdict

_WORD = re.compile(r"\w+", re.UNICODE)
METHOD = "mean of normalized token F1 and difflib ratio per turn"


def normalize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def token_f1(output: str, reference: str) -> float:
    produced, expected = normalize(output), normalize(reference)
    if not produced and not expected:
        return 1.0
    if not produced or not expected:
        return 0.0
    overlap = sum((Counter(produced) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(produced), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def similarity(output: str, reference: str) -> float:
    ratio = difflib.SequenceMatcher(
        None, " ".join(normalize(output)), " ".join(normalize(reference)), autojunk=False
    ).ratio()
    return round((token_f1(output, reference) + ratio) / 2, 4)


class ReferenceGrader:
    source = "reference"

    def grade(self, transcript: Transcript) -> Verdict:
        per_turn: list[dict[str, Any]] = []
        for turn in transcript.turns:
            if turn.reference is None:
                continue
            score = 0.0 if turn.error else similarity(turn.output, turn.reference)
            per_turn.append({"turn": turn.turn, "score": score})
        if not per_turn:
            raise JudgeError(
                "Offline reference comparison (not an AI judge): no turn of this replay has a "
                "recorded reference to compare with."
            )
        score = round(sum(item["score"] for item in per_turn) / len(per_turn), 4)
        passed = score >= transcript.pass_threshold
        lowest = min(per_turn, key=lambda item: item["score"])
        feedback = (
            "Offline reference comparison (not an AI judge): mean similarity "
            f"{score:.2f} to the recorded answers over {len(per_turn)} turn(s); "
            f"lowest turn {lowest['turn']} ({lowest['score']:.2f}); "
            f"{'passed' if passed else 'did not pass'} the threshold "
            f"{transcript.pass_threshold:.2f}. The rubric's criteria were not judged."
        )
        return Verdict(
            source=self.source,
            score=score,
            passed=passed,
            feedback=feedback,
            criteria_scores=[
                {
                    "name": "reference_similarity",
                    "weight": 1,
                    "score": score,
                    "feedback": "Text similarity to the recorded answers, computed offline.",
                }
            ],
            provenance={
                "grader": "reference",
                "is_ai": False,
                "method": METHOD,
                "turns": per_turn,
                "pass_threshold": transcript.pass_threshold,
                "rubric": transcript.rubric_snapshot(),
            },
        )
