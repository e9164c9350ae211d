"""drf-spectacular extensions: how our authentication classes appear in the OpenAPI schema.

Imported by the discovery views so that they are registered before any schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
