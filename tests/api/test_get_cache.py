"""get of a completed test is cached, and every change that shows in it invalidates the cache."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories
from tests.api.lifecycle_support import agent, post
from tests_app.actors import Actor
from tests_app.models import Grade, Test, TestInvocation
from tests_app.services.archiving import set_archived
from tests_app.services.claiming import claim_next_run
from tests_app.services.ending import end_invocation
from tests_app.services.exporting import export_test
from tests_app.services.regrading import regrade_invocation
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db(transaction=True)


def completed_test(operator: Any, research: Any) -> tuple[Test, TestInvocation]:
    benchmark = factories.make_benchmark(department=research, entries=1, turns=1)
    actor = agent(operator)
    test = start_test(actor=actor, benchmark_id=benchmark.pk, infinite_mode=False)
    invocation = claim_next_run(actor=actor, test_id=test.pk).invocation
    TestInvocation.objects.filter(pk=invocation.pk).update(status="replayed")
    end_invocation(
        actor=actor,
        test_id=test.pk,
        invocation_id=invocation.pk,
        run_id=invocation.run_id,
        grade=False,
        score=0.4,
        passed=None,
        feedback="first",
    )
    test.refresh_from_db()
    assert test.status == Test.Status.COMPLETED
    return test, invocation


def get(client: Any, test: Test) -> tuple[dict[str, Any], int]:
    with CaptureQueriesContext(connection) as queries:
        body = post(client, "get", {"test_id": str(test.pk)}).json()
    return body, len(queries.captured_queries)


def test_a_completed_test_is_served_from_the_cache(
    client_for: Any, operator: Any, research: Any
) -> None:
    test, _ = completed_test(operator, research)
    client = client_for(operator)
    first, first_queries = get(client, test)
    second, second_queries = get(client, test)
    assert second == first
    assert second_queries < first_queries
    assert first["status"] == "completed"
    assert first["show_controls"] is False


def test_a_new_grade_shows_at_once(client_for: Any, operator: Any, research: Any) -> None:
    test, invocation = completed_test(operator, research)
    client = client_for(operator)
    before, _ = get(client, test)
    assert before["runs"][0]["score"] == pytest.approx(0.4)

    regrade_invocation(
        actor=Actor(user=operator, client="browser"),
        invocation_id=invocation.pk,
        score=0.9,
        passed=True,
        feedback="A person looked again.",
        reason="The judge missed the second answer.",
    )
    after, _ = get(client, test)
    assert after["runs"][0]["score"] == pytest.approx(0.9)
    assert after["invocations"][0]["grade"]["source"] == Grade.Source.HUMAN


def test_archive_and_export_show_at_once(client_for: Any, operator: Any, research: Any) -> None:
    test, _ = completed_test(operator, research)
    client = client_for(operator)
    before, _ = get(client, test)
    assert before["test"]["is_archived"] is False
    assert before["resources"]["exports"] == []

    export = export_test(actor=agent(operator), test_id=test.pk)
    with_export, _ = get(client, test)
    assert [item["upload_id"] for item in with_export["resources"]["exports"]] == [
        str(export.upload_id)
    ]

    assert set_archived(actor=agent(operator), test_ids=[test.pk], archived=True) == 1
    archived, _ = get(client, test)
    assert archived["test"]["is_archived"] is True
