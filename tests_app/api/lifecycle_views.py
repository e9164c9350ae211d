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
from tests_app.api import operations
from tests_app.api.authentication import actor_from_request
from tests_app.api.base import error_responses, parse_body
from tests_app.services.archiving import set_archived


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
        return Response(operations.start(actor_from_request(request), data))

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
        return Response(operations.next_run(actor_from_request(request), data))

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
        return Response(operations.run(actor_from_request(request), data))

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
        return Response(operations.end(actor_from_request(request), data))

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
        return Response(operations.stop(actor_from_request(request), data))

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
        return Response(operations.get(actor_from_request(request), data))

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
        return Response(operations.benchmark_search(actor_from_request(request), data))
