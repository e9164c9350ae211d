"""Migration 0006: each benchmark's target JSON becomes a Target row, and old tests get it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("tests_app", "0005_invocation_enqueued_at")
AFTER = ("tests_app", "0006_targets")


@pytest.fixture
def executor(transactional_db: Any) -> Iterator[MigrationExecutor]:
    executor = MigrationExecutor(connection)
    try:
        yield executor
    finally:
        # Back to the latest schema for the tests that follow.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def migrate(executor: MigrationExecutor, target: tuple[str, str]) -> Any:
    executor.loader.build_graph()
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def test_benchmark_targets_become_rows_and_tests_keep_theirs(executor: MigrationExecutor) -> None:
    old = migrate(executor, BEFORE)
    department_model = old.get_model("tests_app", "Department")
    research = department_model.objects.create(name="Research", slug="research")
    support = department_model.objects.create(name="Support", slug="support")
    rubric = old.get_model("tests_app", "Rubric").objects.create(name="Rubric")
    eval_model = old.get_model("tests_app", "Eval")
    research_eval = eval_model.objects.create(name="R", department=research, rubric=rubric)
    support_eval = eval_model.objects.create(name="S", department=support, rubric=rubric)
    local = {
        "kind": "openai",
        "model": "qwen2.5:7b",
        "base_url": "http://127.0.0.1:11434/v1",
        "api_key_env": "OLLAMA_KEY",
        "temperature": 0.2,
        "max_retries": 0,
    }
    benchmark_model = old.get_model("tests_app", "Benchmark")
    first = benchmark_model.objects.create(name="First", eval=research_eval, target=local)
    second = benchmark_model.objects.create(name="Second", eval=research_eval, target=dict(local))
    offline = benchmark_model.objects.create(name="Offline", eval=research_eval, target={})
    elsewhere = benchmark_model.objects.create(name="Elsewhere", eval=support_eval, target=local)
    old_test = old.get_model("tests_app", "Test").objects.create(
        benchmark=first, eval=research_eval, department=research
    )

    new = migrate(executor, AFTER)

    target_model = new.get_model("tests_app", "Target")
    benchmarks = {
        benchmark.name: benchmark
        for benchmark in new.get_model("tests_app", "Benchmark").objects.select_related(
            "default_target"
        )
    }
    # One row per distinct configuration and department.
    assert target_model.objects.count() == 3
    assert benchmarks["First"].default_target_id == benchmarks["Second"].default_target_id
    assert benchmarks["Elsewhere"].default_target.department_id == support.pk
    assert benchmarks["Elsewhere"].default_target_id != benchmarks["First"].default_target_id
    migrated = benchmarks["First"].default_target
    assert (
        migrated.name,
        migrated.kind,
        migrated.model,
        migrated.base_url,
        migrated.api_key_env,
        migrated.temperature,
        migrated.max_retries,
        migrated.timeout_s,
    ) == (
        "qwen2.5:7b",
        "openai",
        "qwen2.5:7b",
        "http://127.0.0.1:11434/v1",
        "OLLAMA_KEY",
        0.2,
        0,
        60.0,
    )
    reference = benchmarks["Offline"].default_target
    assert (reference.kind, reference.name) == ("reference", "Reference (recorded answers)")

    test = new.get_model("tests_app", "Test").objects.get(pk=old_test.pk)
    assert test.target_id == migrated.pk
    assert test.target_snapshot == {
        "kind": "openai",
        "model": "qwen2.5:7b",
        "base_url": "http://127.0.0.1:11434/v1",
        "api_key_env": "OLLAMA_KEY",
        "temperature": 0.2,
        "max_tokens": None,
        "seed": None,
        "timeout_s": 60.0,
        "max_retries": 0,
        "id": str(migrated.pk),
        "name": "qwen2.5:7b",
        "price_in": None,
        "price_out": None,
    }

    # And back: the JSON comes back from the default target.
    old = migrate(executor, BEFORE)
    restored = old.get_model("tests_app", "Benchmark").objects.get(pk=second.pk)
    assert restored.target == {**local, "timeout_s": 60.0}
    assert old.get_model("tests_app", "Benchmark").objects.get(pk=offline.pk).target == {
        "kind": "reference"
    }
    assert elsewhere.pk
