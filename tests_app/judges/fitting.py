"""The judge's prompt, fitted into the judge model's context (docs/judges.md).

The request has four parts, each with a budget, out of ``context_tokens``:

* the system prompt, counted as it is;
* the answer: ``answer_tokens`` (the request's ``max_tokens``), reserved twice, because a
  malformed answer is sent back beside the next one;
* the eval and rubric (descriptions, criteria, instructions): at most a quarter of the rest;
* the transcript: all that is left, shared fairly between its texts. A text shorter than the fair
  share stays whole; a longer one is cut to it, keeping its start and its end around a marker that
  says how much was left out. When even a short share per text does not fit, the last turns are
  left out and the prompt says so.

Tokens are estimated from characters: no tokenizer of an arbitrary judge model is at hand, and
``CHARS_PER_TOKEN`` is on the low side of English text (about 4 with the usual vocabularies), so
the estimate errs towards a shorter request. What was shortened goes to the grade's provenance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tests_app.judges import JudgeError, Transcript, TranscriptTurn

CHARS_PER_TOKEN = 3.0
# The retry's note ("Your answer is unusable: ...") and the chat template's tokens per message.
RETRY_NOTE_TOKENS = 64
MESSAGE_OVERHEAD_TOKENS = 32
RUBRIC_SHARE = 0.25
# Below this many characters a text says too little to judge: leave out turns instead.
MIN_CHARS_PER_TEXT = 200
# Room for less than this a text is hardly more than its marker: no grade is worth asking for.
LEAST_CHARS_PER_TEXT = 20
MAX_ERROR_CHARS = 300
# Provenance lists at most this many shortened texts (and counts all of them).
MAX_SHORTENED_LISTED = 50
TRANSCRIPT_HEADING = (
    "# Transcript (each turn: the user's message, the model's answer, the reference)"
)


@dataclass(frozen=True)
class Budget:
    context_tokens: int
    answer_tokens: int
    system_prompt: str
    chars_per_token: float = CHARS_PER_TOKEN

    @property
    def prompt_chars(self) -> int:
        """Characters left for the user message once the other parts are reserved."""
        tokens = (
            self.context_tokens
            - 2 * self.answer_tokens
            - RETRY_NOTE_TOKENS
            - 2 * MESSAGE_OVERHEAD_TOKENS
        )
        return int(tokens * self.chars_per_token) - len(self.system_prompt)


@dataclass
class FittedPrompt:
    text: str
    budget: Budget
    rubric_chars: int
    transcript_chars: int
    turns_left_out: int = 0
    shortened: list[dict[str, Any]] = field(default_factory=list)

    @property
    def estimated_tokens(self) -> int:
        """The request's estimated prompt tokens (system and user messages)."""
        chars = len(self.budget.system_prompt) + len(self.text)
        return math.ceil(chars / self.budget.chars_per_token) + 2 * MESSAGE_OVERHEAD_TOKENS

    def provenance(self) -> dict[str, Any]:
        return {
            "context_tokens": self.budget.context_tokens,
            "answer_tokens": self.budget.answer_tokens,
            "chars_per_token": self.budget.chars_per_token,
            "budget_chars": {"rubric": self.rubric_chars, "transcript": self.transcript_chars},
            "estimated_prompt_tokens": self.estimated_tokens,
            "texts_shortened": len(self.shortened),
            "shortened": self.shortened[:MAX_SHORTENED_LISTED],
            "turns_left_out": self.turns_left_out,
        }


def fair_share(lengths: list[int], budget: int) -> int | None:
    """The largest cap such that the texts, each cut to it, fit in ``budget`` characters; None
    when they fit whole."""
    if sum(lengths) <= budget:
        return None
    remaining = max(0, budget)
    ordered = sorted(lengths)
    for index, length in enumerate(ordered):
        share = remaining // (len(ordered) - index)
        if length > share:
            return share
        remaining -= length
    return None  # unreachable: the texts did not fit whole


def shorten(text: str, limit: int) -> str:
    """``text`` in at most about ``limit`` characters: its start and end around a marker."""
    if len(text) <= limit:
        return text
    marker = f" [... {len(text):,} characters left out ...] "
    keep = max(0, limit - len(marker))
    marker = f" [... {len(text) - keep:,} characters left out ...] "
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else "")


class _Texts:
    """Texts of one part, cut to a common cap, with a record of what was cut; ``blank`` gives
    every text as empty, to measure the lines around them."""

    def __init__(self, cap: int | None, shortened: list[dict[str, Any]], *, blank: bool = False):
        self.cap = cap
        self.shortened = shortened
        self.blank = blank

    def __call__(self, part: str, text: str) -> str:
        if self.blank:
            return ""
        if self.cap is None or len(text) <= self.cap:
            return text
        self.shortened.append({"part": part, "chars": len(text), "kept": self.cap})
        return shorten(text, self.cap)


def _rubric_lines(transcript: Transcript, criteria: list[dict[str, Any]], cut: _Texts) -> list[str]:
    lines = [
        f"# Eval: {transcript.eval_name}",
        cut("eval description", transcript.eval_description) or "(no description)",
        "",
        f"# Rubric: {transcript.rubric_name}",
        cut("rubric description", transcript.rubric_description),
        f"Pass threshold (weighted score): {transcript.pass_threshold}",
        "Criteria (name, weight: description):",
    ]
    lines += [
        f"- {c['name']}, weight {c['weight']:g}: "
        + cut(f"criterion {c['name']!r}", c["description"])
        for c in criteria
    ]
    if transcript.judge_instructions:
        instructions = cut("judge instructions", transcript.judge_instructions)
        lines += ["", "# Instructions for the judge", instructions]
    return lines


def _rubric_texts(transcript: Transcript, criteria: list[dict[str, Any]]) -> list[str]:
    return [
        transcript.eval_description,
        transcript.rubric_description,
        transcript.judge_instructions,
        *(c["description"] for c in criteria),
    ]


def _turn_texts(turn: TranscriptTurn) -> list[str]:
    return [turn.input, turn.output, turn.reference or ""]


def _turn_lines(turn: TranscriptTurn, cut: _Texts) -> list[str]:
    error = f" (error: {turn.error[:MAX_ERROR_CHARS]})" if turn.error else ""
    reference = (
        "(none recorded)"
        if turn.reference is None
        else cut(f"turn {turn.turn} reference", turn.reference)
    )
    return [
        f"## Turn {turn.turn}",
        f"User: {cut(f'turn {turn.turn} user', turn.input)}",
        f"Model: {cut(f'turn {turn.turn} model', turn.output)}{error}",
        f"Reference: {reference}",
    ]


def _turn_overhead(turn: TranscriptTurn) -> int:
    """The characters of a turn's lines apart from its three texts."""
    lines = _turn_lines(turn, _Texts(None, [], blank=True))
    return sum(len(line) + 1 for line in lines)


def _left_out_note(kept: int, total: int) -> str:
    return (
        f"(Turns {kept + 1} to {total} are left out: the transcript does not fit in the judge's "
        "context.)"
    )


def fit_prompt(
    transcript: Transcript, criteria: list[dict[str, Any]], budget: Budget
) -> FittedPrompt:
    """The user message of the judge's request, within ``budget``.

    Raises JudgeError (kind ``too_long``) when the context leaves no room for one turn.
    """
    prompt_chars = budget.prompt_chars
    shortened: list[dict[str, Any]] = []

    # The eval and rubric: at most their share, what they leave goes to the transcript.
    rubric_chars = int(prompt_chars * RUBRIC_SHARE)
    blank = _Texts(None, [], blank=True)
    fixed = sum(len(line) + 1 for line in _rubric_lines(transcript, criteria, blank))
    cap = fair_share(
        [len(text) for text in _rubric_texts(transcript, criteria)], rubric_chars - fixed
    )
    rubric = _rubric_lines(transcript, criteria, _Texts(cap, shortened))
    rubric_text = "\n".join(rubric)

    heading = f"\n\n{TRANSCRIPT_HEADING}\n"
    transcript_chars = prompt_chars - len(rubric_text) - len(heading)
    turns = transcript.turns
    # The longest run of first turns whose texts, each at a short share at least, fit.
    note_chars = len(_left_out_note(len(turns), len(turns))) + 1
    kept, spent = 0, 0
    for turn in turns:
        least = _turn_overhead(turn) + sum(
            min(len(text), MIN_CHARS_PER_TEXT) for text in _turn_texts(turn)
        )
        room = transcript_chars - (note_chars if kept + 1 < len(turns) else 0)
        if spent + least > room:
            break
        kept, spent = kept + 1, spent + least
    if kept == 0 and turns:
        if transcript_chars - _turn_overhead(turns[0]) - note_chars < 3 * LEAST_CHARS_PER_TEXT:
            raise JudgeError(
                f"The judge's context ({budget.context_tokens} tokens, JUDGE_CONTEXT_TOKENS) "
                f"leaves no room for the transcript beside the rubric and the answer "
                f"({budget.answer_tokens} tokens).",
                kind="too_long",
            )
        kept = 1
    graded = turns[:kept]
    left_out = len(turns) - kept
    available = (
        transcript_chars
        - sum(_turn_overhead(turn) for turn in graded)
        - (note_chars if left_out else 0)
    )
    cap = fair_share([len(text) for turn in graded for text in _turn_texts(turn)], available)
    cut = _Texts(cap, shortened)
    lines = [line for turn in graded for line in _turn_lines(turn, cut)]
    if left_out:
        lines.append(_left_out_note(kept, len(turns)))
    return FittedPrompt(
        text=rubric_text + heading + "\n".join(lines),
        budget=budget,
        rubric_chars=rubric_chars,
        transcript_chars=transcript_chars,
        turns_left_out=left_out,
        shortened=shortened,
    )
