"""The ``replaybench`` command line against a live daphne (its HTTP API and its websocket), with a
Celery worker for the tests it runs.

Commands run in this process through typer's test runner (environment and output captured),
except where the console script's exit code itself is under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import factories
from tests.fake_model import FakeModel
from tests.integration.daphne import (  # noqa: F401
    REPOSITORY,
    DaphneServer,
    daphne_server_fixture,
    free_port,
)
from tests_app.cli.main import app
from tests_app.models import Test, TestInvocation

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

ENTRIES = 8  # enough for a drop on every entry to be significant (Wilcoxon's exact p < 0.05)


def run_cli(server: DaphneServer, key: str, *args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(
        app,
        list(args),
        env={"REPLAYBENCH_URL": server.http_url, "REPLAYBENCH_API_KEY": key, "COLUMNS": "200"},
    )


def test_benchmarks_lists_what_the_key_may_see(
    daphne_server: DaphneServer, research: Any, support: Any, operator: Any
) -> None:
    mine = factories.make_benchmark(department=research, entries=2, name="Refunds v2")
    factories.make_benchmark(department=support, entries=1, name="Refunds elsewhere")
    _, key = factories.make_api_key(operator)

    table = run_cli(daphne_server, key, "benchmarks", "--search", "refunds")
    as_json = run_cli(daphne_server, key, "benchmarks", "--search", "refunds", "--json")

    assert table.exit_code == 0, table.output
    assert "Refunds v2" in table.stdout
    assert str(mine.pk) in table.stdout
    assert "Refunds elsewhere" not in table.stdout
    assert as_json.exit_code == 0, as_json.output
    page = json.loads(as_json.stdout)
    assert page["total_count"] == 1
    assert [(item["id"], item["entries"]) for item in page["benchmarks"]] == [(str(mine.pk), 2)]


def test_compare_prints_the_paired_deltas(
    daphne_server: DaphneServer, research: Any, viewer: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=3)
    baseline = factories.make_graded_test(benchmark, [[(0.9, True)], [(0.8, True)], [(1.0, True)]])
    candidate = factories.make_graded_test(
        benchmark, [[(0.4, False)], [(0.8, True)], [(1.0, True)]]
    )
    _, key = factories.make_api_key(viewer)

    as_json = run_cli(daphne_server, key, "compare", str(baseline.pk), str(candidate.pk), "--json")
    table = run_cli(daphne_server, key, "compare", str(baseline.pk), str(candidate.pk))

    assert as_json.exit_code == 0, as_json.output
    comparison = json.loads(as_json.stdout)
    assert comparison["baseline_test_id"] == str(baseline.pk)
    [delta] = comparison["deltas"]
    assert delta["test_id"] == str(candidate.pk)
    assert delta["entries_compared"] == 3
    assert delta["mean_score_delta"] == pytest.approx(-0.5 / 3)
    assert delta["regressions"] == 1
    assert table.exit_code == 0, table.output
    assert "candidate against baseline" in table.stdout
    assert "-0.1667" in table.stdout


def test_watch_reports_a_finished_test(
    daphne_server: DaphneServer, research: Any, viewer: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=2)
    test = factories.make_graded_test(benchmark, [[(1.0, True)], [(0.5, False)]])
    _, key = factories.make_api_key(viewer)

    watched = run_cli(daphne_server, key, "watch", str(test.pk), "--json")

    assert watched.exit_code == 0, watched.output
    summary = json.loads(watched.stdout)
    assert summary["test_id"] == str(test.pk)
    assert summary["status"] == "completed"
    assert summary["graded"] == 2
    assert summary["mean_score"] == pytest.approx(0.75)
    assert summary["pass_rate"] == pytest.approx(0.5)


def test_errors_exit_2_with_the_servers_sentence(
    daphne_server: DaphneServer, research: Any, outsider: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1)
    first, second = (factories.make_graded_test(benchmark, [[(1.0, True)]]) for _ in range(2))
    _, key = factories.make_api_key(outsider)

    hidden = run_cli(daphne_server, key, "compare", str(first.pk), str(second.pk))
    not_a_key = run_cli(daphne_server, "abc.def", "benchmarks")
    usage = run_cli(daphne_server, key, "gate", "--benchmark", str(benchmark.pk))

    assert hidden.exit_code == 2
    assert "not_found" in hidden.stderr
    assert f"No test with id {first.pk} is visible to you." in hidden.stderr
    assert not_a_key.exit_code == 2
    assert "not_authenticated" in not_a_key.stderr
    assert usage.exit_code == 2
    assert "--target" in usage.stderr


def test_the_console_script_exits_2_when_the_server_cannot_be_reached() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    environment = {
        "PATH": "/usr/bin:/bin",
        "REPLAYBENCH_URL": unreachable,
        "REPLAYBENCH_API_KEY": "abc.def",
    }
    without_key = {key: value for key, value in environment.items() if key != "REPLAYBENCH_API_KEY"}

    def replaybench(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests_app.cli", *args],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = replaybench(environment, "benchmarks")
    no_key = replaybench(without_key, "benchmarks")
    gate = replaybench(
        environment, "gate", "--benchmark", "b", "--target", "t", "--baseline", "x", "--json"
    )

    assert refused.returncode == 2
    assert f"Cannot reach {unreachable}" in refused.stderr
    assert refused.stdout == ""
    assert no_key.returncode == 2
    assert "REPLAYBENCH_API_KEY" in no_key.stderr
    assert gate.returncode == 2
    assert gate.stdout == ""


# --- run_all: start --run-all --wait and the gate ----------------------------------------------


def fake_model_target(department: Any, fake_model: FakeModel) -> Any:
    # Its answers ("Echo: ...") differ from the recorded ones: the offline grade scores them low.
    return factories.target_from_config(
        department,
        {"kind": "openai", "model": "fake-model", "base_url": fake_model.base_url},
        name="echo model",
    )


def test_start_runs_all_and_waits_for_the_grades(
    daphne_server: DaphneServer, celery_worker: Any, research: Any, operator: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=3, turns=2)
    _, key = factories.make_api_key(operator)

    started = run_cli(
        daphne_server,
        key,
        "start",
        str(benchmark.pk),
        "--run-all",
        "--concurrency",
        "2",
        "--wait",
        "--json",
    )

    assert started.exit_code == 0, started.output
    answer = json.loads(started.stdout)
    test = Test.objects.get(pk=answer["test_id"])
    assert test.status == Test.Status.COMPLETED
    assert answer["summary"]["status"] == "completed"
    assert answer["summary"]["graded"] == 3
    # The reference target answers with the recorded replies: the offline grade is perfect.
    assert answer["summary"]["mean_score"] == pytest.approx(1.0)
    assert TestInvocation.objects.filter(test=test, status="ended").count() == 3


def test_gate_exits_1_on_a_regression(
    daphne_server: DaphneServer,
    celery_worker: Any,
    fake_model: FakeModel,
    research: Any,
    operator: Any,
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=ENTRIES, turns=1)
    baseline = factories.make_graded_test(benchmark, [[(1.0, True)]] * ENTRIES)
    target = fake_model_target(research, fake_model)
    _, key = factories.make_api_key(operator)

    gated = run_cli(
        daphne_server,
        key,
        "gate",
        "--benchmark",
        str(benchmark.pk),
        "--target",
        str(target.pk),
        "--baseline",
        str(baseline.pk),
        "--no-new-failures",
        "--json",
    )

    assert gated.exit_code == 1, gated.output
    verdict = json.loads(gated.stdout)
    assert verdict["worse"] is True
    assert verdict["exit_code"] == 1
    assert verdict["baseline_test_id"] == str(baseline.pk)
    candidate = Test.objects.get(pk=verdict["candidate_test_id"])
    assert candidate.target_id == target.pk
    assert verdict["entries_compared"] == ENTRIES
    assert verdict["mean_score_delta"] < -0.02
    assert verdict["p_value"] < 0.05
    assert len(verdict["new_failures"]) == ENTRIES
    assert len(verdict["reasons"]) == 2
    assert len(fake_model.chat_requests()) == ENTRIES


def test_gate_exits_0_when_the_candidate_is_not_worse(
    daphne_server: DaphneServer, celery_worker: Any, research: Any, operator: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=ENTRIES, turns=1)
    # A baseline a little worse than what the reference target will score (1.0 everywhere).
    baseline = factories.make_graded_test(benchmark, [[(0.9, True)]] * ENTRIES)
    _, key = factories.make_api_key(operator)

    gated = run_cli(
        daphne_server,
        key,
        "gate",
        "--benchmark",
        str(benchmark.pk),
        "--target",
        str(benchmark.default_target_id),
        "--baseline",
        str(baseline.pk),
        "--no-new-failures",
    )

    assert gated.exit_code == 0, gated.output
    assert "not worse than the baseline" in gated.stdout
    assert "candidate against baseline" in gated.stdout
