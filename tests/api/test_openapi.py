"""The OpenAPI schema: generated without warnings, valid, complete, and served offline."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.api.lifecycle_support import TEST_OPERATIONS

pytestmark = pytest.mark.django_db

# DESIGN "Nested shapes": the components these endpoints answer with, field by field.
NESTED_SHAPES = {
    "SearchTestItem": [
        "id",
        "benchmark_id",
        "benchmark_name",
        "eval_id",
        "eval_name",
        "department_id",
        "department_name",
        "rubric_name",
        "status",
        "infinite_mode",
        "is_archived",
        "created_at",
        "created_by_name",
        "total_runs",
        "completed_runs",
        "pass_rate",
        "mean_score",
        "target_name",
        "model",
    ],
    "ListFilterSection": ["key", "label", "options"],
    "ListFilterOption": ["id", "label", "count", "selected"],
    "DocsResponse": ["name", "type", "description", "fields"],
    "OperationInfo": ["name", "method", "path", "summary", "allowed"],
    "DocsApiResponse": ["title", "description", "schema_url", "docs_url"],
}


@pytest.fixture
def schema() -> dict[str, Any]:
    GENERATOR_STATS.reset()
    generated = SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS, "schema generation emitted warnings or errors"
    return dict(generated)


def test_the_management_command_validates_and_fails_on_warnings(tmp_path: Any) -> None:
    target = tmp_path / "schema.yaml"
    GENERATOR_STATS.reset()
    # Raises on any warning or a schema that does not validate against the OpenAPI 3 meta-schema.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    loaded = yaml.safe_load(target.read_text())
    assert loaded["openapi"].startswith("3.")
    assert "/api/v5/artifacts/test/search" in loaded["paths"]


def test_schema_is_valid(schema: dict[str, Any]) -> None:
    validate_schema(schema)


def test_every_test_operation_documents_its_request_and_answer(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in TEST_OPERATIONS:
        operation = schema["paths"][f"/api/v5/artifacts/test/{name}"]["post"]
        assert operation["summary"], name
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].rsplit("/", 1)[-1] in components, name
        # Errors are documented with the one error body.
        error_statuses = [status for status in operation["responses"] if status != "200"]
        assert "401" in error_statuses, name
        for status in error_statuses:
            body = operation["responses"][status]["content"]["application/json"]["schema"]
            assert body["$ref"].endswith("/ErrorResponse"), (name, status)
        if name != "refresh":  # refresh takes no body
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert body["$ref"].rsplit("/", 1)[-1] in components, name
        # Either an API key header, a Bearer key or a browser session.
        schemes = {key for requirement in operation["security"] for key in requirement}
        assert {"ApiKeyHeader", "BearerKey", "cookieAuth"} <= schemes


def test_nested_shapes_are_spelled_out(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name, fields in NESTED_SHAPES.items():
        assert list(components[name]["properties"]) == fields, name
    search = components["SearchTestResponse"]["properties"]
    assert search["tests"]["items"]["$ref"].endswith("/SearchTestItem")
    docs = components["TestDocsResponse"]["properties"]
    assert docs["permissions"]["items"]["$ref"].endswith("/OperationInfo")
    assert set(docs) == {
        "name",
        "type",
        "description",
        "artifact",
        "entries",
        "resources",
        "permissions",
        "api_operations",
        "page_metadata",
    }


def test_download_is_documented_as_a_zip(schema: dict[str, Any]) -> None:
    operation = schema["paths"]["/api/v5/uploads/{upload_id}/download"]["get"]
    assert "application/zip" in operation["responses"]["200"]["content"]
    assert operation["parameters"][0]["name"] == "upload_id"


def test_schema_and_viewers_are_served_offline() -> None:
    client = APIClient()
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v5/artifacts/test/export" in response.json()["paths"]

    swagger = client.get("/api/docs/")
    assert swagger.status_code == 200
    html = swagger.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    # No inline script: Swagger UI's start-up script is a file of its own (for the CSP).
    assert "<script>" not in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()
    redoc = client.get("/api/redoc/")
    assert redoc.status_code == 200
    assert (
        "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
        in redoc.content.decode()
    )
    # No web fonts from a CDN (the stock template loads them), no inline script.
    assert "googleapis" not in redoc.content.decode()
    assert "<script>" not in redoc.content.decode()
    # The assets ship with the sidecar package, so no network is needed.
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")


def test_an_unknown_api_path_answers_in_the_error_body(client: Any, settings: Any) -> None:
    settings.DEBUG = True  # the embedded default, where Django would render its HTML 404
    response = client.post("/api/v5/artifacts/test/nope", {}, content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such endpoint.", "code": "not_found"}


def test_the_schemas_errors_are_the_one_json_error_body(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "caller": "2/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    client = APIClient()
    for path in ("/api/schema/", "/api/docs/", "/api/redoc/"):
        cache.clear()
        assert client.get(path).status_code == 200
        assert client.get(path).status_code == 200
        refused = client.get(path)
        assert refused.status_code == 429
        assert refused["Content-Type"] == "application/json"
        assert refused.json()["code"] == "throttled"
        assert set(refused.json()) == {"detail", "code"}
    cache.clear()
    unknown = client.get("/api/schema/", HTTP_X_API_KEY="no.such-key")
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "not_authenticated"


def test_each_credential_is_a_requirement_of_its_own(schema: dict[str, Any]) -> None:
    # Names in one requirement must all be sent together; a key goes in one header or the other.
    for path, item in schema["paths"].items():
        for operation in item.values():
            assert sorted(map(sorted, operation["security"])) == [
                ["ApiKeyHeader"],
                ["BearerKey"],
                ["cookieAuth"],
            ], path


def test_request_bodies_refuse_unknown_fields_as_the_server_does(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    requests = [name for name in components if name.endswith("InputRequest")]
    # The eleven bodies of the Test API (refresh takes none), benchmark/search, judge/agreement,
    # compare, run_all, retry.
    assert {
        "JudgeAgreementInputRequest",
        "CompareTestInputRequest",
        "RunAllTestInputRequest",
        "RetryTestInputRequest",
    } <= set(requests)
    assert len(requests) == 15
    for name in requests:
        assert components[name]["additionalProperties"] is False, name
    # What end refuses across fields, the schema says too.
    assert "not" in components["EndTestInputRequest"]
