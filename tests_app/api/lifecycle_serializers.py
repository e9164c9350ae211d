"""Input and output shapes of the lifecycle endpoints (reference page and DESIGN "Nested shapes").

Input serializers are strict: unknown fields, malformed UUIDs and wrong JSON types are a 400 with
``fields``. Their help texts are the documentation that the docs endpoint and OpenAPI show.
Output serializers render the plain data that services and selectors return; they do no work.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tests_app.api.base import StrictSerializer
from tests_app.paging import MAX_PAGE_OFFSET
from tests_app.selectors.benchmarks import MAX_PAGE_SIZE
from tests_app.services.archiving import MAX_ARCHIVE_IDS

# --- strict JSON scalars ----------------------------------------------------------------------
# DRF's own fields coerce ("yes" → True, "0.5" → 0.5); a JSON API should reject the wrong type.


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)


# DRF's CharField refuses NUL characters (PostgreSQL cannot store or compare them): say so.
# "+": an empty string is the other branch of the oneOf that drf-spectacular writes for blanks.
@extend_schema_field({"type": "string", "pattern": "^[^\\u0000]+$"})
class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """Only a UUID string: DRF's own also takes an integer and makes a UUID of it."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


# --- start ------------------------------------------------------------------------------------


class StartTestInputSerializer(StrictSerializer):
    benchmark_id = StrictUUIDField(
        help_text="The benchmark to test (find ids with POST /api/v5/artifacts/benchmark/search)."
    )
    infinite_mode = StrictBooleanField(
        required=False,
        default=False,
        help_text="Keep adding cycles of runs when every run has been claimed (default false).",
    )
    target_id = StrictUUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "The target (model under test) to run against, one of the benchmark's department; "
            "omitted or null: the benchmark's default target."
        ),
    )


class StartTestResponseSerializer(serializers.Serializer):
    test_id = serializers.UUIDField(
        help_text="The new test, pending until its first run is claimed."
    )


# --- next -------------------------------------------------------------------------------------


class NextTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test to claim the next pending run of.")


class NextTestResponseSerializer(serializers.Serializer):
    invocation_id = serializers.UUIDField(help_text="The new invocation (status created).")
    run_id = serializers.UUIDField(help_text="The claimed run.")
    current_run = serializers.IntegerField(
        help_text="The run's ordinal within its cycle (1-based)."
    )
    total_runs = serializers.IntegerField(help_text="Runs in the run's cycle.")
    cycle = serializers.IntegerField(help_text="The run's cycle (grows in infinite mode).")


# --- run --------------------------------------------------------------------------------------


class RunTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test of the invocation.")
    test_invocation_id = StrictUUIDField(
        help_text="The invocation returned by next; it must still be created."
    )
    run_id = StrictUUIDField(help_text="The run returned by next with that invocation.")


class RunTestResponseSerializer(serializers.Serializer):
    test_id = serializers.UUIDField()
    invocation_id = serializers.UUIDField(help_text="Poll get (or watch the websocket) for it.")
    run_id = serializers.UUIDField()


# --- end --------------------------------------------------------------------------------------


class EndTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test of the invocation.")
    test_invocation_id = StrictUUIDField(
        help_text="The invocation to end; its replay must have finished (status replayed)."
    )
    run_id = StrictUUIDField(help_text="The run of that invocation.")
    grade = StrictBooleanField(
        required=False,
        default=False,
        help_text="true: the judge grades the replay in the background (not with score).",
    )
    score = StrictFloatField(
        required=False,
        allow_null=True,
        min_value=0.0,
        max_value=1.0,
        help_text="Your own grade, 0..1; stored as an agent grade.",
    )
    passed = StrictBooleanField(
        required=False,
        allow_null=True,
        help_text="Whether it passed; omitted: score >= the rubric's pass threshold.",
    )
    feedback = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        max_length=20000,
        help_text="Free-text feedback stored with your grade (empty: none).",
    )

    # What end_invocation refuses, said in the schema: grade=true asks the judge, so it takes
    # no score, passed or feedback of yours; passed and feedback need a score.
    schema_constraints = {
        "not": {
            "anyOf": [
                {
                    "required": ["grade", other],
                    "properties": {"grade": {"enum": [True]}, other: given},
                }
                for other, given in (
                    ("score", {"type": "number"}),
                    ("passed", {"type": "boolean"}),
                    ("feedback", {"type": "string", "minLength": 1}),
                )
            ]
            + [
                {
                    "required": [other],
                    "properties": {other: given},
                    "not": {"required": ["score"], "properties": {"score": {"type": "number"}}},
                }
                for other, given in (
                    ("passed", {"type": "boolean"}),
                    ("feedback", {"type": "string", "minLength": 1}),
                )
            ]
        }
    }

    def validate_feedback(self, value: str | None) -> str | None:
        return value or None  # "" is no feedback, as null is


class EndTestResponseSerializer(serializers.Serializer):
    invocation_id = serializers.UUIDField()
    grade_id = serializers.UUIDField(
        allow_null=True, help_text="The new grade (pending while the judge works), or null."
    )
    score = serializers.FloatField(allow_null=True, help_text="Set for an agent grade, else null.")
    passed = serializers.BooleanField(allow_null=True)
    feedback = serializers.CharField(allow_null=True)


# --- stop -------------------------------------------------------------------------------------


class StopTestInputSerializer(StrictSerializer):
    invocation_id = StrictUUIDField(help_text="The invocation to stop; its test stops too.")


class StopTestResponseSerializer(serializers.Serializer):
    invocation_id = serializers.UUIDField()
    success = serializers.BooleanField(help_text="false when it had already finished.")
    message = serializers.CharField(allow_null=True)


# --- archive ----------------------------------------------------------------------------------


class ArchiveTestInputSerializer(StrictSerializer):
    test_ids = serializers.ListField(
        child=StrictUUIDField(),
        max_length=MAX_ARCHIVE_IDS,
        help_text=f"Tests to archive or unarchive, at most {MAX_ARCHIVE_IDS}.",
    )
    archived = StrictBooleanField(
        required=False, default=True, help_text="true archives (default), false unarchives."
    )


class ArchiveTestResponseSerializer(serializers.Serializer):
    updated_count = serializers.IntegerField(help_text="Tests whose flag actually changed.")


# --- get --------------------------------------------------------------------------------------


class GetTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test to read.")
    runs_page_size = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=settings.GET_RUNS_PAGE_SIZE_MAX,
        help_text=(
            f"Runs and invocations per page (default {settings.GET_RUNS_PAGE_SIZE}, "
            f"at most {settings.GET_RUNS_PAGE_SIZE_MAX}); both lists are newest first."
        ),
    )
    runs_page_offset = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=MAX_PAGE_OFFSET,
        help_text="How many runs and invocations to skip (default 0).",
    )


class IdNameSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class TestTargetSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField(help_text="The target's name.")
    kind = serializers.CharField(help_text="openai or reference, as the test ran it.")
    model = serializers.CharField(
        help_text="The model as configured when the test started (empty for a reference target)."
    )


class GetTestResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    benchmark_id = serializers.UUIDField()
    benchmark_name = serializers.CharField()
    eval_id = serializers.UUIDField()
    department_id = serializers.UUIDField()
    department_name = serializers.CharField()
    status = serializers.CharField(help_text="pending, running, completed or stopped.")
    infinite_mode = serializers.BooleanField()
    cycle = serializers.IntegerField()
    is_archived = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    created_by_name = serializers.CharField()
    target = TestTargetSerializer(help_text="What the test ran against (DESIGN §2).")


class InvocationGradeSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    source = serializers.CharField(  # type: ignore[assignment]  # a declared field, popped
        help_text="ai, reference (offline, not an AI), agent or human."
    )
    status = serializers.CharField(help_text="pending, done or failed.")
    score = serializers.FloatField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True)
    feedback = serializers.CharField()
    created_at = serializers.DateTimeField()


class GetTestInvocationResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    run_ordinal = serializers.IntegerField()
    cycle = serializers.IntegerField()
    status = serializers.CharField(
        help_text="created, running, replayed, ended, failed or stopped."
    )
    client = serializers.CharField(help_text="browser, agent or mcp.")
    actor_name = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()
    steps_count = serializers.IntegerField()
    grade = InvocationGradeSerializer(allow_null=True, help_text="The current grade, or null.")


class TestRunItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    ordinal = serializers.IntegerField()
    cycle = serializers.IntegerField()
    entry_id = serializers.UUIDField()
    entry_title = serializers.CharField()
    status = serializers.CharField(
        help_text="pending, claimed, running, completed, failed or stopped."
    )
    invocation_id = serializers.UUIDField(allow_null=True, help_text="The latest invocation.")
    score = serializers.FloatField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True)


class RunStatusCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    claimed = serializers.IntegerField()
    running = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    stopped = serializers.IntegerField()


def interval_field(what: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        help_text=f"[low, high]: {what}; null when it cannot be estimated.",
    )


class RepetitionsSerializer(serializers.Serializer):
    k = serializers.IntegerField(help_text="Runs per entry.")
    pass_at_k = serializers.FloatField(
        allow_null=True,
        help_text="Unbiased pass@k per entry (some of k runs passes), averaged over the entries "
        "with at least k graded runs.",
    )
    pass_hat_k = serializers.FloatField(
        allow_null=True, help_text="pass^k the same way: all k runs pass."
    )


class LatencySerializer(serializers.Serializer):
    p50 = serializers.FloatField(help_text="Median model latency per turn, milliseconds.")
    p95 = serializers.FloatField(help_text="95th percentile, milliseconds.")


class TokensSerializer(serializers.Serializer):
    prompt = serializers.IntegerField(
        allow_null=True, help_text="Prompt tokens of every turn (null: the target reports none)."
    )
    completion = serializers.IntegerField(allow_null=True, help_text="Completion tokens.")


class TestStatusSummarySerializer(serializers.Serializer):
    total_runs = serializers.IntegerField(
        help_text="Runs of the test (of the current cycle in infinite mode)."
    )
    by_status = RunStatusCountsSerializer()
    graded = serializers.IntegerField()
    passed = serializers.IntegerField()
    not_passed = serializers.IntegerField()
    pass_rate = serializers.FloatField(allow_null=True)
    mean_score = serializers.FloatField(allow_null=True)
    cycle = serializers.IntegerField()
    progress = serializers.FloatField(help_text="Finished runs over total runs, 0..1.")
    mean_score_ci = interval_field(
        "95% t interval of mean_score, entries as the unit (docs/compare.md)"
    )
    pass_rate_ci = interval_field("95% Wilson interval of pass_rate")
    repetitions = RepetitionsSerializer(
        allow_null=True, help_text="When runs_per_entry > 1, else null."
    )
    latency_ms = LatencySerializer(allow_null=True, help_text="Null before any replayed turn.")
    tokens = TokensSerializer()
    cost = serializers.FloatField(
        allow_null=True,
        help_text="Tokens times the target's prices per million when the test started; null "
        "without both prices.",
    )


class TestEntryItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    position = serializers.IntegerField()
    title = serializers.CharField()
    turns = serializers.IntegerField(help_text="User turns replayed.")


class TestEntriesSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    items = TestEntryItemSerializer(many=True)


class TestExportSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField()
    file_name = serializers.CharField()
    row_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    download_url = serializers.CharField()


class TestResourcesSerializer(serializers.Serializer):
    benchmark = IdNameSerializer()
    eval = IdNameSerializer()
    rubric = IdNameSerializer()
    department = IdNameSerializer()
    exports = TestExportSerializer(many=True)


class GetTestArtifactResponseSerializer(serializers.Serializer):
    test = GetTestResponseSerializer(allow_null=True)
    invocations = GetTestInvocationResponseSerializer(many=True)
    status = serializers.CharField()
    eval_name = serializers.CharField(allow_null=True)
    eval_description = serializers.CharField(allow_null=True)
    rubric_name = serializers.CharField(allow_null=True)
    infinite_mode = serializers.BooleanField()
    runs = TestRunItemSerializer(many=True)
    status_summary = TestStatusSummarySerializer(allow_null=True)
    show_controls = serializers.BooleanField(
        help_text="The caller may operate this test and it is not archived or finished."
    )
    current_invocation_id = serializers.UUIDField(
        allow_null=True, help_text="The newest invocation not yet ended, else null."
    )
    has_runs_or_groups = serializers.BooleanField()
    entries = TestEntriesSerializer(allow_null=True)
    resources = TestResourcesSerializer(allow_null=True)


# --- benchmark/search -------------------------------------------------------------------------


class BenchmarkSearchInputSerializer(StrictSerializer):
    search = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text="Case-insensitive substring of the benchmark's or its eval's name.",
    )
    eval_ids = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        allow_null=True,
        max_length=MAX_PAGE_SIZE,
        help_text="Only benchmarks of these evals.",
    )
    department_ids = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        allow_null=True,
        max_length=MAX_PAGE_SIZE,
        help_text="Only benchmarks of these departments.",
    )
    page_size = StrictIntegerField(
        required=False,
        default=20,
        min_value=1,
        max_value=MAX_PAGE_SIZE,
        help_text=f"Benchmarks per page, 1..{MAX_PAGE_SIZE} (default 20).",
    )
    page_offset = StrictIntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_PAGE_OFFSET,
        help_text="How many to skip (default 0).",
    )


# Reads a Benchmark row of the selector's page and the relations it joined.
class BenchmarkItemSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="Pass it as benchmark_id to test/start.")
    name = serializers.CharField()
    eval_id = serializers.UUIDField()
    eval_name = serializers.CharField(source="eval.name")
    department_id = serializers.UUIDField(source="eval.department_id")
    department_name = serializers.CharField(source="eval.department.name")
    rubric_name = serializers.CharField(source="eval.rubric.name")
    entries = serializers.IntegerField(
        source="entry_count", help_text="Recorded conversations in the benchmark."
    )
    runs_per_entry = serializers.IntegerField()
    target_kind = serializers.CharField(
        source="default_target.kind",
        help_text="The kind of the default target: openai or reference.",
    )
    target_id = serializers.UUIDField(
        source="default_target_id",
        help_text="The default target: what start runs against without a target_id.",
    )
    target_name = serializers.CharField(
        source="default_target.name", help_text="The default target's name."
    )
    model = serializers.CharField(
        source="default_target.model",
        help_text="The default target's model (empty for a reference target).",
    )


class BenchmarkSearchResponseSerializer(serializers.Serializer):
    benchmarks = BenchmarkItemSerializer(many=True)
    total_count = serializers.IntegerField()
