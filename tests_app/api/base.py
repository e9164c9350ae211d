"""Pieces every endpoint shares: strict input serializers, parsing a body, and the error body."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.request import Request


class StrictSerializer(serializers.Serializer):
    """An input serializer that rejects fields it does not know (a typo must not pass silently).

    ``schema_constraints``: JSON Schema keywords added to its OpenAPI request schema, for rules
    across fields that the fields alone do not say (see ``schema.refuse_unknown_fields``).
    """

    schema_constraints: dict[str, Any] = {}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class ErrorResponseSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="A sentence for a person.")
    code = serializers.CharField(help_text="A machine code, e.g. not_found or invocation_running.")
    # The metaclass pops declared fields off the class, so this does not shadow Serializer.fields.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation messages by field name (400 only).",
    )


ERROR_DESCRIPTIONS = {
    400: (
        "Invalid body: unknown field, malformed UUID or date, wrong type, value out of range, "
        "or ids that do not match."
    ),
    401: "No or invalid credentials.",
    403: "Not allowed for this caller: operating needs the operator role, refresh needs staff.",
    404: "Not found, or not visible to the caller.",
    409: "Not allowed in the current state; the detail names the state.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The OpenAPI entries of the error statuses an endpoint answers, all with the one body."""
    return {
        status: OpenApiResponse(ErrorResponseSerializer, description=ERROR_DESCRIPTIONS[status])
        for status in statuses
    }


def parse_body(serializer_class: type[StrictSerializer], request: Request) -> dict[str, Any]:
    """The validated body, or a 400 raised with the fields at fault.

    A body is a JSON object, or nothing (read as ``{}``); ``null``, an array or a scalar is a 400,
    and a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` a 413, before any of it is parsed.
    """
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0  # read as no body, as DRF does
    # Django checks this limit only when request.body is read, which orjson's parser does not do.
    if limit is not None and length > limit:
        raise PayloadTooLarge(
            f"The request body is larger than {limit} bytes, the most this API reads."
        )
    try:
        data = request.data
    except exceptions.ParseError as error:
        # A 400 like every other invalid body: code "invalid" with the reason in fields.
        raise serializers.ValidationError({"non_field_errors": [str(error.detail)]}) from error
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
