"""drf-spectacular extensions (how our authentication classes appear in the OpenAPI schema) and
the views that serve the schema.

Imported by the discovery views so that they are registered before any schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_orjson_renderer.renderers import ORJSONRenderer
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.response import Response


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tests_app.api.authentication.ApiKeyAuthentication"
    # Either header carries the same key.
    name = ["ApiKeyHeader", "BearerKey"]

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
    template_name = "api/redoc.html"
