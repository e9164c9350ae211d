"""run_all with real Celery workers on Redis and PostgreSQL: the workers drive a whole test to
its end with AI grades, and a worker killed mid-run-all leaves nothing the sweep does not recover.

The target and the judge are two fake models on loopback (tests/fake_model.py), so that what the
target saw at once can be told apart from the judge's calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import factories
from tests.fake_model import FakeModel, Messages
from tests.integration.conftest import WorkerProcess, wait_for
from tests_app.models import Grade, RunAll, Test, TestInvocation, TestRun
from tests_app.services.sweep import sweep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TEST_API = "/api/v5/artifacts/test"
WAIT_S = 120


def verdict(messages: Messages) -> str:
    return json.dumps(
        {
            "criteria": [
                {"name": "accuracy", "score": 0.9, "feedback": "Right."},
                {"name": "tone", "score": 0.5, "feedback": "Flat."},
            ],
            "feedback": "Accurate but flat.",
        }
    )


@pytest.fixture
def judge_model() -> Iterator[FakeModel]:
    server = FakeModel().start()
    server.answer = verdict
    yield server
    server.stop()


def benchmark_on(research: Any, target: FakeModel, *, entries: int, turns: int) -> Any:
    return factories.make_benchmark(
        department=research,
        entries=entries,
        turns=turns,
        target={
            "kind": "openai",
            "model": "fake-model",
            "base_url": target.base_url,
            "timeout_s": 10,
            "max_retries": 1,
        },
    )


def post(client: Any, action: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{TEST_API}/{action}", body, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def finished_and_graded(test_id: str) -> bool:
    test = Test.objects.get(pk=test_id)
    return test.status == Test.Status.COMPLETED and test.pending_grades == 0


def assert_every_run_completed_with_an_ai_grade(test_id: str, runs: int) -> None:
    test = Test.objects.get(pk=test_id)
    assert (test.completed_runs, test.graded_runs, test.passed_runs) == (runs, runs, runs)
    assert set(TestRun.objects.filter(test=test).values_list("status", flat=True)) == {"completed"}
    # (3 * 0.9 + 1 * 0.5) / 4 = 0.8 >= the rubric's 0.7
    scores = TestRun.objects.filter(test=test).values_list("score", flat=True)
    assert all(score == pytest.approx(0.8) for score in scores)
    done = Grade.objects.filter(invocation__test=test, status=Grade.Status.DONE)
    assert done.count() == runs
    assert set(done.values_list("source", flat=True)) == {"ai"}


def test_a_run_all_drives_a_test_to_completion_with_ai_grades(
    celery_worker_factory: Callable[..., WorkerProcess],
    fake_model: FakeModel,
    judge_model: FakeModel,
    operator: Any,
    research: Any,
    client_for: Any,
    settings: Any,
) -> None:
    settings.JUDGE_MODEL = "judge-model"
    fake_model.delay_s = 0.2
    celery_worker_factory(JUDGE_MODEL="judge-model", JUDGE_BASE_URL=judge_model.base_url)
    client = client_for(operator)
    benchmark = benchmark_on(research, fake_model, entries=5, turns=2)
    test_id = post(client, "start", {"benchmark_id": str(benchmark.pk)})["test_id"]

    started = post(client, "run_all", {"test_id": test_id, "concurrency": 2})

    assert (started["status"], started["concurrency"], started["grader"]) == ("active", 2, "ai")
    wait_for(lambda: finished_and_graded(test_id), timeout=WAIT_S, what="the run-all to finish")
    assert_every_run_completed_with_an_ai_grade(test_id, 5)
    # Two replays at most were talking to the target at any moment.
    assert fake_model.stats()["max_in_flight"] <= 2
    assert len(fake_model.chat_requests()) == 10
    assert len(judge_model.chat_requests()) == 5
    run_all = wait_for(
        lambda: RunAll.objects.filter(pk=started["run_all_id"], status="finished").first(),
        timeout=WAIT_S,
        what="the run-all's last tick",
    )
    assert run_all.finish_reason == "completed"
    invocations = TestInvocation.objects.filter(test_id=test_id)
    assert {(i.status, i.actor_id, i.run_all_id) for i in invocations} == {
        ("ended", operator.pk, run_all.pk)
    }
    # get says the same as the rows.
    detail = post(client, "get", {"test_id": test_id})
    assert detail["status"] == "completed"
    assert detail["status_summary"]["graded"] == 5


def test_a_worker_killed_mid_run_all_is_recovered_by_the_sweep(
    celery_worker_factory: Callable[..., WorkerProcess],
    fake_model: FakeModel,
    judge_model: FakeModel,
    operator: Any,
    research: Any,
    client_for: Any,
    settings: Any,
) -> None:
    settings.JUDGE_MODEL = "judge-model"
    # The sweep runs in this process: it must see the dead worker's heartbeats as stale, and its
    # lost replays, grades and ticks as waiting, soon enough for a test.
    settings.REPLAY_HEARTBEAT_TIMEOUT = 2
    settings.REPLAY_START_TIMEOUT = 3
    settings.GRADE_TIMEOUT = 5
    settings.RUN_ALL_STALL_TIMEOUT = 2
    judge_env = {"JUDGE_MODEL": "judge-model", "JUDGE_BASE_URL": judge_model.base_url}
    fake_model.delay_s = 1.0
    worker = celery_worker_factory(REPLAY_HEARTBEAT_TIMEOUT="2", **judge_env)
    client = client_for(operator)
    benchmark = benchmark_on(research, fake_model, entries=4, turns=4)
    test_id = post(client, "start", {"benchmark_id": str(benchmark.pk)})["test_id"]

    started = post(client, "run_all", {"test_id": test_id, "concurrency": 2})
    wait_for(
        lambda: TestInvocation.objects.filter(test_id=test_id, steps_count__gte=1).exists(),
        timeout=WAIT_S,
        what="a replay under way",
    )
    worker.kill()
    interrupted = set(
        TestInvocation.objects.filter(test_id=test_id, status="running").values_list(
            "pk", flat=True
        )
    )
    assert interrupted

    # A new worker, and the sweep as the beat would run it: nothing else moves the run-all on.
    fake_model.delay_s = 0
    celery_worker_factory(REPLAY_HEARTBEAT_TIMEOUT="2", **judge_env)

    def swept_until_done() -> bool:
        sweep()
        return finished_and_graded(test_id)

    wait_for(swept_until_done, timeout=WAIT_S, interval=1, what="the test to complete")

    assert_every_run_completed_with_an_ai_grade(test_id, 4)
    for invocation_id in interrupted:
        lost = TestInvocation.objects.get(pk=invocation_id)
        assert lost.status == TestInvocation.Status.FAILED
        assert lost.error.startswith("worker lost")
        # Its run was claimed again by the same run-all and completed.
        retried = TestInvocation.objects.filter(run_id=lost.run_id).exclude(pk=lost.pk)
        assert {(i.status, i.run_all_id) for i in retried} == {("ended", lost.run_all_id)}
    run_all = wait_for(
        lambda: RunAll.objects.filter(pk=started["run_all_id"], status="finished").first(),
        timeout=WAIT_S,
        what="the run-all's last tick",
    )
    assert run_all.finish_reason == "completed"
