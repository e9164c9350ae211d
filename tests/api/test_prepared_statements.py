"""next's claim and run's mark are prepared on Django's connection (tests_app.db), and are
plain client-bound statements when prepared statements are turned off."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from tests.api.lifecycle_support import post, started_test
from tests_app.db import hot_cursor

pytestmark = pytest.mark.django_db


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture(autouse=True)
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")


def claim_and_run(client: Any, test_id: str) -> dict[str, Any]:
    claimed = post(client, "next", {"test_id": test_id})
    assert claimed.status_code == 200, claimed.json()
    body = claimed.json()
    ids = {
        "test_id": test_id,
        "test_invocation_id": body["invocation_id"],
        "run_id": body["run_id"],
    }
    ran = post(client, "run", ids)
    assert ran.status_code == 200, ran.json()
    return dict(body)


def test_the_claim_and_the_mark_are_prepared_once_and_reused(
    client_for: Any, operator: Any, benchmark: Any, settings: Any
) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = True
    client = client_for(operator)
    test_id = str(started_test(operator, benchmark).pk)

    first = claim_and_run(client, test_id)
    after_one = prepared_statements()
    second = claim_and_run(client, test_id)

    assert first["run_id"] != second["run_id"]
    assert any("SKIP LOCKED" in statement for statement in after_one)
    assert any("SET task_id" in statement for statement in after_one)
    # The second calls reused them: no new statement was prepared.
    assert sorted(prepared_statements()) == sorted(after_one)


def test_nothing_is_prepared_when_turned_off(
    client_for: Any, operator: Any, benchmark: Any, settings: Any
) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = False
    client = client_for(operator)
    test_id = str(started_test(operator, benchmark).pk)
    before = prepared_statements()

    claim_and_run(client, test_id)

    assert prepared_statements() == before


def test_a_hot_statement_is_logged_with_its_values_while_queries_are_captured(
    settings: Any, django_assert_num_queries: Any
) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = True
    with django_assert_num_queries(1) as captured, hot_cursor() as cursor:
        cursor.execute("SELECT %(n)s::int + 1", {"n": 41})
        assert cursor.fetchone() == (42,)
    assert captured.captured_queries[0]["sql"] == "SELECT 41::int + 1"
