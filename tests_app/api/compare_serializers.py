"""Input and output shapes of compare (issue 19; docs/compare.md says what the figures mean)."""

from __future__ import annotations

from rest_framework import serializers

from tests_app.api.base import StrictSerializer
from tests_app.api.lifecycle_serializers import (
    LatencySerializer,
    RepetitionsSerializer,
    StrictIntegerField,
    StrictUUIDField,
    TokensSerializer,
    interval_field,
)
from tests_app.paging import MAX_PAGE_OFFSET
from tests_app.selectors.compare import (
    MAX_TESTS,
    MIN_TESTS,
    ONLY_CHOICES,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
)


class CompareTestInputSerializer(StrictSerializer):
    test_ids = serializers.ListField(
        child=StrictUUIDField(),
        min_length=MIN_TESTS,
        max_length=MAX_TESTS,
        help_text=(
            f"{MIN_TESTS} to {MAX_TESTS} tests of one benchmark, each once: the first is the "
            "baseline, the others are candidates."
        ),
    )
    only = serializers.ChoiceField(
        choices=ONLY_CHOICES,
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Only the entries whose change (first candidate against the baseline) is a "
            "regression (regressions), an improvement (improvements) or either (changed); "
            "null: every entry."
        ),
    )
    page_size = StrictIntegerField(
        required=False,
        default=PAGE_SIZE_DEFAULT,
        min_value=1,
        max_value=PAGE_SIZE_MAX,
        help_text=f"Entries per page, 1..{PAGE_SIZE_MAX} (default {PAGE_SIZE_DEFAULT}).",
    )
    page_offset = StrictIntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_PAGE_OFFSET,
        help_text="How many entries to skip (default 0).",
    )


class CompareTargetSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    model = serializers.CharField(help_text="As configured when the test started.")


class CompareTestItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    target = CompareTargetSerializer()
    status = serializers.CharField()
    total_runs = serializers.IntegerField(
        help_text="Runs compared (the current cycle's in infinite mode)."
    )
    graded = serializers.IntegerField()
    mean_score = serializers.FloatField(allow_null=True)
    mean_score_ci = interval_field("95% t interval of mean_score, entries as the unit")
    pass_rate = serializers.FloatField(allow_null=True)
    pass_rate_ci = interval_field("95% Wilson interval of pass_rate")
    repetitions = RepetitionsSerializer(allow_null=True)
    latency_ms = LatencySerializer(allow_null=True)
    tokens = TokensSerializer()
    cost = serializers.FloatField(allow_null=True)


class CompareDeltaSerializer(serializers.Serializer):
    test_id = serializers.UUIDField(help_text="The candidate, against the baseline.")
    entries_compared = serializers.IntegerField(help_text="Entries graded in both tests.")
    mean_score_delta = serializers.FloatField(
        allow_null=True, help_text="Mean over those entries of candidate minus baseline score."
    )
    mean_score_delta_ci = interval_field("95% paired bootstrap interval of mean_score_delta")
    p_value = serializers.FloatField(
        allow_null=True, help_text="Two-sided Wilcoxon signed-rank test of the score differences."
    )
    pass_rate_delta = serializers.FloatField(
        allow_null=True, help_text="Mean over those entries of candidate minus baseline pass rate."
    )
    regressions = serializers.IntegerField()
    improvements = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    mcnemar_p = serializers.FloatField(
        allow_null=True,
        help_text="McNemar's exact test of the entries whose verdict (passed in most runs) "
        "flipped.",
    )


class CompareResultSerializer(serializers.Serializer):
    test_id = serializers.UUIDField()
    runs = serializers.IntegerField()
    graded = serializers.IntegerField()
    mean_score = serializers.FloatField(allow_null=True)
    pass_rate = serializers.FloatField(allow_null=True)
    invocation_id = serializers.UUIDField(
        allow_null=True, help_text="The invocation of the entry's latest run: its transcript."
    )


class CompareEntrySerializer(serializers.Serializer):
    entry_id = serializers.UUIDField()
    position = serializers.IntegerField()
    title = serializers.CharField()
    change = serializers.ChoiceField(
        choices=["regression", "improvement", "unchanged", "incomplete"],
        help_text="The first candidate against the baseline.",
    )
    results = CompareResultSerializer(many=True, help_text="One per test, in the request's order.")


class CompareTestResponseSerializer(serializers.Serializer):
    baseline_test_id = serializers.UUIDField()
    benchmark_id = serializers.UUIDField()
    tests = CompareTestItemSerializer(many=True)
    deltas = CompareDeltaSerializer(many=True, help_text="One per candidate.")
    entries = CompareEntrySerializer(many=True, help_text="A page of entries, by position.")
    total_entries = serializers.IntegerField(help_text="Entries that pass the only filter.")
