"""judge/agreement: how the LLM judge agrees with human regrades."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tests_app.api import judge_serializers as s
from tests_app.api.base import error_responses, parse_body
from tests_app.selectors.agreement import judge_agreement


class JudgeViewSet(viewsets.ViewSet):
    @extend_schema(
        summary="Judge Agreement",
        description=(
            "Per rubric and judge model, over the caller's departments: pairs of a human "
            "regrade and an AI grade of the same invocation, Cohen's kappa on passed, the mean "
            "absolute score difference and Spearman's rho; null figures with the reason where "
            "pairs are too few."
        ),
        request=s.JudgeAgreementInputSerializer,
        responses={200: s.JudgeAgreementResponseSerializer, **error_responses(400, 401, 404)},
    )
    @action(detail=False, methods=["post"])
    def agreement(self, request: Request) -> Response:
        data = parse_body(s.JudgeAgreementInputSerializer, request)
        report = judge_agreement(user=request.user, rubric_id=data["rubric_id"])
        return Response(s.JudgeAgreementResponseSerializer(report).data)
