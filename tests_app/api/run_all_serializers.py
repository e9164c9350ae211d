"""Input and output shapes of run_all and retry (issue 20; docs/run-all.md says what they do)."""

from __future__ import annotations

from rest_framework import serializers

from tests_app.api.base import StrictSerializer
from tests_app.api.lifecycle_serializers import StrictIntegerField, StrictUUIDField
from tests_app.services.retrying import DEFAULT_STATUSES, RETRYABLE_STATUSES
from tests_app.services.run_all import (
    DEFAULT_CONCURRENCY,
    GRADE_CHOICES,
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
)


class RunAllTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test whose pending runs the workers run.")
    concurrency = StrictIntegerField(
        required=False,
        default=DEFAULT_CONCURRENCY,
        min_value=MIN_CONCURRENCY,
        max_value=MAX_CONCURRENCY,
        help_text=(
            f"Replays in flight at once, {MIN_CONCURRENCY}..{MAX_CONCURRENCY} "
            f"(default {DEFAULT_CONCURRENCY})."
        ),
    )
    grade = serializers.ChoiceField(
        choices=list(GRADE_CHOICES),
        required=False,
        default="ai",
        help_text=(
            "ai (default): each replay is ended with a grade from the configured judge, or from "
            "the offline reference grader (not an AI) when no judge is configured; none: ended "
            "ungraded."
        ),
    )
    max_runs = StrictIntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        help_text=(
            "At most this many distinct runs are claimed (a run given back after a lost worker "
            "counts once). Required for an infinite-mode test; null: every pending run."
        ),
    )


class RunAllTestResponseSerializer(serializers.Serializer):
    test_id = serializers.UUIDField()
    status = serializers.ChoiceField(
        choices=["active", "finished", "stopped"],
        help_text="The run-all's status: active while the workers drive the test.",
    )
    concurrency = serializers.IntegerField()
    run_all_id = serializers.UUIDField(help_text="The run-all; run_all.* events carry it.")
    grader = serializers.ChoiceField(
        choices=["ai", "reference"],
        allow_null=True,
        help_text=(
            "Who grades: ai (the configured LLM judge), reference (the offline reference "
            "grader, not an AI) or null (grade none)."
        ),
    )
    max_runs = serializers.IntegerField(allow_null=True)


class RetryTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test whose runs go back to pending.")
    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=list(RETRYABLE_STATUSES)),
        required=False,
        min_length=1,
        default=list(DEFAULT_STATUSES),
        help_text="The runs to retry, by status: failed (default) and/or stopped.",
    )


class RetryTestResponseSerializer(serializers.Serializer):
    requeued_count = serializers.IntegerField(
        help_text="Runs put back to pending; their earlier invocations stay as history."
    )
