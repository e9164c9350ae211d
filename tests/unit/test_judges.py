"""The offline reference grader, the LLM judge on a loopback server, and the grading service."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from tests import factories
from tests.fake_model import FakeModel, Reply
from tests_app.judges import JudgeError, Transcript, TranscriptTurn
from tests_app.judges.llm import LlmJudge
from tests_app.judges.reference import ReferenceGrader, similarity
from tests_app.models import Test, TestInvocation, TestRun
from tests_app.services.grading import grade
from tests_app.targets.openai import ModelCallError

CRITERIA = [
    {"name": "accuracy", "description": "Facts are right.", "weight": 3},
    {"name": "tone", "description": "Polite and clear.", "weight": 1},
]


def transcript(turns: list[tuple[str, str | None]], threshold: float = 0.7) -> Transcript:
    return Transcript(
        rubric_name="Helpfulness",
        rubric_description="How helpful the answers are.",
        criteria=CRITERIA,
        pass_threshold=threshold,
        judge_instructions="Be strict about facts.",
        eval_name="Support chat",
        eval_description="Measures multi-turn support answers.",
        turns=[
            TranscriptTurn(turn=i, input=f"Question {i}?", output=output, reference=reference)
            for i, (output, reference) in enumerate(turns, start=1)
        ],
    )


def judge_answer(accuracy: Any, tone: Any, feedback: str = "Mostly right.") -> str:
    return json.dumps(
        {
            "criteria": [
                {"name": "accuracy", "score": accuracy, "feedback": "Facts ok."},
                {"name": "tone", "score": tone, "feedback": "Curt."},
            ],
            "feedback": feedback,
        }
    )


def llm_judge(server: FakeModel, **overrides: Any) -> LlmJudge:
    options: dict[str, Any] = {
        "model": "judge-model",
        "base_url": server.base_url,
        "api_key_env": "FAKE_JUDGE_KEY",
        "temperature": 0.0,
        "seed": 7,
        "timeout_s": 5,
        "max_attempts": 3,
        **overrides,
    }
    return LlmJudge(**options)


# --- the offline reference grader ---------------------------------------------------------------


def test_similarity_is_one_for_the_same_words_and_lower_for_others() -> None:
    assert similarity("Paris is the capital.", "paris IS the capital") == 1.0
    assert similarity("", "") == 1.0
    assert similarity("", "Paris") == 0.0
    close = similarity("The capital is Paris.", "Paris is the capital.")
    far = similarity("I like turtles.", "Paris is the capital.")
    assert 0.5 < close < 1.0
    assert far < 0.3


def test_reference_grader_scores_against_the_references_and_says_it_is_offline() -> None:
    verdict = ReferenceGrader().grade(
        transcript([("Answer 1.", "Answer 1."), ("Something else", "Answer 2."), ("x", None)])
    )

    assert verdict.source == "reference"
    expected = round((1.0 + similarity("Something else", "Answer 2.")) / 2, 4)
    assert verdict.score == expected
    assert verdict.passed is (expected >= 0.7)
    assert "not an AI" in verdict.feedback
    assert verdict.provenance["is_ai"] is False
    assert verdict.provenance["grader"] == "reference"
    # The turn without a reference is not scored.
    assert [item["turn"] for item in verdict.provenance["turns"]] == [1, 2]
    assert verdict.provenance["rubric"]["criteria"] == CRITERIA
    assert verdict.criteria_scores[0]["name"] == "reference_similarity"


def test_reference_grader_passes_by_the_rubric_threshold() -> None:
    identical = transcript([("Answer 1.", "Answer 1.")], threshold=1.0)
    assert ReferenceGrader().grade(identical).passed is True
    different = transcript([("No idea.", "Answer 1.")], threshold=0.5)
    verdict = ReferenceGrader().grade(different)
    assert verdict.passed is False
    assert "did not pass" in verdict.feedback


def test_reference_grader_without_references_refuses() -> None:
    with pytest.raises(JudgeError, match="no turn of this replay has a recorded reference"):
        ReferenceGrader().grade(transcript([("Hello", None)]))


# --- the LLM judge ------------------------------------------------------------------------------


def test_llm_judge_retries_a_malformed_answer_then_weighs_the_scores(
    fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_JUDGE_KEY", "judge-secret")
    fake_model.script(
        Reply(content="Sure! Here is my grade: great"),
        Reply(content="```json\n" + judge_answer(1.0, 0.2) + "\n```"),
    )
    judged = transcript([("Echo 1", "Answer 1."), ("Echo 2", "Answer 2.")])

    verdict = llm_judge(fake_model).grade(judged)

    # (3 * 1.0 + 1 * 0.2) / 4
    assert verdict.score == 0.8
    assert verdict.passed is True
    assert verdict.source == "ai"
    assert verdict.feedback == "Mostly right."
    assert verdict.criteria_scores == [
        {"name": "accuracy", "weight": 3.0, "score": 1.0, "feedback": "Facts ok."},
        {"name": "tone", "weight": 1.0, "score": 0.2, "feedback": "Curt."},
    ]
    first, second = fake_model.chat_requests()
    assert fake_model.authorizations == ["Bearer judge-secret"] * 2
    assert (first["model"], first["temperature"], first["seed"]) == ("judge-model", 0.0, 7)
    prompt = first["messages"][1]["content"]
    for expected in (
        "Measures multi-turn support answers.",
        "accuracy, weight 3: Facts are right.",
        "Be strict about facts.",
        "Model: Echo 2",
        "Reference: Answer 2.",
    ):
        assert expected in prompt
    # The malformed answer went back with the reason.
    assert second["messages"][2] == {
        "role": "assistant",
        "content": "Sure! Here is my grade: great",
    }
    assert "not valid JSON" in second["messages"][3]["content"]
    provenance = verdict.provenance
    assert provenance["model"] == "judge-model"
    assert provenance["temperature"] == 0.0
    assert provenance["seed"] == 7
    assert provenance["attempts"] == 2
    assert provenance["is_ai"] is True
    assert provenance["rubric"]["criteria"] == CRITERIA
    assert provenance["rubric"]["pass_threshold"] == 0.7
    expected_hash = hashlib.sha256(
        json.dumps(first["messages"], sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    assert provenance["prompt_sha256"] == expected_hash


def test_llm_judge_below_threshold_does_not_pass(fake_model: FakeModel) -> None:
    fake_model.script(Reply(content=judge_answer(0.5, 1.0)))
    verdict = llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))
    assert verdict.score == 0.625
    assert verdict.passed is False


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (json.dumps({"criteria": [{"name": "accuracy", "score": 1}]}), "'tone' has no score"),
        (judge_answer(1.5, 0.5), "must be a number from 0 to 1"),
        (judge_answer("high", 0.5), "must be a number from 0 to 1"),
        (json.dumps([1, 2]), '"criteria" by name'),
        (json.dumps({"criteria": {"accuracy": 1, "tone": 1}}), "'accuracy' has no score"),
    ],
)
def test_llm_judge_gives_up_after_the_attempts(
    fake_model: FakeModel, answer: str, reason: str
) -> None:
    fake_model.answer = lambda messages: answer

    with pytest.raises(JudgeError, match="no usable answer in 3 attempts") as raised:
        llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))

    assert reason in str(raised.value)
    assert len(fake_model.chat_requests()) == 3


def test_a_server_error_is_reported_as_a_server_error(fake_model: FakeModel) -> None:
    fake_model.script(*[Reply(status=503)] * 3)
    with pytest.raises(JudgeError, match=r"failed on the server \(HTTP 503\)") as raised:
        llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))
    assert raised.value.kind == "refused"
    assert "could not be reached" not in str(raised.value)


def test_an_unreachable_judge_is_reported_as_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = LlmJudge(
        model="judge-model",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env="",
        temperature=0.0,
        seed=7,
        timeout_s=2,
        max_attempts=1,
    )
    with pytest.raises(JudgeError, match=r"The AI judge \(judge-model\) could not be reached"):
        judge.grade(transcript([("Echo", "Answer")]))


def test_a_judge_that_does_not_answer_in_time_is_a_timeout(fake_model: FakeModel) -> None:
    fake_model.script(*[Reply(hang=True)] * 3)
    with pytest.raises(JudgeError, match="did not answer in time") as raised:
        llm_judge(fake_model, timeout_s=0.2).grade(transcript([("Echo", "Answer")]))
    assert raised.value.kind == "timeout"


@pytest.mark.parametrize(
    ("status", "message", "kind", "sentence"),
    [
        (
            400,
            "request (2084 tokens) exceeds the available context size (2048 tokens), try "
            "increasing it",
            "too_long",
            "refused the request as too long for its context (HTTP 400): request (2084 tokens)",
        ),
        (
            400,
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens.",
            "too_long",
            "too long for its context",
        ),
        (
            404,
            "The model `judge-model` does not exist",
            "refused",
            "refused the request (HTTP 404)",
        ),
    ],
)
def test_a_refusal_is_reported_as_what_it_is(
    monkeypatch: pytest.MonkeyPatch, status: int, message: str, kind: str, sentence: str
) -> None:
    def refuse(endpoint: Any, body: Any) -> Any:
        raise ModelCallError(
            f"The server answered HTTP {status}", kind="refused", status=status, message=message
        )

    monkeypatch.setattr("tests_app.judges.llm.chat_completion", refuse)
    judge = LlmJudge(
        model="judge-model",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="",
        temperature=0.0,
        seed=7,
        timeout_s=2,
        max_attempts=3,
    )
    with pytest.raises(JudgeError) as raised:
        judge.grade(transcript([("Echo", "Answer")]))

    assert raised.value.kind == kind
    assert sentence in str(raised.value)
    assert "could not be reached" not in str(raised.value)


# --- structured answers ---------------------------------------------------------------------


@pytest.fixture
def forgetful_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def test_the_judge_asks_for_a_json_schema_of_the_rubric(
    fake_model: FakeModel, forgetful_cache: None
) -> None:
    keyed = {
        "criteria": {
            "accuracy": {"feedback": "Right.", "score": 1},
            "tone": {"feedback": "Curt.", "score": 0.2},
        },
        "feedback": "Right but curt.",
    }
    fake_model.answer = lambda messages: json.dumps(keyed)

    verdict = llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))

    [request] = fake_model.chat_requests()
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    by_name = schema["properties"]["criteria"]
    assert list(by_name["properties"]) == by_name["required"] == ["accuracy", "tone"]
    assert by_name["additionalProperties"] is False
    assert by_name["properties"]["tone"]["properties"]["score"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
    }
    assert verdict.score == 0.8  # (3 * 1 + 1 * 0.2) / 4
    assert [item["feedback"] for item in verdict.criteria_scores] == ["Right.", "Curt."]
    assert verdict.provenance["answer_format"] == "json_schema"
    assert verdict.provenance["response_format_refused"] is False


def test_an_answer_is_still_validated(fake_model: FakeModel, forgetful_cache: None) -> None:
    only_accuracy = json.dumps(
        {"criteria": {"accuracy": {"feedback": "a", "score": 1}}, "feedback": "Half."}
    )
    fake_model.script(Reply(content=only_accuracy), Reply(content=judge_answer(0.5, 0.5)))

    verdict = llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))

    _, second = fake_model.chat_requests()
    assert "'tone' has no score" in second["messages"][3]["content"]
    assert "response_format" in second
    assert verdict.provenance["rejected_answers"] == ["criterion 'tone' has no score"]


def test_a_server_that_refuses_response_format_gets_prompt_only_json_remembered_per_judge(
    fake_model: FakeModel, forgetful_cache: None
) -> None:
    fake_model.answer = lambda messages: judge_answer(0.8, 0.8)
    fake_model.script(Reply(status=400))
    judged = transcript([("Echo", "Answer")])

    first = llm_judge(fake_model).grade(judged)
    again = llm_judge(fake_model).grade(judged)
    other_model = llm_judge(fake_model, model="other-judge").grade(judged)

    requests = fake_model.chat_requests()
    assert ["response_format" in request for request in requests] == [True, False, False, True]
    assert requests[0]["messages"] == requests[1]["messages"]
    assert (first.provenance["answer_format"], first.provenance["response_format_refused"]) == (
        "prompt",
        True,
    )
    assert (again.provenance["answer_format"], again.provenance["response_format_refused"]) == (
        "prompt",
        False,
    )
    assert other_model.provenance["answer_format"] == "json_schema"
    assert first.score == again.score == 0.8


def test_a_refusal_the_plain_request_meets_too_is_not_remembered(
    fake_model: FakeModel, forgetful_cache: None
) -> None:
    fake_model.script(Reply(status=400), Reply(status=400))
    with pytest.raises(JudgeError, match=r"refused the request \(HTTP 400\)"):
        llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))

    fake_model.answer = lambda messages: judge_answer(1.0, 1.0)
    llm_judge(fake_model).grade(transcript([("Echo", "Answer")]))

    requests = fake_model.chat_requests()
    assert ["response_format" in request for request in requests] == [True, False, True]


# --- the grading service --------------------------------------------------------------------------


def replayed_invocation(outputs: list[str]) -> TestInvocation:
    department = factories.DepartmentFactory.create()
    benchmark = factories.make_benchmark(department=department, entries=1, turns=len(outputs))
    test = factories.TestFactory.create(
        benchmark=benchmark, status=Test.Status.RUNNING, started_at=timezone.now(), total_runs=1
    )
    run = factories.TestRunFactory.create(
        test=test, entry=benchmark.entries.get(), ordinal=1, status=TestRun.Status.COMPLETED
    )
    invocation = factories.TestInvocationFactory.create(
        run=run, test=test, status=TestInvocation.Status.ENDED, steps_count=len(outputs)
    )
    TestRun.objects.filter(pk=run.pk).update(latest_invocation=invocation)
    for turn, output in enumerate(outputs, start=1):
        factories.ReplayStepFactory.create(
            invocation=invocation,
            turn=turn,
            input=f"Question {turn}?",
            output=output,
            reference=f"Answer {turn}.",
        )
    return invocation


@pytest.mark.django_db
def test_grading_without_a_judge_uses_the_reference_grader(
    settings: Any, events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    settings.JUDGE_MODEL = ""
    invocation = replayed_invocation(["Answer 1.", "Answer 2."])
    pending = factories.GradeFactory.create(
        invocation=invocation, source="reference", status="pending", score=None, passed=None
    )

    with django_capture_on_commit_callbacks(execute=True):
        grade(grade_id=pending.pk)

    pending.refresh_from_db()
    assert (pending.status, pending.source, pending.score, pending.passed) == (
        "done",
        "reference",
        1.0,
        True,
    )
    assert "not an AI" in pending.feedback
    run = TestRun.objects.get(pk=invocation.run_id)
    assert (run.score, run.passed) == (1.0, True)
    test = Test.objects.get(pk=invocation.test_id)
    assert (test.graded_runs, test.passed_runs, test.score_sum) == (1, 1, 1.0)
    [event] = events
    assert event["event_type"] == "grade.completed"
    assert (event["grade_id"], event["score"], event["passed"]) == (str(pending.pk), 1.0, True)


@pytest.mark.django_db
def test_grading_with_a_judge_stores_the_ai_grade(
    settings: Any, fake_model: FakeModel, django_capture_on_commit_callbacks: Any
) -> None:
    settings.JUDGE_MODEL = "judge-model"
    settings.JUDGE_BASE_URL = fake_model.base_url
    fake_model.script(Reply(content="{not json"), Reply(content=judge_answer(0.4, 0.4, "Weak.")))
    invocation = replayed_invocation(["Echo 1"])
    pending = factories.GradeFactory.create(
        invocation=invocation, source="ai", status="pending", score=None, passed=None
    )

    with django_capture_on_commit_callbacks(execute=True):
        grade(grade_id=pending.pk)

    pending.refresh_from_db()
    assert (pending.status, pending.source, pending.score, pending.passed) == (
        "done",
        "ai",
        0.4,
        False,
    )
    assert pending.feedback == "Weak."
    assert pending.provenance["model"] == "judge-model"
    assert pending.provenance["attempts"] == 2
    assert [c["name"] for c in pending.criteria_scores] == ["accuracy", "tone"]
    assert TestRun.objects.get(pk=invocation.run_id).score == 0.4


@pytest.mark.django_db
def test_a_failed_judge_fails_the_grade(
    settings: Any,
    fake_model: FakeModel,
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.JUDGE_MODEL = "judge-model"
    settings.JUDGE_BASE_URL = fake_model.base_url
    settings.JUDGE_MAX_ATTEMPTS = 2
    fake_model.answer = lambda messages: "no"
    invocation = replayed_invocation(["Echo 1"])
    pending = factories.GradeFactory.create(
        invocation=invocation, source="ai", status="pending", score=None, passed=None
    )

    with django_capture_on_commit_callbacks(execute=True):
        grade(grade_id=pending.pk)

    pending.refresh_from_db()
    assert (pending.status, pending.score) == ("failed", None)
    assert "no usable answer in 2 attempts" in pending.feedback
    assert pending.provenance == {"error": "malformed"}
    assert TestRun.objects.get(pk=invocation.run_id).score is None
    [event] = events
    assert event["event_type"] == "grade.failed"
    assert event["grade_id"] == str(pending.pk)


@pytest.mark.django_db
def test_a_settled_or_missing_grade_is_left_alone(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.JUDGE_MODEL = ""
    invocation = replayed_invocation(["Nothing like it"])
    done = factories.GradeFactory.create(
        invocation=invocation, score=0.9, passed=True, feedback="Kept."
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        grade(grade_id=done.pk)
        grade(grade_id="00000000-0000-0000-0000-000000000000")

    done.refresh_from_db()
    assert (done.status, done.score, done.feedback) == ("done", 0.9, "Kept.")
    assert callbacks == []
