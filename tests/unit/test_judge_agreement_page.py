"""/judges/agreement/: the agreement table beside the newest disagreements."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from tests import factories
from tests.api.test_judge_agreement import graded_test, pair

pytestmark = pytest.mark.django_db


def page(user: Any, query: str = "") -> Any:
    client = Client()
    client.force_login(user)
    return client.get(f"/judges/agreement/{query}")


@pytest.fixture
def graded(research: Any, support: Any) -> dict[str, Any]:
    rubric = factories.RubricFactory.create(name="Support quality")
    test = graded_test(research, rubric)
    agreeing = [pair(test, (0.2 * n, n > 2), (0.2 * n, n > 2), "judge-a") for n in range(5)]
    disagreeing = pair(test, (0.9, True), (0.1, False), "judge-a")
    hidden = graded_test(support, factories.RubricFactory.create(name="Hidden rubric"))
    pair(hidden, (1.0, True), (0.0, False), "judge-a")
    return {"rubric": rubric, "test": test, "agreeing": agreeing, "disagreeing": disagreeing}


def test_it_shows_the_figures_and_the_disagreements(viewer: Any, graded: dict[str, Any]) -> None:
    response = page(viewer)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Support quality" in html
    assert '<td data-label="Pairs">6</td>' in html
    assert "Hidden rubric" not in html
    disagreeing = graded["disagreeing"]
    link = f"/tests/{graded['test'].pk}/?invocation={disagreeing.pk}"
    assert link in html
    assert "The judge missed the refund amount." in html
    # Agreeing pairs are not listed as disagreements.
    for invocation in graded["agreeing"]:
        assert f"?invocation={invocation.pk}" not in html


def test_a_rubric_of_another_department_is_not_found(outsider: Any, graded: dict[str, Any]) -> None:
    assert page(outsider, f"?rubric={graded['rubric'].pk}").status_code == 404
    assert page(outsider, "?rubric=nope").status_code == 404
    assert page(outsider, f"?rubric={uuid.uuid4()}").status_code == 404
    assert "Hidden rubric" in page(outsider).content.decode()


def test_a_rubric_page_names_it(operator: Any, graded: dict[str, Any]) -> None:
    html = page(operator, f"?rubric={graded['rubric'].pk}").content.decode()
    assert "<h1>Judge agreement: Support quality</h1>" in html
    assert "All rubrics" in html


def test_it_needs_a_login(client: Any) -> None:
    response = client.get("/judges/agreement/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
