"""A client that follows the reference page to the letter may send every nullable field as null."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.lifecycle_support import (
    TEST_API,
    TEST_OPERATIONS,
    assert_error,
    invocation_ids,
    post,
)
from tests_app.models import Grade, TestInvocation

pytestmark = pytest.mark.django_db

NULL_GRADE_FIELDS = {"score": None, "passed": None, "feedback": None}


def test_end_with_null_grade_fields_ends_ungraded(
    client_for: Any, operator: Any, replayed: TestInvocation
) -> None:
    body = {**invocation_ids(replayed), "grade": False, **NULL_GRADE_FIELDS}
    response = post(client_for(operator), "end", body)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "invocation_id": str(replayed.pk),
        "grade_id": None,
        "score": None,
        "passed": None,
        "feedback": None,
    }
    replayed.refresh_from_db()
    assert replayed.status == TestInvocation.Status.ENDED
    assert not Grade.objects.filter(invocation=replayed).exists()


def test_end_asking_the_judge_with_null_fields_queues_a_grade(
    client_for: Any, operator: Any, replayed: TestInvocation
) -> None:
    body = {**invocation_ids(replayed), "grade": True, **NULL_GRADE_FIELDS}
    response = post(client_for(operator), "end", body)
    assert response.status_code == 200, response.content
    grade = Grade.objects.get(invocation=replayed)
    assert response.json()["grade_id"] == str(grade.pk)


def test_search_and_docs_accept_every_optional_field_as_null(client_for: Any, viewer: Any) -> None:
    client = client_for(viewer)
    search = post(
        client,
        "search",
        {
            "eval_ids": None,
            "department_ids": None,
            "is_archived": None,
            "start_date": None,
            "end_date": None,
            "eval_search": None,
            "department_search": None,
        },
    )
    assert search.status_code == 200, search.content
    assert search.json()["total_count"] == 0
    docs = post(client, "docs", {"entity_id": None})
    assert docs.status_code == 200, docs.content
    assert len(docs.json()["api_operations"]) == len(TEST_OPERATIONS)


def test_a_null_body_is_refused_everywhere(client_for: Any, operator: Any) -> None:
    # A body is a JSON object or nothing: null is neither, on the lifecycle and discovery alike.
    client = client_for(operator)
    for action in ("next", "docs", "search", "export", "refresh"):
        response = client.post(f"{TEST_API}/{action}", "null", content_type="application/json")
        refused = assert_error(response, 400, "invalid")
        assert refused["fields"] == {"non_field_errors": ["The body must be a JSON object."]}
    # No body at all is still an empty object where every field is optional.
    docs = client.post(f"{TEST_API}/docs", content_type="application/json")
    assert docs.status_code == 200, docs.content
    assert len(docs.json()["api_operations"]) == len(TEST_OPERATIONS)


def test_loose_ids_are_refused_not_looked_up(client_for: Any, operator: Any) -> None:
    # JSON booleans and numbers are not UUIDs: a 400 naming the field, not a 404 or a match.
    client = client_for(operator)
    for action, body, field in [
        ("search", {"department_ids": [False]}, "department_ids"),
        ("search", {"eval_ids": [1]}, "eval_ids"),
        ("docs", {"entity_id": 1}, "entity_id"),
        ("docs", {"entity_id": True}, "entity_id"),
        ("export", {"test_id": 1}, "test_id"),
        ("export", {"test_id": False}, "test_id"),
    ]:
        refused = assert_error(post(client, action, body), 400, "invalid")
        assert refused["fields"][field], (action, body)
