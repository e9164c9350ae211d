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


def test_a_null_body_is_refused_by_the_lifecycle_and_read_as_empty_by_discovery(
    client_for: Any, operator: Any
) -> None:
    client = client_for(operator)

    def post_null(action: str) -> Any:
        return client.post(f"{TEST_API}/{action}", "null", content_type="application/json")

    refused = assert_error(post_null("next"), 400, "invalid")
    assert "non_field_errors" in refused["fields"]
    docs = post_null("docs")
    assert docs.status_code == 200, docs.content
    assert len(docs.json()["api_operations"]) == len(TEST_OPERATIONS)
