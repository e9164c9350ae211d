"""Security headers on everything served: pages, the API, its viewers and static files."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def policy(response: Any) -> dict[str, list[str]]:
    directives = [part.strip().split() for part in response["Content-Security-Policy"].split(";")]
    return {name: sources for name, *sources in directives if name}


@pytest.mark.parametrize(
    "path",
    [
        "/static/tests_app/app.css",
        "/static/tests_app/app.js",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
    ],
)
def test_static_files_are_served_with_the_security_headers(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert policy(response)["frame-ancestors"] == ["'none'"]
    assert b"".join(response.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/accounts/login/", "/api/docs/", "/api/schema/", "/tests/"])
def test_pages_allow_only_their_own_origin(path: str, operator: Any) -> None:
    client = Client()
    client.force_login(operator)
    response = client.get(path)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_an_unknown_page_is_a_plain_404_without_the_url_patterns() -> None:
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert b"URLconf" not in response.content
    assert b"tests/&lt;uuid:test_id&gt;" not in response.content


def test_redoc_alone_may_apply_inline_styles_but_never_inline_scripts() -> None:
    directives = policy(Client().get("/api/redoc/"))
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["script-src"] == ["'self'"]
