"""What each operation does once its body is parsed: the service or selector it calls and the
body it answers. The REST views and the MCP tools both call these, so an operation's call and its
answer are written once and a tool answers exactly what its endpoint answers.

Each takes the caller and the validated body and returns plain data in the documented shape.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tests_app.actors import Actor
from tests_app.api import discovery_serializers as discovery_s
from tests_app.api import lifecycle_serializers as lifecycle_s
from tests_app.api import run_all_serializers as run_all_s
from tests_app.selectors.benchmarks import search_benchmarks
from tests_app.selectors.compare import compare_tests
from tests_app.selectors.search import search_tests
from tests_app.selectors.test_detail import get_test_detail
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.exporting import export_test
from tests_app.services.retrying import retry_runs
from tests_app.services.run_all import grader_name, start_run_all
from tests_app.services.running import request_replay
from tests_app.services.starting import start_test
from tests_app.services.stopping import stop_invocation

Body = dict[str, Any]


def benchmark_search(actor: Actor, data: Body) -> Any:
    page = search_benchmarks(
        user=actor.user,
        search=data.get("search"),
        eval_ids=data.get("eval_ids"),
        department_ids=data.get("department_ids"),
        page_size=data["page_size"],
        page_offset=data["page_offset"],
    )
    return lifecycle_s.BenchmarkSearchResponseSerializer(
        {"benchmarks": page.benchmarks, "total_count": page.total_count}
    ).data


def start(actor: Actor, data: Body) -> Any:
    test = start_test(
        actor=actor,
        benchmark_id=data["benchmark_id"],
        infinite_mode=data["infinite_mode"],
        target_id=data["target_id"],
    )
    return lifecycle_s.StartTestResponseSerializer({"test_id": test.pk}).data


def next_run(actor: Actor, data: Body) -> Body:
    claim = claim_next_run(actor=actor, test_id=data["test_id"])
    # The shape of NextTestResponseSerializer, built directly: next is the hottest endpoint.
    return {
        "invocation_id": str(claim.invocation.pk),
        "run_id": str(claim.run.pk),
        "current_run": claim.run.ordinal,
        "total_runs": claim.total_runs,
        "cycle": claim.run.cycle,
    }


def run(actor: Actor, data: Body) -> Body:
    invocation = request_replay(
        actor=actor,
        test_id=data["test_id"],
        invocation_id=data["test_invocation_id"],
        run_id=data["run_id"],
    )
    # The shape of RunTestResponseSerializer, built directly (as for next).
    return {
        "test_id": str(invocation.test_id),
        "invocation_id": str(invocation.pk),
        "run_id": str(invocation.run_id),
    }


def end(actor: Actor, data: Body) -> Any:
    result = end_invocation(
        actor=actor,
        test_id=data["test_id"],
        invocation_id=data["test_invocation_id"],
        run_id=data["run_id"],
        grade=data["grade"],
        score=data.get("score"),
        passed=data.get("passed"),
        feedback=data.get("feedback"),
    )
    grade = result.grade
    finished = grade is not None and grade.status == grade.Status.DONE
    return lifecycle_s.EndTestResponseSerializer(
        {
            "invocation_id": result.invocation.pk,
            "grade_id": grade.pk if grade is not None else None,
            "score": grade.score if finished and grade else None,
            "passed": grade.passed if finished and grade else None,
            "feedback": grade.feedback if finished and grade else None,
        }
    ).data


def stop(actor: Actor, data: Body) -> Any:
    result = stop_invocation(actor=actor, invocation_id=data["invocation_id"])
    return lifecycle_s.StopTestResponseSerializer(
        {
            "invocation_id": result.invocation.pk,
            "success": result.success,
            "message": result.message,
        }
    ).data


def get(actor: Actor, data: Body) -> Any:
    # The selector's data is already the documented shape, and orjson renders its ids and
    # timestamps: walking ~800 nested objects through GetTestArtifactResponseSerializer cost
    # more than the whole query budget.
    return get_test_detail(
        user=actor.user,
        test_id=data["test_id"],
        runs_page_size=data.get("runs_page_size"),
        runs_page_offset=data.get("runs_page_offset"),
        wire=True,
    )


def search(actor: Actor, data: Body) -> Any:
    return discovery_s.SearchTestResponseSerializer(search_tests(actor=actor, **data)).data


def export(actor: Actor, data: Body) -> Any:
    return discovery_s.ExportTestResponseSerializer(
        export_test(actor=actor, test_id=data["test_id"])
    ).data


def compare(actor: Actor, data: Body) -> Body:
    # Plain data in the documented shape, rendered by orjson as get's is (a test compares it
    # with CompareTestResponseSerializer's rendering).
    return asdict(compare_tests(user=actor.user, **data))


def run_all(actor: Actor, data: Body) -> Any:
    started = start_run_all(
        actor=actor,
        test_id=data["test_id"],
        concurrency=data["concurrency"],
        grade=data["grade"],
        max_runs=data["max_runs"],
    )
    return run_all_s.RunAllTestResponseSerializer(
        {
            "test_id": started.test_id,
            "status": started.status,
            "concurrency": started.concurrency,
            "run_all_id": started.pk,
            "grader": grader_name(started.grade),
            "max_runs": started.max_runs,
        }
    ).data


def retry(actor: Actor, data: Body) -> Any:
    requeued = retry_runs(actor=actor, test_id=data["test_id"], statuses=data["statuses"])
    return run_all_s.RetryTestResponseSerializer({"requeued_count": requeued}).data
