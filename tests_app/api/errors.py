"""One error body everywhere: ``{"detail": str, "code": str}`` plus ``fields`` for validation.

DRF's exceptions, our domain errors, Django's 404/403 and anything unexpected all come out here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response

from tests_app.errors import DomainError
from tests_app.outages import INFRASTRUCTURE_ERRORS, RETRY_AFTER_S, UNAVAILABLE

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
    503: "service_unavailable",
}


def error_body(
    detail: str, code: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail, "code": code}
    if fields is not None:
        body["fields"] = fields
    return body


def _flatten(errors: Any) -> list[str]:
    if isinstance(errors, dict):
        out: list[str] = []
        for key, value in errors.items():
            out.extend(f"{key}: {message}" for message in _flatten(value))
        return out
    if isinstance(errors, list):
        out = []
        for item in errors:
            out.extend(_flatten(item))
        return out
    return [str(errors)]


def validation_fields(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(name): _flatten(messages) for name, messages in detail.items()}
    return {"non_field_errors": _flatten(detail)}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.detail, exc.code, exc.fields), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.ValidationError):
        fields = validation_fields(exc.detail)
        first = next(iter(fields.items()), None)
        sentence = "The request is invalid"
        if first is not None and first[1]:
            where = "" if first[0] == "non_field_errors" else f" ({first[0]})"
            sentence = f"The request is invalid{where}: {first[1][0]}"
        return Response(error_body(sentence, "invalid", fields), status=status.HTTP_400_BAD_REQUEST)

    if isinstance(exc, exceptions.APIException):
        headers: dict[str, str] = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        status_code = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else " ".join(_flatten(exc.detail))
        code = _STATUS_CODES.get(status_code) or str(exc.default_code)
        if status_code == 401 and isinstance(exc, exceptions.NotAuthenticated):
            detail = "Authentication is required: send X-Api-Key, a Bearer key, or log in."
        return Response(error_body(str(detail), code), status=status_code, headers=headers)

    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        logger.warning("%s met an outage: %r", context.get("view").__class__.__name__, exc)
        return Response(
            error_body(UNAVAILABLE, "service_unavailable"),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
    return Response(
        error_body("An unexpected error occurred on the server.", "server_error"),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("No such endpoint.", "not_found"), status=404)
    return page_not_found(request, exception or Http404())


def server_error_view(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            error_body("An unexpected error occurred on the server.", "server_error"), status=500
        )
    return server_error(request)
