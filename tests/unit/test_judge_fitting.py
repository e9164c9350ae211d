"""The judge's request fits in the judge model's context: a budget per part, long texts shortened
with a marker, the last turns left out when even short texts do not fit, and the provenance says
so."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests_app.judges import JudgeError, Transcript, TranscriptTurn
from tests_app.judges.fitting import (
    MIN_CHARS_PER_TEXT,
    Budget,
    fair_share,
    fit_prompt,
    shorten,
)
from tests_app.judges.llm import SYSTEM_PROMPT, LlmJudge, criteria_of
from tests_app.targets.openai import ModelCallError

CRITERIA = [
    {"name": "accuracy", "description": "Facts are right.", "weight": 3},
    {"name": "tone", "description": "Polite and clear.", "weight": 1},
]


def transcript(
    turns: list[tuple[str, str, str | None]], *, instructions: str = "Be strict."
) -> Transcript:
    return Transcript(
        rubric_name="Helpfulness",
        rubric_description="How helpful the answers are.",
        criteria=CRITERIA,
        pass_threshold=0.7,
        judge_instructions=instructions,
        eval_name="Support chat",
        eval_description="Multi-turn support answers.",
        turns=[
            TranscriptTurn(turn=index, input=user, output=output, reference=reference)
            for index, (user, output, reference) in enumerate(turns, start=1)
        ],
    )


def budget(context_tokens: int, answer_tokens: int = 256) -> Budget:
    return Budget(
        context_tokens=context_tokens, answer_tokens=answer_tokens, system_prompt=SYSTEM_PROMPT
    )


def test_fair_share_cuts_only_the_texts_longer_than_it() -> None:
    assert fair_share([10, 20], 30) is None
    # 10 stays whole; the two long ones share the remaining 90.
    assert fair_share([10, 1000, 500], 100) == 45
    assert fair_share([100, 100], 0) == 0


def test_shorten_keeps_the_start_and_the_end_around_a_marker() -> None:
    text = "start " + "x" * 5000 + " end"
    short = shorten(text, 300)

    assert short.startswith("start ")
    assert short.endswith(" end")
    assert "characters left out ...]" in short
    assert len(short) <= 300
    assert shorten("short", 300) == "short"


def test_a_short_transcript_is_sent_whole() -> None:
    judged = transcript([("Hi?", "Hello!", "Hello."), ("Refund?", "Yes.", None)])

    fitted = fit_prompt(judged, criteria_of(judged), budget(8192))

    for expected in (
        "Multi-turn support answers.",
        "- accuracy, weight 3: Facts are right.",
        "Be strict.",
        "## Turn 2",
        "Model: Yes.",
        "Reference: (none recorded)",
    ):
        assert expected in fitted.text
    assert fitted.shortened == []
    assert fitted.turns_left_out == 0
    provenance = fitted.provenance()
    assert provenance["context_tokens"] == 8192
    assert provenance["texts_shortened"] == 0
    assert 0 < provenance["estimated_prompt_tokens"] < 8192 - 2 * 256


def test_a_long_answer_is_shortened_and_short_ones_stay_whole() -> None:
    long_answer = "A" * 40_000 + " the very end"
    judged = transcript(
        [("Question one?", long_answer, "Reference one."), ("Two?", "Fine.", "Ok.")]
    )
    limits = budget(2048)

    fitted = fit_prompt(judged, criteria_of(judged), limits)

    assert len(fitted.text) <= limits.prompt_chars
    assert "Question one?" in fitted.text
    assert "Model: Fine." in fitted.text
    assert "the very end" in fitted.text
    assert "characters left out ...]" in fitted.text
    [cut] = fitted.shortened
    assert cut["part"] == "turn 1 model"
    assert cut["chars"] == len(long_answer)
    assert cut["kept"] < 6000
    assert fitted.provenance()["texts_shortened"] == 1


def test_turns_that_do_not_fit_even_short_are_left_out_and_the_prompt_says_so() -> None:
    judged = transcript([(f"Q{n} " + "q" * 900, "a" * 900, "r" * 900) for n in range(1, 201)])
    limits = budget(4096)

    fitted = fit_prompt(judged, criteria_of(judged), limits)

    assert 0 < fitted.turns_left_out < 200
    kept = 200 - fitted.turns_left_out
    assert f"## Turn {kept}\n" in fitted.text
    assert f"## Turn {kept + 1}\n" not in fitted.text
    assert f"(Turns {kept + 1} to 200 are left out" in fitted.text
    assert len(fitted.text) <= limits.prompt_chars
    assert all(item["kept"] >= MIN_CHARS_PER_TEXT for item in fitted.shortened)


def test_the_rubric_gets_at_most_its_share_and_names_are_never_cut() -> None:
    judged = transcript([("Hi?", "Hello!", "Hello.")], instructions="Be strict. " * 5000)
    limits = budget(4096)

    fitted = fit_prompt(judged, criteria_of(judged), limits)

    assert [item["part"] for item in fitted.shortened] == ["judge instructions"]
    rubric_part = fitted.text.split("# Transcript")[0]
    assert len(rubric_part) <= fitted.rubric_chars + 2
    assert "- accuracy, weight 3: Facts are right." in fitted.text
    assert "Model: Hello!" in fitted.text


def test_a_context_too_small_for_anything_is_too_long() -> None:
    judged = transcript([("Hi?", "Hello!", "Hello.")])
    with pytest.raises(JudgeError, match="leaves no room for the transcript") as raised:
        fit_prompt(judged, criteria_of(judged), budget(600, answer_tokens=256))
    assert raised.value.kind == "too_long"


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=3000)


@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(st.tuples(texts, texts, st.none() | texts), min_size=1, max_size=40),
    instructions=texts,
    context_tokens=st.integers(min_value=1500, max_value=16_384),
)
def test_the_prompt_never_exceeds_its_budget(
    turns: list[tuple[str, str, str | None]], instructions: str, context_tokens: int
) -> None:
    judged = transcript(turns, instructions=instructions)
    limits = budget(context_tokens)

    fitted = fit_prompt(judged, criteria_of(judged), limits)

    assert len(fitted.text) <= limits.prompt_chars
    assert "## Turn 1\n" in fitted.text


def test_the_judge_sends_max_tokens_and_says_what_it_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    answer = json.dumps(
        {
            "criteria": [
                {"name": "accuracy", "score": 1, "feedback": "ok"},
                {"name": "tone", "score": 1, "feedback": "ok"},
            ],
            "feedback": "Fine.",
        }
    )

    def reply(endpoint: Any, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(body)
        return {"model": "judge", "choices": [{"message": {"content": answer}}], "usage": {}}

    monkeypatch.setattr("tests_app.judges.llm.chat_completion", reply)
    judge = LlmJudge(
        model="judge",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="",
        temperature=0.0,
        seed=7,
        timeout_s=5,
        max_attempts=1,
        context_tokens=2048,
        answer_tokens=256,
    )

    verdict = judge.grade(transcript([("Question?", "B" * 30_000, "Answer.")]))

    [body] = sent
    assert body["max_tokens"] == 256
    context = verdict.provenance["context"]
    assert context["context_tokens"] == 2048
    assert context["shortened"][0]["part"] == "turn 1 model"
    assert context["refitted"] is False


def test_a_request_refused_as_too_long_is_fitted_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[int] = []
    answer = json.dumps(
        {
            "criteria": [
                {"name": "accuracy", "score": 0.5, "feedback": "ok"},
                {"name": "tone", "score": 0.5, "feedback": "ok"},
            ],
            "feedback": "Half.",
        }
    )

    def reply(endpoint: Any, body: dict[str, Any]) -> dict[str, Any]:
        sent.append(len(body["messages"][1]["content"]))
        if len(sent) == 1:
            raise ModelCallError(
                "HTTP 400",
                kind="refused",
                status=400,
                message="request (2300 tokens) exceeds the available context size (2048 tokens)",
            )
        return {"model": "judge", "choices": [{"message": {"content": answer}}], "usage": {}}

    monkeypatch.setattr("tests_app.judges.llm.chat_completion", reply)
    judge = LlmJudge(
        model="judge",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="",
        temperature=0.0,
        seed=7,
        timeout_s=5,
        max_attempts=2,
        context_tokens=2048,
        answer_tokens=256,
    )

    verdict = judge.grade(transcript([("Question?", "{" * 30_000, "Answer.")]))

    assert len(sent) == 2
    assert sent[1] < sent[0] * 0.7
    assert verdict.score == 0.5
    assert verdict.provenance["context"]["refitted"] is True
    assert verdict.provenance["context"]["chars_per_token"] == 1.5
