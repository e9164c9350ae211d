"""The pages say what each test ran against, and start a test against a chosen target."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests import factories
from tests_app.actors import Actor
from tests_app.models import Test
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def local(research: Any) -> Any:
    return factories.OpenAITargetFactory.create(
        department=research, name="Local", model="qwen2.5:7b"
    )


def test_the_list_shows_the_target_and_filters_by_it(
    operator: Any, research: Any, benchmark: Any, local: Any
) -> None:
    actor = Actor(user=operator)
    on_local = start_test(actor=actor, benchmark_id=benchmark.pk, target_id=local.pk)
    on_default = start_test(actor=actor, benchmark_id=benchmark.pk)
    client = logged_in(operator)

    page = client.get("/tests/").content.decode()
    row = re.search(rf'data-test-id="{on_local.pk}">(.*?)</tr>', page, re.S)
    assert row
    assert 'data-label="Target">Local<br><span class="muted small">qwen2.5:7b</span>' in row.group(
        1
    )
    assert 'id="facet-target"' in page

    page = client.get("/tests/", {"target": str(local.pk)}).content.decode()
    assert f'data-test-id="{on_local.pk}"' in page
    assert f'data-test-id="{on_default.pk}"' not in page
    assert "of 1 test<" in page


def test_the_test_header_shows_what_it_ran_against(
    operator: Any, benchmark: Any, local: Any
) -> None:
    test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk, target_id=local.pk)
    local.model = "edited-later"
    local.save()

    page = logged_in(operator).get(f"/tests/{test.pk}/").content.decode()

    header = re.search(r'<dd id="test-target">(.*?)</dd>', page, re.S)
    assert header
    assert "Local" in header.group(1)
    assert "openai · qwen2.5:7b" in header.group(1)


def test_the_benchmarks_page_starts_a_test_against_a_chosen_target(
    operator: Any, benchmark: Any, local: Any, support: Any
) -> None:
    factories.TargetFactory.create(department=support, name="Not for Research")
    client = logged_in(operator)

    page = client.get("/benchmarks/").content.decode()
    assert f'<option value="{local.pk}">Local (qwen2.5:7b)</option>' in page
    assert "Not for Research" not in page

    response = client.post(
        "/benchmarks/", {"benchmark_id": benchmark.pk, "target_id": str(local.pk)}
    )

    test = Test.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/tests/{test.pk}/"
    assert (test.target, test.target_snapshot["model"]) == (local, "qwen2.5:7b")
