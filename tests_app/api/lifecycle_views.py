"""start, next, run, end, stop, get, archive; and benchmark search.

Each action only wires: an input serializer parses the body, one service or selector does the
work, an output serializer renders the result. Errors are raised and rendered by the one handler.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tests_app.api import lifecycle_serializers as s
from tests_app.api.authentication import actor_from_request
from tests_app.api.base import error_responses, parse_body
from tests_app.selectors.benchmarks import search_benchmarks
from tests_app.selectors.test_detail import get_test_detail
from tests_app.services.archiving import set_archived
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.running import request_replay
from tests_app.services.starting import start_test
from tests_app.services.stopping import stop_invocation


class LifecycleActions:
    @extend_schema(
        summary="Start Test",
        description=(
            "Create a new test of a benchmark with its first cycle of runs, against target_id "
            "or the benchmark's default target; the test keeps a snapshot of the target."
        ),
        request=s.StartTestInputSerializer,
        responses={200: s.StartTestResponseSerializer, **error_responses(400, 401, 403, 404)},
    )
    @action(detail=False, methods=["post"])
    def start(self, request: Request) -> Response:
        data = parse_body(s.StartTestInputSerializer, request)
        test = start_test(
            actor=actor_from_request(request),
            benchmark_id=data["benchmark_id"],
            infinite_mode=data["infinite_mode"],
            target_id=data["target_id"],
        )
        return Response(s.StartTestResponseSerializer({"test_id": test.pk}).data)

    @extend_schema(
        summary="Next Test",
        description=(
            "Claim the next pending run of a test and open an invocation on it. 409 when no run "
            "is pending (code test_completed) or the test is stopped or archived."
        ),
        request=s.NextTestInputSerializer,
        responses={200: s.NextTestResponseSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    @action(detail=False, methods=["post"])
    def next(self, request: Request) -> Response:
        data = parse_body(s.NextTestInputSerializer, request)
        claim = claim_next_run(actor=actor_from_request(request), test_id=data["test_id"])
        # The shape of NextTestResponseSerializer, built directly: next is the hottest endpoint.
        return Response(
            {
                "invocation_id": str(claim.invocation.pk),
                "run_id": str(claim.run.pk),
                "current_run": claim.run.ordinal,
                "total_runs": claim.total_runs,
                "cycle": claim.run.cycle,
            }
        )

    @extend_schema(
        summary="Run Test",
        description=(
            "Run one auto-regressive replay. Returns immediately; progress via the websocket "
            "and get. Calling it twice for one invocation is a 409."
        ),
        request=s.RunTestInputSerializer,
        responses={200: s.RunTestResponseSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    @action(detail=False, methods=["post"])
    def run(self, request: Request) -> Response:
        data = parse_body(s.RunTestInputSerializer, request)
        invocation = request_replay(
            actor=actor_from_request(request),
            test_id=data["test_id"],
            invocation_id=data["test_invocation_id"],
            run_id=data["run_id"],
        )
        # The shape of RunTestResponseSerializer, built directly (as for next).
        return Response(
            {
                "test_id": str(invocation.test_id),
                "invocation_id": str(invocation.pk),
                "run_id": str(invocation.run_id),
            }
        )

    @extend_schema(
        summary="End Test",
        description=(
            "End a replayed invocation. grade=true: the judge grades it in the background and "
            "the response carries the pending grade's id. score/passed/feedback: your own grade. "
            "Neither: ended ungraded."
        ),
        request=s.EndTestInputSerializer,
        responses={200: s.EndTestResponseSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    @action(detail=False, methods=["post"])
    def end(self, request: Request) -> Response:
        data = parse_body(s.EndTestInputSerializer, request)
        result = end_invocation(
            actor=actor_from_request(request),
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
        return Response(
            s.EndTestResponseSerializer(
                {
                    "invocation_id": result.invocation.pk,
                    "grade_id": grade.pk if grade is not None else None,
                    "score": grade.score if finished and grade else None,
                    "passed": grade.passed if finished and grade else None,
                    "feedback": grade.feedback if finished and grade else None,
                }
            ).data
        )

    @extend_schema(
        summary="Stop Test",
        description=(
            "Stop an invocation and its test: a running replay halts before its next turn. "
            "Stopping something already finished answers success=false with a message."
        ),
        request=s.StopTestInputSerializer,
        responses={200: s.StopTestResponseSerializer, **error_responses(400, 401, 403, 404)},
    )
    @action(detail=False, methods=["post"])
    def stop(self, request: Request) -> Response:
        data = parse_body(s.StopTestInputSerializer, request)
        result = stop_invocation(
            actor=actor_from_request(request), invocation_id=data["invocation_id"]
        )
        return Response(
            s.StopTestResponseSerializer(
                {
                    "invocation_id": result.invocation.pk,
                    "success": result.success,
                    "message": result.message,
                }
            ).data
        )

    @extend_schema(
        summary="Get Test Artifact",
        description=(
            "The test with its runs and invocations (newest first, paged), status summary, "
            "entries and resources."
        ),
        request=s.GetTestInputSerializer,
        responses={200: s.GetTestArtifactResponseSerializer, **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"], url_path="get", url_name="get")
    def get_test(self, request: Request) -> Response:
        # Named get_test: a viewset method called "get" would answer every GET request.
        data = parse_body(s.GetTestInputSerializer, request)
        # The selector's data is already the documented shape, and orjson renders its ids and
        # timestamps: walking ~800 nested objects through GetTestArtifactResponseSerializer cost
        # more than the whole query budget.
        detail = get_test_detail(
            user=request.user,
            test_id=data["test_id"],
            runs_page_size=data.get("runs_page_size"),
            runs_page_offset=data.get("runs_page_offset"),
            wire=True,
        )
        return Response(detail)

    @extend_schema(
        summary="Archive Test Artifacts",
        description="Archive or unarchive tests by ids (at most 1000).",
        request=s.ArchiveTestInputSerializer,
        responses={200: s.ArchiveTestResponseSerializer, **error_responses(400, 401, 403)},
    )
    @action(detail=False, methods=["post"])
    def archive(self, request: Request) -> Response:
        data = parse_body(s.ArchiveTestInputSerializer, request)
        updated = set_archived(
            actor=actor_from_request(request),
            test_ids=data["test_ids"],
            archived=data["archived"],
        )
        return Response(s.ArchiveTestResponseSerializer({"updated_count": updated}).data)


class BenchmarkActions:
    @extend_schema(
        summary="Search Benchmarks",
        description="Find the benchmarks the caller may see (and start, as an operator).",
        request=s.BenchmarkSearchInputSerializer,
        responses={200: s.BenchmarkSearchResponseSerializer, **error_responses(400, 401)},
    )
    @action(detail=False, methods=["post"])
    def search(self, request: Request) -> Response:
        data = parse_body(s.BenchmarkSearchInputSerializer, request)
        page = search_benchmarks(
            user=request.user,
            search=data.get("search"),
            eval_ids=data.get("eval_ids"),
            department_ids=data.get("department_ids"),
            page_size=data["page_size"],
            page_offset=data["page_offset"],
        )
        return Response(
            s.BenchmarkSearchResponseSerializer(
                {"benchmarks": page.benchmarks, "total_count": page.total_count}
            ).data
        )
