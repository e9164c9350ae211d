"""drf-spectacular extensions (how our authentication classes appear in the OpenAPI schema) and
the views that serve the schema.

Imported by the discovery views so that they are registered before any schema is generated.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET
from drf_orjson_renderer.renderers import ORJSONRenderer
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.response import Response

from tests_app.api.base import StrictSerializer


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tests_app.api.authentication.ApiKeyAuthentication"
    # Either header carries the same key.
    name = ["ApiKeyHeader", "BearerKey"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        # One requirement each: in OpenAPI, names in one requirement must all be sent at once.
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            {"type": "http", "scheme": "bearer", "description": "The same API key as a Bearer."},
        ]


class BrowserSessionScheme(OpenApiAuthenticationExtension):
    target_class = "tests_app.api.authentication.SessionAuthentication"
    name = "cookieAuth"
    priority = 1

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}


class JsonErrorsMixin:
    """An error of the schema or its viewers (a 429, a 401 for a bad key) in the one JSON error
    body, not rendered as YAML or HTML like their answers."""

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        renderer = ORJSONRenderer()
        self.request.accepted_renderer = renderer  # type: ignore[attr-defined]
        self.request.accepted_media_type = renderer.media_type  # type: ignore[attr-defined]
        return response


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    pass


class SwaggerView(JsonErrorsMixin, SpectacularSwaggerSplitView):
    """Swagger UI with its start-up script served as a file (``?script``), not inline."""

    template_name = "api/swagger_ui.html"


class RedocView(JsonErrorsMixin, SpectacularRedocView):
    """Redoc from drf-spectacular-sidecar's bundle, served as ``redoc_bundle`` below."""

    template_name = "api/redoc.html"


REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
# The one address outside this origin in Redoc's bundle: its sidebar's credit shows its vendor's
# logo from the vendor's CDN. Served offline, the credit keeps its words and link, and the logo is
# an empty image of this page (img-src allows data:), so the page makes no third-party request.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_EMPTY_LOGO = b"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"


@functools.cache
def offline_redoc_bundle() -> bytes:
    found = finders.find(REDOC_BUNDLE)
    if not isinstance(found, str):
        raise ImproperlyConfigured(
            f"{REDOC_BUNDLE} is missing: is drf-spectacular-sidecar installed?"
        )
    bundle = Path(found).read_bytes()
    # A new Redoc that moved or dropped the logo fails here, loudly, rather than going online.
    if bundle.count(REDOC_CDN_LOGO) != 1:
        raise ImproperlyConfigured(f"{REDOC_BUNDLE} no longer has one CDN logo to serve offline.")
    return bundle.replace(REDOC_CDN_LOGO, REDOC_EMPTY_LOGO)


@require_GET
@cache_control(public=True, max_age=24 * 3600)
def redoc_bundle(request: HttpRequest) -> HttpResponse:
    return HttpResponse(offline_redoc_bundle(), content_type="text/javascript; charset=utf-8")


def _strict_serializers() -> list[type[StrictSerializer]]:
    found: list[type[StrictSerializer]] = []
    pending = list(StrictSerializer.__subclasses__())
    while pending:
        serializer = pending.pop()
        found.append(serializer)
        pending.extend(serializer.__subclasses__())
    return found


def refuse_unknown_fields(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """A drf-spectacular postprocessing hook: the schema of every request body read by a
    StrictSerializer says what the serializer does, that unknown fields are refused
    (``additionalProperties: false``), plus the rules across fields it declares in
    ``schema_constraints``.

    Request components are named after their serializer, without "Serializer", with "Request".
    """
    components = result.get("components", {}).get("schemas", {})
    for serializer in _strict_serializers():
        component = components.get(serializer.__name__.removesuffix("Serializer") + "Request")
        if component is not None:
            component["additionalProperties"] = False
            component.update(serializer.schema_constraints)
    return result
