"""Input and output shapes of search, docs, refresh and export (reference page, "Nested shapes").

Inputs are strict (unknown fields and wrong JSON types are a 400 with ``fields``); their help texts
are what the docs endpoint and the OpenAPI schema show. Outputs render what selectors and services
return and do no work.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tests_app.api.base import StrictSerializer
from tests_app.api.lifecycle_serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictUUIDField,
)
from tests_app.paging import MAX_PAGE_OFFSET
from tests_app.selectors.search import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX

MAX_FILTER_IDS = 100


@extend_schema_field({"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]})
class IsoDateOrDateTimeField(serializers.Field):
    """An ISO 8601 date (``2026-05-01``) or date-time (``2026-05-01T12:00:00Z``)."""

    default_error_messages = {
        "invalid": "Use an ISO 8601 date (2026-05-01) or date-time (2026-05-01T12:00:00Z)."
    }

    def to_internal_value(self, data: Any) -> date | datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        text = data.strip().upper()  # RFC 3339 allows a lower-case t and z
        try:
            # fromisoformat accepts both shapes on 3.11, including a trailing Z.
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            self.fail("invalid")
        raise AssertionError("unreachable")  # self.fail always raises

    def to_representation(self, value: Any) -> str:
        return str(value.isoformat())


# --- search -----------------------------------------------------------------------------------


class SearchTestInputSerializer(StrictSerializer):
    eval_ids = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        allow_null=True,
        max_length=MAX_FILTER_IDS,
        help_text=f"Only tests of these evals (at most {MAX_FILTER_IDS}); null or [] for all.",
    )
    department_ids = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        allow_null=True,
        max_length=MAX_FILTER_IDS,
        help_text=(
            f"Only tests of these departments (at most {MAX_FILTER_IDS}); null or [] for all."
        ),
    )
    target_ids = serializers.ListField(
        child=StrictUUIDField(),
        required=False,
        allow_null=True,
        max_length=MAX_FILTER_IDS,
        help_text=(
            f"Only tests run against these targets (at most {MAX_FILTER_IDS}); null or [] for all."
        ),
    )
    is_archived = StrictBooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: archived only; false: not archived only; null (default): both.",
    )
    start_date = IsoDateOrDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Created at or after this ISO 8601 date or date-time (inclusive).",
    )
    end_date = IsoDateOrDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Created at or before this ISO 8601 date-time, or on or before this date (a date "
            "includes its whole day). Must not be before start_date."
        ),
    )
    eval_search = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text="Case-insensitive substring of the eval's name.",
    )
    department_search = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text="Case-insensitive substring of the department's name.",
    )
    page_size = StrictIntegerField(
        required=False,
        default=PAGE_SIZE_DEFAULT,
        min_value=1,
        max_value=PAGE_SIZE_MAX,
        help_text=f"Tests per page, 1..{PAGE_SIZE_MAX} (default {PAGE_SIZE_DEFAULT}).",
    )
    page_offset = StrictIntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=MAX_PAGE_OFFSET,
        help_text="How many tests to skip (default 0).",
    )


class SearchTestItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    benchmark_id = serializers.UUIDField()
    benchmark_name = serializers.CharField()
    eval_id = serializers.UUIDField()
    eval_name = serializers.CharField()
    department_id = serializers.UUIDField()
    department_name = serializers.CharField()
    rubric_name = serializers.CharField()
    status = serializers.CharField(help_text="pending, running, completed or stopped.")
    infinite_mode = serializers.BooleanField()
    is_archived = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    created_by_name = serializers.CharField(
        help_text="Display name of who started it (empty when the user is gone)."
    )
    total_runs = serializers.IntegerField()
    completed_runs = serializers.IntegerField()
    pass_rate = serializers.FloatField(
        allow_null=True, help_text="Passed over graded runs, 0..1; null before any grade."
    )
    mean_score = serializers.FloatField(
        allow_null=True, help_text="Mean score of graded runs, 0..1; null before any grade."
    )
    target_name = serializers.CharField(help_text="The target (model under test) it ran against.")
    model = serializers.CharField(
        help_text="The model it ran against, as configured at start (empty for a reference target)."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # DRF's field-by-field walk (after a deep copy of the declared fields) costs more per page
        # than the page's query: the same values, built directly from a SearchRow. A test
        # compares the two.
        row = instance
        return {
            "id": str(row.id),
            "benchmark_id": str(row.benchmark_id),
            "benchmark_name": row.benchmark_name,
            "eval_id": str(row.eval_id),
            "eval_name": row.eval_name,
            "department_id": str(row.department_id),
            "department_name": row.department_name,
            "rubric_name": row.rubric_name,
            "status": row.status,
            "infinite_mode": row.infinite_mode,
            "is_archived": row.is_archived,
            "created_at": _DATETIME.to_representation(row.created_at),
            "created_by_name": row.created_by_name,
            "total_runs": row.total_runs,
            "completed_runs": row.completed_runs,
            "pass_rate": row.pass_rate,
            "mean_score": row.mean_score,
            "target_name": row.target_name,
            "model": row.model,
        }


# Renders a date-time exactly as a DateTimeField of a serializer does (format, time zone).
_DATETIME = serializers.DateTimeField()


class ListFilterOptionSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Put it in the request field named by the section key.")
    label = serializers.CharField()  # type: ignore[assignment]  # a declared field, popped
    count = serializers.IntegerField(help_text="Tests matching every other filter and this option.")
    selected = serializers.BooleanField()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Up to 100 options per section, built directly (see SearchTestItemSerializer).
        return {
            "id": instance.id,
            "label": instance.label,
            "count": instance.count,
            "selected": instance.selected,
        }


class ListFilterSectionSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The request field the option ids go into.")
    label = serializers.CharField()  # type: ignore[assignment]  # a declared field, popped
    options = ListFilterOptionSerializer(many=True)


class SearchTestResponseSerializer(serializers.Serializer):
    actor_name = serializers.CharField(allow_null=True, help_text="The caller's display name.")
    tests = SearchTestItemSerializer(many=True, allow_null=True, help_text="Newest first.")
    eval_filter = ListFilterSectionSerializer(allow_null=True)
    department_filter = ListFilterSectionSerializer(allow_null=True)
    target_filter = ListFilterSectionSerializer(allow_null=True)
    total_count = serializers.IntegerField(
        allow_null=True, help_text="Exact number of tests matching every filter."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # Built directly: DRF would first deep-copy every declared field of this serializer and
        # of the nested ones (re-running each field's __init__) on every call. A test compares
        # the result with DRF's own rendering.
        return {
            "actor_name": instance.actor_name,
            "tests": [_ITEM.to_representation(row) for row in instance.tests],
            "eval_filter": _section(instance.eval_filter),
            "department_filter": _section(instance.department_filter),
            "target_filter": _section(instance.target_filter),
            "total_count": instance.total_count,
        }


_ITEM = SearchTestItemSerializer()
_OPTION = ListFilterOptionSerializer()


def _section(section: Any) -> dict[str, Any]:
    return {
        "key": section.key,
        "label": section.label,
        "options": [_OPTION.to_representation(option) for option in section.options],
    }


# --- docs -------------------------------------------------------------------------------------


class DocsTestInputSerializer(StrictSerializer):
    entity_id = StrictUUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="A test id: specialize the docs to it (its eval and rubric).",
    )


class DocsFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="The JSON type, or the name of a nested shape.")
    required = serializers.BooleanField()  # type: ignore[assignment]  # a declared field
    description = serializers.CharField()


class DocsResponseSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text="What is described: object, request, eval, rubric...")
    description = serializers.CharField()
    fields = DocsFieldSerializer(many=True)  # type: ignore[assignment]  # a declared field


class OperationInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    method = serializers.CharField()
    path = serializers.CharField()
    summary = serializers.CharField()
    allowed = serializers.BooleanField(help_text="Whether the caller may use it.")


class DocsApiResponseSerializer(serializers.Serializer):
    title = serializers.CharField()
    description = serializers.CharField()
    schema_url = serializers.CharField(help_text="The OpenAPI 3 schema.")
    docs_url = serializers.CharField(help_text="Interactive API documentation.")


class TestDocsResponseSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    description = serializers.CharField()
    artifact = DocsResponseSerializer(allow_null=True, help_text="The fields of get's answer.")
    entries = DocsResponseSerializer(
        many=True, help_text="The entries of a test (and, for one test, its entries)."
    )
    resources = DocsResponseSerializer(
        many=True, help_text="The resources of a test and the other request and answer shapes."
    )
    permissions = OperationInfoSerializer(
        many=True, help_text="Each operation, with whether this caller may use it and why."
    )
    api_operations = OperationInfoSerializer(many=True)
    page_metadata = DocsApiResponseSerializer(allow_null=True)


# --- refresh ----------------------------------------------------------------------------------


class RefreshTestInputSerializer(StrictSerializer):
    """No fields: the body is empty or ``{}``."""


class RefreshTestResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    refreshed_views = serializers.ListField(
        child=serializers.CharField(), help_text="Analytics views refreshed."
    )
    invalidated_tags = serializers.ListField(
        child=serializers.CharField(), help_text="Cache tags invalidated."
    )


# --- export -----------------------------------------------------------------------------------


class ExportTestInputSerializer(StrictSerializer):
    test_id = StrictUUIDField(help_text="The test to export.")


class ExportTestResponseSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField(
        help_text="Download with GET /api/v5/uploads/<upload_id>/download."
    )
    file_name = serializers.CharField()
    row_count = serializers.IntegerField(help_text="Data rows over all CSVs of the ZIP.")
