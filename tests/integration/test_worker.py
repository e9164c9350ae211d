"""A real Celery worker process on Redis and PostgreSQL runs replays and AI grades end to end.

The agent's side goes through the API (start, next, run, get, end, stop) in this process; the
worker is a separate process that talks to tests/fake_model.py over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests import factories
from tests.fake_model import FakeModel, Messages, echo
from tests.integration.conftest import WorkerProcess, wait_for
from tests_app.models import ReplayStep, Test, TestInvocation, TestRun
from tests_app.services.sweep import reap_stale_invocations

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

TEST_API = "/api/v5/artifacts/test"


def post(client: Any, action: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post(f"{TEST_API}/{action}", body, format="json")
    assert response.status_code == status, response.content
    return dict(response.json())


def model_or_judge(messages: Messages) -> str:
    """Target turns get an echo; the judge (recognized by its system prompt) gets a verdict."""
    if "evaluator" in str(messages[0].get("content", "")):
        return json.dumps(
            {
                "criteria": [
                    {"name": "accuracy", "score": 0.9, "feedback": "Right."},
                    {"name": "tone", "score": 0.5, "feedback": "Flat."},
                ],
                "feedback": "Accurate but flat.",
            }
        )
    return echo(messages)


def make_benchmark(research: Any, server: FakeModel, *, turns: int, timeout_s: float = 10) -> Any:
    return factories.make_benchmark(
        department=research,
        entries=1,
        turns=turns,
        target={
            "kind": "openai",
            "model": "fake-model",
            "base_url": server.base_url,
            "timeout_s": timeout_s,
            "max_retries": 1,
        },
    )


def start_and_run(client: Any, benchmark: Any) -> tuple[str, str, str]:
    test_id = post(client, "start", {"benchmark_id": str(benchmark.pk)})["test_id"]
    claimed = post(client, "next", {"test_id": test_id})
    ids = {
        "test_id": test_id,
        "test_invocation_id": claimed["invocation_id"],
        "run_id": claimed["run_id"],
    }
    ran = post(client, "run", ids)
    assert ran == {
        "test_id": test_id,
        "invocation_id": claimed["invocation_id"],
        "run_id": claimed["run_id"],
    }
    return test_id, claimed["invocation_id"], claimed["run_id"]


def invocation_in_get(client: Any, test_id: str, invocation_id: str) -> dict[str, Any]:
    body = post(client, "get", {"test_id": test_id})
    return next(item for item in body["invocations"] if item["id"] == invocation_id)


def test_a_worker_replays_and_the_ai_judge_grades(
    celery_worker_factory: Callable[..., WorkerProcess],
    fake_model: FakeModel,
    operator: Any,
    research: Any,
    client_for: Any,
    settings: Any,
) -> None:
    settings.JUDGE_MODEL = "judge-model"  # so end creates an "ai" grade, as the worker will
    fake_model.answer = model_or_judge
    celery_worker_factory(JUDGE_MODEL="judge-model", JUDGE_BASE_URL=fake_model.base_url)
    client = client_for(operator)
    benchmark = make_benchmark(research, fake_model, turns=3)

    test_id, invocation_id, run_id = start_and_run(client, benchmark)

    replayed = wait_for(
        lambda: (
            (item := invocation_in_get(client, test_id, invocation_id))["status"] == "replayed"
            and item
        ),
        timeout=60,
        what="the replay to finish",
    )
    assert replayed["steps_count"] == 3
    assert replayed["error"] in ("", None)
    assert set(fake_model.user_agents[:3]) == {"replaybench"}
    steps = list(
        ReplayStep.objects.filter(invocation__pk=invocation_id)
        .order_by("turn")
        .values_list("turn", "output", "reference")
    )
    assert steps == [
        (1, "Echo: Question 1?", "Answer 1."),
        (2, "Echo: Question 2?", "Answer 2."),
        (3, "Echo: Question 3?", "Answer 3."),
    ]
    # Auto-regressive: the worker sent the model's own earlier answers.
    last_turn = fake_model.chat_requests()[2]["messages"]
    assert [m["content"] for m in last_turn if m["role"] == "assistant"] == [
        "Echo: Question 1?",
        "Echo: Question 2?",
    ]

    ended = post(
        client,
        "end",
        {"test_id": test_id, "test_invocation_id": invocation_id, "run_id": run_id, "grade": True},
    )
    assert ended["grade_id"]
    assert ended["score"] is None

    graded = wait_for(
        lambda: (
            (item := invocation_in_get(client, test_id, invocation_id))["grade"]
            and item["grade"]["status"] == "done"
            and item["grade"]
        ),
        timeout=60,
        what="the AI grade",
    )
    assert graded["id"] == ended["grade_id"]
    assert graded["source"] == "ai"
    # (3 * 0.9 + 1 * 0.5) / 4 = 0.8 >= the rubric's 0.7
    assert graded["score"] == pytest.approx(0.8)
    assert graded["passed"] is True
    assert graded["feedback"] == "Accurate but flat."
    judge_request = fake_model.chat_requests()[3]
    assert judge_request["model"] == "judge-model"
    assert "Reference: Answer 2." in judge_request["messages"][1]["content"]
    test = Test.objects.get(pk=test_id)
    assert (test.status, test.graded_runs, test.passed_runs) == (Test.Status.COMPLETED, 1, 1)
    # The only run is done, so the test is completed and next says so.
    assert post(client, "next", {"test_id": test_id}, status=409)["detail"]


def test_stop_during_a_slow_replay_halts_at_the_next_turn(
    celery_worker: WorkerProcess,
    fake_model: FakeModel,
    operator: Any,
    research: Any,
    client_for: Any,
) -> None:
    fake_model.delay_s = 0.5
    client = client_for(operator)
    benchmark = make_benchmark(research, fake_model, turns=8)

    test_id, invocation_id, run_id = start_and_run(client, benchmark)
    wait_for(
        lambda: TestInvocation.objects.get(pk=invocation_id).steps_count >= 1,
        timeout=30,
        what="the first turn",
    )
    stopped = post(client, "stop", {"invocation_id": invocation_id})
    assert stopped["success"] is True

    wait_for(
        lambda: f"Invocation {invocation_id} stopped" in celery_worker.log(),
        timeout=30,
        what="the worker to notice the stop",
    )
    invocation = TestInvocation.objects.get(pk=invocation_id)
    assert invocation.status == TestInvocation.Status.STOPPED
    assert invocation.ended_at is not None
    steps = list(ReplayStep.objects.filter(invocation__pk=invocation_id).order_by("turn"))
    assert 1 <= len(steps) < 8
    assert len(steps) == invocation.steps_count
    # No step was written after the stop, and at most the in-flight turn was still sent.
    assert all(step.created_at <= invocation.ended_at for step in steps)
    assert len(fake_model.chat_requests()) <= len(steps) + 1
    assert TestRun.objects.get(pk=run_id).status == TestRun.Status.STOPPED
    assert Test.objects.get(pk=test_id).status == Test.Status.STOPPED
    assert post(client, "next", {"test_id": test_id}, status=409)["detail"]


def test_a_killed_worker_leaves_a_run_the_reaper_gives_back(
    celery_worker_factory: Callable[..., WorkerProcess],
    fake_model: FakeModel,
    operator: Any,
    research: Any,
    client_for: Any,
    settings: Any,
) -> None:
    settings.REPLAY_HEARTBEAT_TIMEOUT = 2
    fake_model.delay_s = 1.0
    worker = celery_worker_factory(REPLAY_HEARTBEAT_TIMEOUT="2")
    client = client_for(operator)
    benchmark = make_benchmark(research, fake_model, turns=6)

    test_id, invocation_id, run_id = start_and_run(client, benchmark)
    wait_for(
        lambda: TestInvocation.objects.get(pk=invocation_id).steps_count >= 1,
        timeout=30,
        what="the first turn",
    )
    worker.kill()

    # The worker's heartbeat stops with it; once stale, the reaper fails the invocation.
    assert TestInvocation.objects.get(pk=invocation_id).status == TestInvocation.Status.RUNNING
    wait_for(lambda: reap_stale_invocations() == 1, timeout=30, what="the reaper")

    invocation = TestInvocation.objects.get(pk=invocation_id)
    assert invocation.status == TestInvocation.Status.FAILED
    assert invocation.error.startswith("worker lost: heartbeat stale since")
    run = TestRun.objects.get(pk=run_id)
    assert (run.status, run.attempts) == (TestRun.Status.PENDING, 1)
    test = Test.objects.get(pk=test_id)
    assert test.current_invocation_id is None
    assert test.status == Test.Status.RUNNING

    # The run is claimed again, with the attempt counted, and a new worker finishes it.
    again = post(client, "next", {"test_id": test_id})
    assert again["run_id"] == run_id
    assert again["invocation_id"] != invocation_id
    assert TestRun.objects.get(pk=run_id).attempts == 2
    fake_model.delay_s = 0
    celery_worker_factory()
    post(
        client,
        "run",
        {"test_id": test_id, "test_invocation_id": again["invocation_id"], "run_id": run_id},
    )
    wait_for(
        lambda: (
            TestInvocation.objects.get(pk=again["invocation_id"]).status
            == TestInvocation.Status.REPLAYED
        ),
        timeout=60,
        what="the second attempt",
    )
    assert ReplayStep.objects.filter(invocation_id=again["invocation_id"]).count() == 6
