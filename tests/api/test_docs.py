"""POST /api/v5/artifacts/test/docs: composed from the code, permissions per caller, per test."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import get_resolver
from rest_framework.test import APIClient

from tests import factories
from tests.api.lifecycle_support import TEST_OPERATIONS
from tests_app.api import discovery_serializers, lifecycle_serializers
from tests_app.api.views import TestViewSet

pytestmark = pytest.mark.django_db

DOCS = "/api/v5/artifacts/test/docs"
OPERATIONS = set(TEST_OPERATIONS)
READ = {"get", "search", "docs", "export", "compare"}


def docs(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post(DOCS, body, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def allowed(operations: list[dict[str, Any]]) -> set[str]:
    return {operation["name"] for operation in operations if operation["allowed"]}


def test_it_lists_every_operation(client_for: Any, viewer: Any) -> None:
    body = docs(client_for(viewer))
    operations = body["api_operations"]
    # The reference page's eleven, compare, run_all and retry.
    assert len(operations) == 14
    assert {operation["name"] for operation in operations} == OPERATIONS
    for operation in operations:
        assert operation["method"] == "POST"
        assert operation["path"] == f"/api/v5/artifacts/test/{operation['name']}"
        assert operation["summary"]
        # Every listed path resolves in the URL conf.
        # DRF's as_view() names the viewset on the view function it returns.
        view = get_resolver().resolve(operation["path"]).func
        assert getattr(view, "cls", None) is TestViewSet
    summaries = {operation["name"]: operation["summary"] for operation in operations}
    assert summaries["search"] == "Search Test"
    assert summaries["export"] == "Export Test"


def test_viewer_and_operator_differ_in_permissions(
    client_for: Any, viewer: Any, operator: Any, staff: Any
) -> None:
    viewer_docs = docs(client_for(viewer))
    operator_docs = docs(client_for(operator))
    staff_docs = docs(client_for(staff))

    assert allowed(viewer_docs["permissions"]) == READ
    assert allowed(operator_docs["permissions"]) == OPERATIONS - {"refresh"}
    assert allowed(staff_docs["permissions"]) == OPERATIONS
    # api_operations carries the same answer; permissions says why.
    assert allowed(viewer_docs["api_operations"]) == READ
    reasons = {item["name"]: item["summary"] for item in viewer_docs["permissions"]}
    assert "operator" in reasons["start"]
    assert reasons["refresh"] == "Staff only."
    assert {item["name"] for item in viewer_docs["permissions"]} == OPERATIONS


def test_fields_and_help_texts_come_from_the_serializers(client_for: Any, viewer: Any) -> None:
    body = docs(client_for(viewer))

    artifact = body["artifact"]
    assert artifact["name"] == "GetTestArtifactResponse"
    declared = lifecycle_serializers.GetTestArtifactResponseSerializer().fields
    assert [item["name"] for item in artifact["fields"]] == list(declared)
    by_name = {item["name"]: item for item in artifact["fields"]}
    assert by_name["show_controls"]["description"] == declared["show_controls"].help_text
    assert by_name["runs"]["type"] == "TestRunItem[]"
    assert by_name["status_summary"]["type"].startswith("TestStatusSummary")

    entries = {item["name"]: item for item in body["entries"]}
    assert {"TestEntries", "TestEntryItem"} <= set(entries)
    resources = {item["name"]: item for item in body["resources"]}
    assert {"TestResources", "IdName", "TestExport"} <= set(resources)
    # The request bodies of every operation, with their help texts, are there too.
    search_request = resources["SearchTestInputRequest"]
    assert search_request["type"] == "request"
    page_size = next(item for item in search_request["fields"] if item["name"] == "page_size")
    expected = discovery_serializers.SearchTestInputSerializer().fields["page_size"].help_text
    assert page_size["description"] == expected
    assert page_size["type"] == "integer"
    assert page_size["required"] is False
    start = next(
        item
        for item in resources["StartTestInputRequest"]["fields"]
        if item["name"] == "benchmark_id"
    )
    assert start["required"] is True
    assert start["type"] == "string (uuid)"
    assert body["name"] == "Test"
    assert body["type"] == "artifact"


def test_page_metadata_points_at_the_schema_and_its_viewer(client_for: Any, viewer: Any) -> None:
    metadata = docs(client_for(viewer))["page_metadata"]
    assert metadata["schema_url"] == "/api/schema/"
    assert metadata["docs_url"] == "/api/docs/"
    assert metadata["title"] == "replaybench API: Test"
    assert metadata["description"]
    response = APIClient().get(
        metadata["schema_url"], HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "replaybench API"


def test_entity_id_specializes_to_the_test(
    client_for: Any, viewer: Any, operator: Any, research: Any
) -> None:
    rubric = factories.RubricFactory.create(
        name="Support quality",
        description="How support answers are judged.",
        pass_threshold=0.75,
        criteria=[
            {"name": "accuracy", "description": "Facts are right.", "weight": 3},
            {"name": "empathy", "description": "Acknowledges the problem.", "weight": 1},
        ],
    )
    eval = factories.EvalFactory.create(
        name="Refund questions",
        description="Refund policy conversations.",
        rubric=rubric,
        department=research,
    )
    benchmark = factories.make_benchmark(department=research, entries=2, turns=2, eval=eval)
    test = factories.TestFactory.create(benchmark=benchmark)

    body = docs(client_for(viewer), entity_id=str(test.pk))

    assert body["description"] == "Refund policy conversations."
    assert body["name"] == f"Test of {benchmark.name}"
    assert body["artifact"]["description"] == "Refund questions: Refund policy conversations."
    resources = {item["type"]: item for item in body["resources"][:4]}
    assert resources["eval"]["name"] == "Refund questions"
    assert resources["eval"]["description"] == "Refund policy conversations."
    assert resources["rubric"]["name"] == "Support quality"
    assert "0.75" in resources["rubric"]["description"]
    assert [(item["name"], item["description"]) for item in resources["rubric"]["fields"]] == [
        ("accuracy", "Facts are right. (weight 3)"),
        ("empathy", "Acknowledges the problem. (weight 1)"),
    ]
    assert resources["department"]["name"] == "Research"
    entries = next(item for item in body["entries"] if item["type"] == "benchmark_entries")
    assert [item["description"] for item in entries["fields"]] == [
        "Position 1, 2 user turn(s).",
        "Position 2, 2 user turn(s).",
    ]
    # For one test, operating depends on the role in its department.
    assert allowed(body["permissions"]) == READ
    operator_body = docs(client_for(operator), entity_id=str(test.pk))
    assert allowed(operator_body["permissions"]) == OPERATIONS - {"refresh"}


def test_an_operator_elsewhere_may_not_operate_this_test(
    client_for: Any, research: Any, support: Any
) -> None:
    user = factories.UserFactory.create(username="mixed")
    factories.MembershipFactory.create(user=user, department=research, role="viewer")
    factories.MembershipFactory.create(user=user, department=support, role="operator")
    test = factories.TestFactory.create(benchmark=factories.make_benchmark(department=research))

    assert allowed(docs(client_for(user))["permissions"]) == OPERATIONS - {"refresh"}
    assert allowed(docs(client_for(user), entity_id=str(test.pk))["permissions"]) == READ


def test_outsider_and_unknown_entity_are_404(
    client_for: Any, outsider: Any, benchmark: Any
) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    for entity in (str(test.pk), str(uuid.uuid4())):
        response = client_for(outsider).post(DOCS, {"entity_id": entity}, format="json")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_validation_and_auth(client_for: Any, viewer: Any) -> None:
    response = client_for(viewer).post(DOCS, {"entity_id": "nope"}, format="json")
    assert response.status_code == 400
    assert "entity_id" in response.json()["fields"]
    response = client_for(viewer).post(DOCS, {"entity": "x"}, format="json")
    assert response.status_code == 400
    assert APIClient().post(DOCS, {}, format="json").status_code == 401


def test_null_entity_is_the_general_docs(client_for: Any, viewer: Any) -> None:
    assert docs(client_for(viewer), entity_id=None)["name"] == "Test"
