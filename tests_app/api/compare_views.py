"""compare: 2 to 5 tests of one benchmark with paired statistics."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tests_app.api import compare_serializers as s
from tests_app.api import operations
from tests_app.api.authentication import actor_from_request
from tests_app.api.base import error_responses, parse_body


class CompareActions:
    @extend_schema(
        summary="Compare Tests",
        description=(
            "Compare 2 to 5 tests of one benchmark, the first being the baseline: each test's "
            "figures, each candidate's paired deltas with intervals and p-values, and a page "
            "of entries with their change. 400 for a wrong number of tests, a repeated one or "
            "tests of different benchmarks; 404 for a test the caller cannot see."
        ),
        request=s.CompareTestInputSerializer,
        responses={200: s.CompareTestResponseSerializer, **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def compare(self, request: Request) -> Response:
        data = parse_body(s.CompareTestInputSerializer, request)
        return Response(operations.compare(actor_from_request(request), data))
