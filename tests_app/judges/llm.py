"""The AI judge: an OpenAI-compatible chat model grades a replay against the rubric.

It is sent the rubric (criteria, weights, instructions), the eval's description and the transcript
with the recorded references, and must answer with JSON only:

    {"criteria": {"<criterion>": {"feedback": "...", "score": 0..1}}, "feedback": "..."}

(a list of ``{"name", "score", "feedback"}`` items is read as well).

The request asks for that shape as a JSON schema (``response_format`` of type ``json_schema``:
llama.cpp enforces it as a grammar, OpenAI and vLLM support it). A server that refuses
``response_format`` is asked again without it (the prompt alone asks for the JSON), and that is
remembered per judge (server and model) in the cache for PROMPT_ONLY_MEMORY_S: the cache, not
the database, because every web and worker process shares it (Redis in production) and a lost
or stale hint costs one refused request, where a table would keep a hint that can go stale. The
answer is validated either way.

The request is fitted into the judge model's context (JUDGE_CONTEXT_TOKENS, see
:mod:`tests_app.judges.fitting`): long texts are shortened with a marker, and the grade's
provenance says what was cut. A malformed answer (not JSON, a criterion missing, a score outside
0..1) is sent back with the reason and asked again, at most JUDGE_MAX_ATTEMPTS times in all.
Transient HTTP errors are retried by the model client the targets use; the others are reported as
what they are (a timeout, an unreachable server, a refusal, a request too long for the context).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache

from tests_app.judges import JudgeError, Transcript, Verdict
from tests_app.judges.fitting import CHARS_PER_TOKEN, Budget, FittedPrompt, fit_prompt
from tests_app.targets.openai import Endpoint, ModelCallError, chat_completion, first_message

logger = logging.getLogger(__name__)

# A judge whose server refused response_format is asked for prompt-only JSON this long, then
# asked with the schema again (its server may have been upgraded).
PROMPT_ONLY_MEMORY_S = 24 * 3600
# The longest feedback the schema allows, per criterion and overall.
MAX_FEEDBACK_CHARS = 400
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)

SYSTEM_PROMPT = (
    "You are a strict, fair evaluator of a language model's answers in a recorded conversation. "
    "Score each rubric criterion from 0 (fails it) to 1 (fully meets it), comparing the model's "
    "answers with the reference answers where they help. Answer with one JSON object only, no "
    'prose: {"criteria": {"<criterion name>": {"feedback": "<one or two sentences>", "score": '
    '<number 0..1>}}, "feedback": "<overall feedback>"}. Include every criterion exactly once, '
    "with its name exactly as given."
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


def _answers_by_name(given: Any) -> dict[str, Any] | None:
    """The answer's criteria by name: an object keyed by name (what the judge asks for), or a
    list of objects with a name (what models asked in prose often give)."""
    if isinstance(given, dict):
        return {str(name).strip(): item for name, item in given.items()}
    if isinstance(given, list):
        return {
            item["name"].strip(): item
            for item in given
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
    return None


def parse_answer(content: str, criteria: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Validate the judge's answer; raise MalformedAnswer with a reason the judge can act on."""
    text = _FENCE.sub("", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedAnswer(f"the answer is not valid JSON ({error.msg})") from error
    given = _answers_by_name(data.get("criteria")) if isinstance(data, dict) else None
    if given is None:
        raise MalformedAnswer('the answer must be an object with "criteria" by name')
    scored = []
    for criterion in criteria:
        item = given.get(criterion["name"])
        if not isinstance(item, dict):
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


def answer_schema(criteria: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of an answer: feedback and a score 0..1 under each criterion's name.

    Keyed by name so that a grammar gives every criterion exactly once (an array of named items
    lets a model repeat one and skip another); every property required and no others, as
    OpenAI's strict mode wants. A server that refuses a keyword of it refuses response_format,
    and the judge falls back to prompt-only JSON."""
    per_criterion = {
        "type": "object",
        "properties": {
            # Feedback first: the score follows the model's reasons. Bounded, or a small model
            # may repeat one sentence until it runs out of tokens.
            "feedback": {"type": "string", "maxLength": MAX_FEEDBACK_CHARS},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["feedback", "score"],
        "additionalProperties": False,
    }
    names = [criterion["name"] for criterion in criteria]
    return {
        "type": "object",
        "properties": {
            "criteria": {
                "type": "object",
                "properties": dict.fromkeys(names, per_criterion),
                "required": names,
                "additionalProperties": False,
            },
            "feedback": {"type": "string", "maxLength": MAX_FEEDBACK_CHARS},
        },
        "required": ["criteria", "feedback"],
        "additionalProperties": False,
    }


def response_format(criteria: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "rubric_grade", "strict": True, "schema": answer_schema(criteria)},
    }


def refuses_response_format(error: ModelCallError) -> bool:
    """A refusal that response_format may have caused: a 400 or 422 about anything but the
    context. Whether it did is known when the request without it is accepted."""
    return error.kind == "refused" and error.status in (400, 422) and not is_too_long(error)


@dataclass
class _Request:
    """What the judge sends next, and how it was adapted to the server's refusals."""

    fitted: FittedPrompt
    structured: bool
    correction: list[dict[str, Any]] = field(default_factory=list)
    refitted: bool = False
    fell_back: bool = False
    remembered: bool = False


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

    def budget(self, *, chars_per_token: float = CHARS_PER_TOKEN) -> Budget:
        return Budget(
            context_tokens=self.context_tokens,
            answer_tokens=self.answer_tokens,
            system_prompt=SYSTEM_PROMPT,
            chars_per_token=chars_per_token,
        )

    @property
    def _prompt_only_key(self) -> str:
        judge = hashlib.sha256(f"{self.endpoint.url}|{self.model}".encode()).hexdigest()[:24]
        return f"judge-prompt-only:{judge}"

    def prompt_only_remembered(self) -> bool:
        """Whether this judge's server refused response_format lately."""
        try:
            return bool(cache.get(self._prompt_only_key))
        except Exception:  # a hint only: without the cache, ask with the schema again
            logger.warning("The cache could not be read; asking %s for a schema", self.model)
            return False

    def _remember_prompt_only(self) -> None:
        try:
            cache.set(self._prompt_only_key, True, PROMPT_ONLY_MEMORY_S)
        except Exception:
            logger.warning("The cache could not be written; %s is asked again", self.model)

    def _ask(self, request: _Request, criteria: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [*_messages(request.fitted), *request.correction],
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.answer_tokens,
        }
        if request.structured:
            body["response_format"] = response_format(criteria)
        payload = chat_completion(self.endpoint, body)
        content, _ = first_message(payload)
        return payload, content

    def _answer(
        self, transcript: Transcript, criteria: list[dict[str, Any]], request: _Request
    ) -> tuple[dict[str, Any], str]:
        """One answer of the judge, the request adapted at most once to each refusal that a
        change of request can meet: response_format not taken, a prompt still too long."""
        while True:
            try:
                payload, content = self._ask(request, criteria)
            except ModelCallError as error:
                if request.structured and refuses_response_format(error):
                    request.structured = False
                    request.fell_back = True
                    continue
                if is_too_long(error) and not request.refitted:
                    # The text has fewer characters per token than estimated (code, numbers,
                    # other scripts): fit once more at half the estimate.
                    request.refitted = True
                    request.correction = []
                    request.fitted = fit_prompt(
                        transcript,
                        criteria,
                        self.budget(chars_per_token=request.fitted.budget.chars_per_token / 2),
                    )
                    continue
                raise self.judge_error(error) from error
            if request.fell_back and not request.remembered:
                # The same request without response_format was accepted: it was the refusal.
                self._remember_prompt_only()
                request.remembered = True
            return payload, content

    def grade(self, transcript: Transcript) -> Verdict:
        criteria = criteria_of(transcript)
        request = _Request(
            fitted=fit_prompt(transcript, criteria, self.budget()),
            structured=not self.prompt_only_remembered(),
        )
        problems: list[str] = []
        for attempt in range(1, self.max_attempts + 1):
            payload, content = self._answer(transcript, criteria, request)
            try:
                scored, feedback = parse_answer(content, criteria)
            except MalformedAnswer as problem:
                problems.append(str(problem))
                # Only the last malformed answer goes back, so the request stays within the
                # room kept for two answers.
                request.correction = [
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
                    "prompt_sha256": prompt_hash(_messages(request.fitted)),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    # json_schema: the server held the answer to the schema; prompt: JSON asked
                    # for in the prompt alone (the server refused response_format).
                    "answer_format": "json_schema" if request.structured else "prompt",
                    "response_format_refused": request.fell_back,
                    "attempts": attempt,
                    "rejected_answers": problems,
                    "context": {**request.fitted.provenance(), "refitted": request.refitted},
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
