"""run_all and retry: the workers drive a whole test; failed runs go back to pending."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tests_app.api import operations
from tests_app.api import run_all_serializers as s
from tests_app.api.authentication import actor_from_request
from tests_app.api.base import error_responses, parse_body


class RunAllActions:
    @extend_schema(
        summary="Run All Test",
        description=(
            "The workers claim, replay and end every pending run of the test (as the caller, "
            "through next, run and end), at most concurrency at once, grading each unless grade "
            "is none, until no run is pending, max_runs runs were claimed or the test is "
            "stopped; agents may claim alongside. Follow it on the websocket (run_all.started, "
            "the run events, run_all.finished) or with get. 409 when a run-all already drives "
            "the test (code run_all_active) or the test is stopped, completed or archived."
        ),
        request=s.RunAllTestInputSerializer,
        responses={
            200: s.RunAllTestResponseSerializer,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    @action(detail=False, methods=["post"])
    def run_all(self, request: Request) -> Response:
        data = parse_body(s.RunAllTestInputSerializer, request)
        return Response(operations.run_all(actor_from_request(request), data))

    @extend_schema(
        summary="Retry Test",
        description=(
            "Put the test's failed (and, if asked, stopped) runs back to pending, keeping their "
            "invocations as history; a completed test goes back to running. 409 for a stopped "
            "or archived test."
        ),
        request=s.RetryTestInputSerializer,
        responses={
            200: s.RetryTestResponseSerializer,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    @action(detail=False, methods=["post"])
    def retry(self, request: Request) -> Response:
        data = parse_body(s.RetryTestInputSerializer, request)
        return Response(operations.retry(actor_from_request(request), data))
