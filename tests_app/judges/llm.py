"""The AI judge: an OpenAI-compatible chat model grades a replay against the rubric.

It is sent the rubric (criteria, weights, instructions), the eval's description and the transcript
with the recorded references, and must answer with JSON only:

    {"criteria": [{"name": "<criterion>", "score": 0..1, "feedback": "..."}], "feedback": "..."}

The request is fitted into the judge model's context (JUDGE_CONTEXT_TOKENS, see
:mod:`tests_app.judges.fitting`): long texts are shortened with a marker, and the grade's
provenance says what was cut. A malformed answer (not JSON, a criterion missing, a score outside
0..1) is sent back with the reason and asked again, at most JUDGE_MAX_ATTEMPTS times in all.
Transient HTTP errors are retried by the model client the targets use; the others are reported as
what they are (a timeout, an unreachable server, a refusal, a request too long for the context).
No ``response_format`` is sent: several local servers reject it, and the answer is validated
anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from tests_app.judges import JudgeError, Transcript, Verdict
from tests_app.judges.fitting import Budget, FittedPrompt, fit_prompt
from tests_app.targets.openai import Endpoint, ModelCallError, chat_completion, first_message

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)

SYSTEM_PROMPT = (
    "You are a strict, fair evaluator of a language model's answers in a recorded conversation. "
    "Score each rubric criterion from 0 (fails it) to 1 (fully meets it), comparing the model's "
    "answers with the reference answers where they help. Answer with one JSON object only, no "
    'prose: {"criteria": [{"name": "<criterion name>", "score": <number 0..1>, "feedback": '
    '"<one or two sentences>"}], "feedback": "<overall feedback>"}. Include every criterion '
    "exactly once, with its name exactly as given."
)


# How servers word a request longer than the model's context: llama.cpp ("exceeds the available
# context size"), OpenAI and vLLM ("maximum context length"), OpenAI's code.
_TOO_LONG = re.compile(
    r"context (size|length|window)|maximum context|context_length_exceeded|too many tokens",
    re.IGNORECASE,
)


class MalformedAnswer(ValueError):
    pass


def is_too_long(error: ModelCallError) -> bool:
    """A refusal because the request does not fit in the model's context."""
    return error.kind == "refused" and (
        error.status == 413 or bool(_TOO_LONG.search(error.message or ""))
    )


def criteria_of(transcript: Transcript) -> list[dict[str, Any]]:
    """The rubric's criteria with usable weights; a rubric without criteria gets one overall."""
    criteria = []
    for item in transcript.criteria or []:
        if not isinstance(item, dict) or not str(item.get("name", "")).strip():
            continue
        weight = item.get("weight", 1)
        weight = float(weight) if isinstance(weight, int | float) and weight >= 0 else 1.0
        criteria.append(
            {
                "name": str(item["name"]).strip(),
                "description": str(item.get("description", "")),
                "weight": weight,
            }
        )
    if not criteria:
        criteria = [{"name": "overall", "description": "Overall quality.", "weight": 1.0}]
    return criteria


def parse_answer(content: str, criteria: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Validate the judge's answer; raise MalformedAnswer with a reason the judge can act on."""
    text = _FENCE.sub("", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedAnswer(f"the answer is not valid JSON ({error.msg})") from error
    if not isinstance(data, dict) or not isinstance(data.get("criteria"), list):
        raise MalformedAnswer('the answer must be an object with a "criteria" list')
    given: dict[str, dict[str, Any]] = {}
    for item in data["criteria"]:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            given[item["name"].strip()] = item
    scored = []
    for criterion in criteria:
        item = given.get(criterion["name"])
        if item is None:
            raise MalformedAnswer(f"criterion {criterion['name']!r} has no score")
        score = item.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise MalformedAnswer(
                f"the score of {criterion['name']!r} must be a number from 0 to 1, got {score!r}"
            )
        scored.append(
            {
                "name": criterion["name"],
                "weight": criterion["weight"],
                "score": float(score),
                "feedback": str(item.get("feedback", "")),
            }
        )
    feedback = data.get("feedback", "")
    if not isinstance(feedback, str):
        raise MalformedAnswer('"feedback" must be a string')
    return scored, feedback


def _messages(fitted: FittedPrompt) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": fitted.text},
    ]


def prompt_hash(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(
        json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def weighted_score(scored: list[dict[str, Any]]) -> float:
    total_weight = sum(item["weight"] for item in scored)
    if total_weight <= 0:
        return round(sum(item["score"] for item in scored) / len(scored), 4)
    return round(sum(item["score"] * item["weight"] for item in scored) / total_weight, 4)


@dataclass(frozen=True)
class LlmJudge:
    model: str
    base_url: str | None
    api_key_env: str
    temperature: float
    seed: int
    timeout_s: float
    max_attempts: int
    # The judge model's context, and the part of it kept for the answer (its max_tokens).
    context_tokens: int = 32_768
    answer_tokens: int = 768
    source = "ai"

    @classmethod
    def from_settings(cls) -> LlmJudge:
        return cls(
            model=settings.JUDGE_MODEL,
            base_url=settings.JUDGE_BASE_URL or None,
            api_key_env=settings.JUDGE_API_KEY_ENV,
            temperature=settings.JUDGE_TEMPERATURE,
            seed=settings.JUDGE_SEED,
            timeout_s=settings.JUDGE_TIMEOUT_S,
            max_attempts=max(1, settings.JUDGE_MAX_ATTEMPTS),
            context_tokens=settings.JUDGE_CONTEXT_TOKENS,
            answer_tokens=settings.JUDGE_ANSWER_TOKENS,
        )

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.base_url,
            api_key_env=self.api_key_env or None,
            timeout_s=self.timeout_s,
            max_retries=2,
        )

    def budget(self, *, chars_per_token: float | None = None) -> Budget:
        budget = Budget(
            context_tokens=self.context_tokens,
            answer_tokens=self.answer_tokens,
            system_prompt=SYSTEM_PROMPT,
        )
        if chars_per_token is None:
            return budget
        return Budget(
            context_tokens=budget.context_tokens,
            answer_tokens=budget.answer_tokens,
            system_prompt=budget.system_prompt,
            chars_per_token=chars_per_token,
        )

    def _ask(self, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.answer_tokens,
        }
        payload = chat_completion(self.endpoint, body)
        content, _ = first_message(payload)
        return payload, content

    def grade(self, transcript: Transcript) -> Verdict:
        criteria = criteria_of(transcript)
        fitted = fit_prompt(transcript, criteria, self.budget())
        refitted = False
        problems: list[str] = []
        # A malformed answer goes back once with the reason; earlier ones are not resent, so
        # the request stays within the room kept for two answers.
        correction: list[dict[str, Any]] = []
        for attempt in range(1, self.max_attempts + 1):
            messages = [*_messages(fitted), *correction]
            try:
                payload, content = self._ask(messages)
            except ModelCallError as error:
                if not is_too_long(error) or refitted:
                    raise self.judge_error(error) from error
                # The text has fewer characters per token than estimated (code, numbers, other
                # scripts): fit once more at half the estimate.
                refitted = True
                fitted = fit_prompt(
                    transcript,
                    criteria,
                    self.budget(chars_per_token=fitted.budget.chars_per_token / 2),
                )
                correction = []
                try:
                    payload, content = self._ask(_messages(fitted))
                except ModelCallError as again:
                    raise self.judge_error(again) from again
            try:
                scored, feedback = parse_answer(content, criteria)
            except MalformedAnswer as problem:
                problems.append(str(problem))
                correction = [
                    {"role": "assistant", "content": content},
                    {
                        "role": "user",
                        "content": f"Your answer is unusable: {problem}. Answer again with "
                        "the JSON object only.",
                    },
                ]
                continue
            score = weighted_score(scored)
            passed = score >= transcript.pass_threshold
            _, usage = first_message(payload)
            return Verdict(
                source=self.source,
                score=score,
                passed=passed,
                feedback=feedback or f"Weighted score {score:.2f}.",
                criteria_scores=scored,
                provenance={
                    "grader": "llm",
                    "is_ai": True,
                    "model": self.model,
                    "response_model": payload.get("model"),
                    "temperature": self.temperature,
                    "seed": self.seed,
                    "prompt_sha256": prompt_hash(_messages(fitted)),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "attempts": attempt,
                    "rejected_answers": problems,
                    "context": {**fitted.provenance(), "refitted": refitted},
                    "pass_threshold": transcript.pass_threshold,
                    "rubric": transcript.rubric_snapshot(),
                },
            )
        raise JudgeError(
            f"The AI judge gave no usable answer in {self.max_attempts} attempts: "
            + "; ".join(problems),
            kind="malformed",
        )

    def judge_error(self, error: ModelCallError) -> JudgeError:
        """What went wrong with the judge's server, said as what it is: the client's error
        kinds, with a request too long for the model's context told apart from other refusals."""
        judge = f"The AI judge ({self.model})"
        if error.kind == "timeout":
            return JudgeError(f"{judge} did not answer in time: {error}", kind="timeout")
        if error.kind == "unreachable":
            return JudgeError(f"{judge} could not be reached: {error}", kind="unreachable")
        if error.kind == "unusable":
            return JudgeError(
                f"{judge} answered with no usable completion: {error}", kind="unusable"
            )
        if is_too_long(error):
            return JudgeError(
                f"{judge} refused the request as too long for its context (HTTP {error.status}): "
                f"{error.message}",
                kind="too_long",
            )
        if error.status is not None and error.status >= 500:
            return JudgeError(
                f"{judge} failed on the server (HTTP {error.status}): {error.message}",
                kind="refused",
            )
        return JudgeError(
            f"{judge} refused the request (HTTP {error.status}): {error.message or error}",
            kind="refused",
        )
