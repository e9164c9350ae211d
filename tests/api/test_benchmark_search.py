"""POST /api/v5/artifacts/benchmark/search"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import assert_error

pytestmark = pytest.mark.django_db

URL = "/api/v5/artifacts/benchmark/search"


def search(client: Any, body: dict[str, Any] | None = None) -> Any:
    return client.post(URL, body or {}, format="json")


@pytest.fixture
def world(research: Any, support: Any) -> dict[str, Any]:
    rubric = factories.RubricFactory.create(name="Helpfulness rubric")
    chat = factories.EvalFactory.create(name="Chat quality", department=research, rubric=rubric)
    tools = factories.EvalFactory.create(name="Tool use", department=research)
    alpha = factories.make_benchmark(department=research, entries=3, name="Alpha", eval=chat)
    beta = factories.make_benchmark(
        department=research,
        entries=1,
        name="Beta",
        eval=tools,
        runs_per_entry=2,
        target={"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
    )
    hidden = factories.make_benchmark(department=support, entries=1, name="Alpha support")
    return {"chat": chat, "tools": tools, "alpha": alpha, "beta": beta, "hidden": hidden}


def test_it_lists_visible_benchmarks(client_for: Any, viewer: Any, world: Any) -> None:
    response = search(client_for(viewer))

    assert response.status_code == 200
    body = response.json()
    assert body["total_count"] == 2
    alpha, chat = world["alpha"], world["chat"]
    target = alpha.default_target
    assert body["benchmarks"][0] == {
        "id": str(alpha.pk),
        "name": "Alpha",
        "eval_id": str(chat.pk),
        "eval_name": "Chat quality",
        "department_id": str(chat.department_id),
        "department_name": "Research",
        "rubric_name": "Helpfulness rubric",
        "entries": 3,
        "runs_per_entry": 1,
        "target_kind": "reference",
        "target_id": str(target.pk),
        "target_name": target.name,
        "model": "",
    }
    beta = body["benchmarks"][1]
    assert (beta["name"], beta["entries"], beta["runs_per_entry"], beta["target_kind"]) == (
        "Beta",
        1,
        2,
        "openai",
    )
    # The default target is named, so an agent knows what start runs against.
    assert (beta["target_name"], beta["model"]) == (world["beta"].default_target.name, "m")


def test_staff_sees_every_department(client_for: Any, staff: Any, world: Any) -> None:
    body = search(client_for(staff)).json()

    assert body["total_count"] == 3
    assert [item["name"] for item in body["benchmarks"]] == ["Alpha", "Alpha support", "Beta"]


def test_filters_combine(client_for: Any, operator: Any, world: Any) -> None:
    client = client_for(operator)

    by_name = search(client, {"search": "alp"}).json()
    by_eval_name = search(client, {"search": "TOOL"}).json()
    by_eval = search(client, {"eval_ids": [str(world["chat"].pk)]}).json()
    by_department = search(client, {"department_ids": [str(world["chat"].department_id)]}).json()
    none = search(client, {"search": "beta", "eval_ids": [str(world["chat"].pk)]}).json()

    assert [item["name"] for item in by_name["benchmarks"]] == ["Alpha"]
    assert [item["name"] for item in by_eval_name["benchmarks"]] == ["Beta"]
    assert [item["name"] for item in by_eval["benchmarks"]] == ["Alpha"]
    assert by_department["total_count"] == 2
    assert none == {"benchmarks": [], "total_count": 0}


def test_paging(client_for: Any, operator: Any, world: Any) -> None:
    body = search(client_for(operator), {"page_size": 1, "page_offset": 1}).json()

    assert [item["name"] for item in body["benchmarks"]] == ["Beta"]
    assert body["total_count"] == 2


def test_it_does_not_reveal_other_departments(client_for: Any, outsider: Any, world: Any) -> None:
    # Filtering on a department one cannot see finds nothing rather than an error.
    body = search(
        client_for(outsider), {"department_ids": [str(world["chat"].department_id)]}
    ).json()

    assert body == {"benchmarks": [], "total_count": 0}
    own = search(client_for(outsider)).json()
    assert [item["name"] for item in own["benchmarks"]] == ["Alpha support"]


def test_the_query_count_is_bounded(
    client_for: Any, operator: Any, research: Any, django_assert_max_num_queries: Any
) -> None:
    for _ in range(25):
        factories.make_benchmark(department=research, entries=2)
    client = client_for(operator)
    search(client)  # the key's last_used_at is written on first use

    with django_assert_max_num_queries(5):
        body = search(client, {"page_size": 100}).json()

    assert body["total_count"] == 25
    assert {item["entries"] for item in body["benchmarks"]} == {2}


def test_a_benchmark_without_entries_counts_zero(
    client_for: Any, operator: Any, research: Any
) -> None:
    factories.make_benchmark(department=research, entries=0, name="Empty")

    body = search(client_for(operator)).json()

    assert [(item["name"], item["entries"]) for item in body["benchmarks"]] == [("Empty", 0)]


def test_it_requires_credentials(client: Any, world: Any) -> None:
    response = client.post(URL, {}, content_type="application/json")

    assert_error(response, 401, "not_authenticated")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_offset": -1}, "page_offset"),
        ({"eval_ids": ["nope"]}, "eval_ids"),
        ({"department_ids": "x"}, "department_ids"),
        ({"search": 5}, "search"),
        ({"name": "Alpha"}, "name"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, body: dict[str, Any], field: str
) -> None:
    error = assert_error(search(client_for(operator), body), 400, "invalid")

    assert field in error["fields"]


def test_nulls_mean_no_filter(client_for: Any, operator: Any, world: Any) -> None:
    body = search(
        client_for(operator), {"search": None, "eval_ids": None, "department_ids": None}
    ).json()

    assert body["total_count"] == 2


def test_an_unknown_eval_id_finds_nothing(client_for: Any, operator: Any, world: Any) -> None:
    body = search(client_for(operator), {"eval_ids": [str(uuid.uuid4())]}).json()

    assert body == {"benchmarks": [], "total_count": 0}
