"""Input and output shapes of judge/agreement (docs/judges.md)."""

from __future__ import annotations

from rest_framework import serializers

from tests_app.api.base import StrictSerializer
from tests_app.api.lifecycle_serializers import StrictUUIDField
from tests_app.selectors.agreement import MIN_PAIRS


class JudgeAgreementInputSerializer(StrictSerializer):
    rubric_id = StrictUUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Only this rubric (one an eval of the caller's departments uses); null for all.",
    )


class JudgeAgreementItemSerializer(serializers.Serializer):
    rubric_id = serializers.UUIDField()
    rubric_name = serializers.CharField()
    judge_model = serializers.CharField(help_text="The judge model named in the AI grades.")
    pairs = serializers.IntegerField(
        help_text="Invocations with both a human regrade and an AI grade of this judge model."
    )
    kappa = serializers.FloatField(
        allow_null=True, help_text="Cohen's kappa of the passed verdicts (-1..1)."
    )
    score_mae = serializers.FloatField(
        allow_null=True, help_text="Mean absolute difference of the scores (0..1)."
    )
    spearman = serializers.FloatField(
        allow_null=True, help_text="Spearman's rank correlation of the scores (-1..1)."
    )
    reason = serializers.CharField(
        allow_null=True,
        help_text=(
            f"Why figures are null: fewer than {MIN_PAIRS} pairs, or a figure undefined for "
            "these pairs."
        ),
    )


class JudgeAgreementResponseSerializer(serializers.Serializer):
    items = JudgeAgreementItemSerializer(many=True)
