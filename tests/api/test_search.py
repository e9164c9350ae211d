"""POST /api/v5/artifacts/test/search: filters, facets, paging, scope and validation."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.test import APIClient

from tests import factories
from tests.conftest import require_service
from tests_app.actors import Actor
from tests_app.api.discovery_serializers import (
    ListFilterOptionSerializer,
    SearchTestItemSerializer,
    SearchTestResponseSerializer,
)
from tests_app.models import Department, Eval, Membership, Test, TestDayCount
from tests_app.selectors.search import search_tests
from tests_app.services.archiving import set_archived

pytestmark = pytest.mark.django_db

SEARCH = "/api/v5/artifacts/test/search"


def search(client: APIClient, **body: Any) -> Any:
    return client.post(SEARCH, body, format="json")


def make_test(*, eval: Any, created_at: datetime, **kwargs: Any) -> Any:
    benchmark = factories.BenchmarkFactory.create(eval=eval)
    return factories.TestFactory.create(benchmark=benchmark, created_at=created_at, **kwargs)


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def options_by_id(section: dict[str, Any]) -> dict[str, tuple[int, bool]]:
    return {option["id"]: (option["count"], option["selected"]) for option in section["options"]}


def test_it_works(client_for: Any, viewer: Any, research: Any, support: Any) -> None:
    rubric = factories.RubricFactory.create(name="Helpfulness rubric")
    alpha = factories.EvalFactory.create(name="Alpha", department=research, rubric=rubric)
    beta = factories.EvalFactory.create(name="Beta", department=research)
    creator = factories.UserFactory.create(
        username="creator", first_name="Ada", last_name="Lovelace"
    )
    older = make_test(eval=alpha, created_at=at(1), created_by=creator)
    newer = make_test(
        eval=beta,
        created_at=at(2),
        total_runs=4,
        completed_runs=3,
        graded_runs=2,
        passed_runs=1,
        score_sum=1.5,
        infinite_mode=True,
    )
    make_test(eval=factories.EvalFactory.create(department=support), created_at=at(3))

    response = search(client_for(viewer))

    assert response.status_code == 200
    body = response.json()
    assert body["actor_name"] == "viewer"
    assert body["total_count"] == 2
    assert [item["id"] for item in body["tests"]] == [str(newer.pk), str(older.pk)]
    first, second = body["tests"]
    assert first == {
        "id": str(newer.pk),
        "benchmark_id": str(newer.benchmark_id),
        "benchmark_name": newer.benchmark.name,
        "eval_id": str(beta.pk),
        "eval_name": "Beta",
        "department_id": str(research.pk),
        "department_name": "Research",
        "rubric_name": beta.rubric.name,
        "status": "pending",
        "infinite_mode": True,
        "is_archived": False,
        "created_at": "2026-03-02T12:00:00Z",
        "created_by_name": "",
        "target_name": newer.target.name,
        "model": "",
        "total_runs": 4,
        "completed_runs": 3,
        "pass_rate": 0.5,
        "mean_score": 0.75,
    }
    assert second["created_by_name"] == "Ada Lovelace"
    assert second["rubric_name"] == "Helpfulness rubric"
    assert second["pass_rate"] is None
    assert second["mean_score"] is None
    assert body["eval_filter"] == {
        "key": "eval_ids",
        "label": "Eval",
        "options": [
            {"id": str(alpha.pk), "label": "Alpha", "count": 1, "selected": False},
            {"id": str(beta.pk), "label": "Beta", "count": 1, "selected": False},
        ],
    }
    assert body["department_filter"]["options"] == [
        {"id": str(research.pk), "label": "Research", "count": 2, "selected": False}
    ]


def test_actor_name_is_the_display_name(client_for: Any, operator: Any) -> None:
    assert search(client_for(operator)).json()["actor_name"] == "Olive Operator"


def test_facets_leave_out_their_own_filter(client_for: Any, staff: Any, research: Any) -> None:
    other = factories.DepartmentFactory.create(name="Other")
    alpha = factories.EvalFactory.create(name="Alpha", department=research)
    beta = factories.EvalFactory.create(name="Beta", department=research)
    gamma = factories.EvalFactory.create(name="Gamma", department=other)
    for index, eval in enumerate([alpha, alpha, beta, gamma]):
        make_test(eval=eval, created_at=at(1 + index))

    body = search(client_for(staff), eval_ids=[str(alpha.pk)]).json()

    assert body["total_count"] == 2
    # The eval section ignores the eval filter: every eval keeps its count, alpha is selected.
    assert options_by_id(body["eval_filter"]) == {
        str(alpha.pk): (2, True),
        str(beta.pk): (1, False),
        str(gamma.pk): (1, False),
    }
    # The department section applies it: only alpha's department is left.
    assert options_by_id(body["department_filter"]) == {str(research.pk): (2, False)}

    body = search(client_for(staff), department_ids=[str(other.pk)], eval_ids=[str(beta.pk)])
    body = body.json()
    assert body["total_count"] == 0
    assert body["tests"] == []
    assert options_by_id(body["eval_filter"]) == {
        str(gamma.pk): (1, False),
        str(beta.pk): (0, True),
    }
    assert options_by_id(body["department_filter"]) == {
        str(research.pk): (1, False),
        str(other.pk): (0, True),
    }


def test_date_bounds_are_inclusive(client_for: Any, staff: Any, research: Any) -> None:
    eval = factories.EvalFactory.create(department=research)
    before = make_test(eval=eval, created_at=datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC))
    first = make_test(eval=eval, created_at=datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC))
    last = make_test(eval=eval, created_at=datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC))
    after = make_test(eval=eval, created_at=datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC))
    client = client_for(staff)

    def ids(**body: Any) -> set[str]:
        response = search(client, **body)
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["tests"]}

    # A date as both bounds means that whole day.
    assert ids(start_date="2026-03-01", end_date="2026-03-01") == {str(first.pk), str(last.pk)}
    assert ids(start_date="2026-03-01") == {str(first.pk), str(last.pk), str(after.pk)}
    assert ids(end_date="2026-02-28") == {str(before.pk)}
    # Date-times are inclusive at both ends, to the microsecond.
    assert ids(start_date="2026-03-01T00:00:00Z", end_date="2026-03-01T23:59:59.999999Z") == {
        str(first.pk),
        str(last.pk),
    }
    assert ids(start_date="2026-02-28T23:59:59+00:00", end_date="2026-03-01T00:00:00Z") == {
        str(before.pk),
        str(first.pk),
    }
    # An offset is honoured: 01:00+01:00 is midnight UTC.
    assert ids(start_date="2026-03-02T01:00:00+01:00") == {str(after.pk)}
    # A start later on the end day is still a valid range.
    assert ids(start_date="2026-03-01T12:00:00Z", end_date="2026-03-01") == {str(last.pk)}


@pytest.mark.parametrize(
    ("bounds", "found"),
    [
        ({"end_date": "9999-12-31"}, True),
        ({"end_date": "9999-12-31T23:59:59.999999Z"}, True),
        ({"end_date": "9999-12-31T23:59:59-14:00"}, True),
        ({"start_date": "0001-01-01"}, True),
        ({"start_date": "0001-01-01T00:00:00+14:00"}, True),
        ({"start_date": "0001-01-01", "end_date": "9999-12-31"}, True),
        ({"start_date": "9999-12-31"}, False),
        ({"start_date": "9999-12-31T23:59:59-14:00"}, False),
        ({"end_date": "0001-01-01"}, False),
        ({"end_date": "0001-01-01T00:00:00+14:00"}, False),
        ({"start_date": "9999-12-31T23:59:59-14:00", "end_date": "9999-12-31"}, False),
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_answered(
    client_for: Any, staff: Any, research: Any, bounds: dict[str, str], found: bool
) -> None:
    # Shifting these to UTC, to a midnight or by a day leaves the years 1..9999 (a 500 before).
    test = make_test(eval=factories.EvalFactory.create(department=research), created_at=at(1))
    response = search(client_for(staff), **bounds)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [item["id"] for item in body["tests"]] == ([str(test.pk)] if found else [])
    assert body["total_count"] == (1 if found else 0)


def test_start_after_end_is_an_empty_range(client_for: Any, staff: Any, research: Any) -> None:
    make_test(eval=factories.EvalFactory.create(department=research), created_at=at(1))
    for start, end in [
        ("2026-03-02", "2026-03-01"),
        ("2026-03-01T00:00:01Z", "2026-03-01T00:00:00Z"),
        ("2026-03-02T00:00:00Z", "2026-03-01"),
    ]:
        response = search(client_for(staff), start_date=start, end_date=end)
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["tests"], body["total_count"]) == ([], 0)
        assert all(option["count"] == 0 for option in body["eval_filter"]["options"])


def test_archived_filter_null_true_false(client_for: Any, staff: Any, research: Any) -> None:
    eval = factories.EvalFactory.create(department=research)
    live = make_test(eval=eval, created_at=at(1))
    archived = make_test(eval=eval, created_at=at(2), is_archived=True)
    client = client_for(staff)

    def ids(**body: Any) -> list[str]:
        return [item["id"] for item in search(client, **body).json()["tests"]]

    assert ids() == [str(archived.pk), str(live.pk)]
    assert ids(is_archived=None) == [str(archived.pk), str(live.pk)]
    assert ids(is_archived=True) == [str(archived.pk)]
    assert ids(is_archived=False) == [str(live.pk)]


def test_name_searches_are_case_insensitive_substrings(
    client_for: Any, staff: Any, research: Any
) -> None:
    lab = factories.DepartmentFactory.create(name="Applied Lab")
    summarise = factories.EvalFactory.create(name="Summarisation 100%", department=research)
    chat = factories.EvalFactory.create(name="Chat_Helpfulness", department=lab)
    first = make_test(eval=summarise, created_at=at(1))
    second = make_test(eval=chat, created_at=at(2))
    client = client_for(staff)

    def ids(**body: Any) -> set[str]:
        return {item["id"] for item in search(client, **body).json()["tests"]}

    assert ids(eval_search="MARIS") == {str(first.pk)}
    assert ids(eval_search="t_h") == {str(second.pk)}
    # LIKE wildcards are matched literally.
    assert ids(eval_search="%") == {str(first.pk)}
    assert ids(eval_search="_") == {str(second.pk)}
    assert ids(department_search="lab") == {str(second.pk)}
    assert ids(department_search="SEARCH", eval_search="chat") == set()
    assert ids(eval_search="") == {str(first.pk), str(second.pk)}


def test_paging(client_for: Any, staff: Any, research: Any) -> None:
    eval = factories.EvalFactory.create(department=research)
    tests = [make_test(eval=eval, created_at=at(day)) for day in range(1, 8)]
    newest_first = [str(test.pk) for test in reversed(tests)]
    client = client_for(staff)

    body = search(client).json()
    assert [item["id"] for item in body["tests"]] == newest_first
    body = search(client, page_size=3, page_offset=2).json()
    assert [item["id"] for item in body["tests"]] == newest_first[2:5]
    assert body["total_count"] == 7
    body = search(client, page_size=3, page_offset=7).json()
    assert body["tests"] == []
    assert body["total_count"] == 7


def test_default_page_size_is_20(client_for: Any, staff: Any, research: Any) -> None:
    eval = factories.EvalFactory.create(department=research)
    for minute in range(21):
        make_test(eval=eval, created_at=at(1, minute=minute))
    body = search(client_for(staff)).json()
    assert len(body["tests"]) == 20
    assert body["total_count"] == 21


def test_outsider_sees_nothing_and_facets_leak_nothing(
    client_for: Any, outsider: Any, research: Any
) -> None:
    secret = factories.EvalFactory.create(name="Secret eval", department=research)
    make_test(eval=secret, created_at=at(1))
    client = client_for(outsider)

    for body in [
        search(client).json(),
        search(client, eval_ids=[str(secret.pk)], department_ids=[str(research.pk)]).json(),
        search(client, eval_search="secret", department_search="research").json(),
    ]:
        assert body["tests"] == []
        assert body["total_count"] == 0
        # Not even a selected option with count 0: that would confirm the id exists.
        assert body["eval_filter"]["options"] == []
        assert body["department_filter"]["options"] == []
        assert "Secret" not in str(body)


def test_no_credentials_is_401() -> None:
    response = APIClient().post(SEARCH, {}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": "5"}, "page_size"),
        ({"page_offset": -1}, "page_offset"),
        ({"start_date": "2026-13-01"}, "start_date"),
        ({"end_date": "yesterday"}, "end_date"),
        ({"start_date": 20260301}, "start_date"),
        ({"is_archived": "yes"}, "is_archived"),
        ({"eval_ids": ["not-a-uuid"]}, "eval_ids"),
        ({"department_ids": "not-a-list"}, "department_ids"),
        ({"eval_ids": [str(uuid.uuid4()) for _ in range(101)]}, "eval_ids"),
        ({"eval_search": "x" * 201}, "eval_search"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_validation_errors_are_400(
    client_for: Any, viewer: Any, body: dict[str, Any], field: str
) -> None:
    response = search(client_for(viewer), **body)
    assert response.status_code == 400
    data = response.json()
    assert data["code"] == "invalid"
    assert field in data["fields"]
    assert data["detail"].startswith("The request is invalid")


def test_page_size_100_is_accepted(client_for: Any, viewer: Any) -> None:
    body = search(client_for(viewer), page_size=100, page_offset=0).json()
    assert body["tests"] == []
    assert body["total_count"] == 0


def test_query_count_does_not_grow_with_the_data(
    client_for: Any, viewer: Any, research: Any
) -> None:
    client = client_for(viewer)

    def queries_for_one_search() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = search(client, eval_search="e", page_size=100)
        assert response.status_code == 200
        return len(captured.captured_queries)

    evals = [factories.EvalFactory.create(name=f"Eval {n}", department=research) for n in range(3)]
    make_test(eval=evals[0], created_at=at(1))
    queries_for_one_search()  # warms the facet catalogue cache
    small = queries_for_one_search()
    # Unhashed passwords: the creators never log in, and hashing is slow.
    creators = [factories.UserFactory.create(password="!") for _ in range(3)]
    for index in range(30):
        make_test(
            eval=evals[index % 3], created_at=at(2 + index % 20), created_by=creators[index % 3]
        )
    queries_for_one_search()
    large = queries_for_one_search()
    assert small == large
    # One grouping for the total and both facets, and the page; plus the API key lookup and the
    # memberships unless the shared cache holds them (tests_app.api.authentication).
    authentication = 0 if settings.API_KEY_CACHE_SECONDS > 0 else 2
    assert large == 2 + authentication


# --- the facets and the total against a brute-force computation -----------------------------

NAME_ALPHABET = "aAbB_%"


@st.composite
def worlds(draw: Any) -> dict[str, Any]:
    department_names = draw(
        st.lists(st.text(NAME_ALPHABET, min_size=1, max_size=3), min_size=3, max_size=3)
    )
    eval_count = draw(st.integers(1, 4))
    evals = [
        {
            "department": draw(st.integers(0, 2)),
            "name": draw(st.text(NAME_ALPHABET, min_size=1, max_size=4)),
        }
        for _ in range(eval_count)
    ]
    tests = draw(
        st.lists(
            st.tuples(
                st.integers(0, eval_count - 1),  # eval
                st.integers(0, 4),  # day
                st.integers(0, 23),  # hour
                st.booleans(),  # archived
            ),
            max_size=14,
        )
    )
    return {
        "departments": department_names,
        "evals": evals,
        "tests": tests,
        "staff": draw(st.booleans()),
        "member_of": draw(st.sets(st.integers(0, 2), max_size=3)),
    }


@st.composite
def queries(draw: Any) -> dict[str, Any]:
    start = draw(st.none() | st.integers(0, 4))
    end = draw(st.none() | st.integers(0, 4))
    if start is not None and end is not None and start > end:
        start, end = end, start
    return {
        "eval_ids": draw(st.none() | st.sets(st.integers(0, 3), max_size=3)),
        "department_ids": draw(st.none() | st.sets(st.integers(0, 2), max_size=2)),
        "is_archived": draw(st.none() | st.booleans()),
        "start": start,
        "end": end,
        "eval_search": draw(st.none() | st.text(NAME_ALPHABET, max_size=2)),
        "department_search": draw(st.none() | st.text(NAME_ALPHABET, max_size=2)),
        "page_size": draw(st.integers(1, 5)),
        "page_offset": draw(st.integers(0, 6)),
    }


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds(), query=queries())
def test_facets_and_total_match_brute_force(world: dict[str, Any], query: dict[str, Any]) -> None:
    first_day = date(2026, 4, 1)
    with transaction.atomic():
        departments = [
            factories.DepartmentFactory.create(name=f"{name} {index}")
            for index, name in enumerate(world["departments"])
        ]
        evals = [
            factories.EvalFactory.create(
                name=spec["name"], department=departments[spec["department"]]
            )
            for spec in world["evals"]
        ]
        user = factories.UserFactory.create(is_staff=world["staff"], password="!")
        for index in world["member_of"]:
            factories.MembershipFactory.create(
                user=user, department=departments[index], role=Membership.Role.VIEWER
            )
        tests = [
            make_test(
                eval=evals[eval_index],
                created_at=datetime.combine(
                    first_day + timedelta(days=day), datetime.min.time(), tzinfo=UTC
                )
                + timedelta(hours=hour),
                is_archived=archived,
            )
            for eval_index, day, hour, archived in world["tests"]
        ]

        eval_ids = (
            None
            if query["eval_ids"] is None
            else [evals[i].pk for i in query["eval_ids"] if i < len(evals)]
        )
        department_ids = (
            None
            if query["department_ids"] is None
            else [departments[i].pk for i in query["department_ids"]]
        )
        start = None if query["start"] is None else first_day + timedelta(days=query["start"])
        end = None if query["end"] is None else first_day + timedelta(days=query["end"])
        result = search_tests(
            actor=Actor(user=user),
            eval_ids=eval_ids,
            department_ids=department_ids,
            is_archived=query["is_archived"],
            start_date=start,
            end_date=end,
            eval_search=query["eval_search"],
            department_search=query["department_search"],
            page_size=query["page_size"],
            page_offset=query["page_offset"],
        )

        visible = (
            {d.pk for d in departments}
            if world["staff"]
            else {departments[i].pk for i in world["member_of"]}
        )

        def matches(test: Any, *, skip_eval: bool = False, skip_department: bool = False) -> bool:
            day = test.created_at.date()
            return (
                test.department_id in visible
                and (skip_eval or not eval_ids or test.eval_id in eval_ids)
                and (skip_department or not department_ids or test.department_id in department_ids)
                and (query["is_archived"] is None or test.is_archived == query["is_archived"])
                and (start is None or day >= start)
                and (end is None or day <= end)
                and (
                    not query["eval_search"]
                    or query["eval_search"].lower() in test.eval.name.lower()
                )
                and (
                    not query["department_search"]
                    or query["department_search"].lower() in test.department.name.lower()
                )
            )

        expected = sorted(
            (test for test in tests if matches(test)),
            key=lambda test: (-test.created_at.timestamp(), str(test.pk)),
        )
        assert result.total_count == len(expected)
        offset, size = query["page_offset"], query["page_size"]
        assert [row.id for row in result.tests] == [
            test.pk for test in expected[offset : offset + size]
        ]

        eval_counts = Counter(str(t.eval_id) for t in tests if matches(t, skip_eval=True))
        department_counts = Counter(
            str(t.department_id) for t in tests if matches(t, skip_department=True)
        )
        selected_evals = {str(pk) for pk in eval_ids or []}
        selected_departments = {str(pk) for pk in department_ids or []}
        visible_selected_evals = {
            str(e.pk) for e in evals if str(e.pk) in selected_evals and e.department_id in visible
        }
        visible_selected_departments = {
            str(pk) for pk in visible if str(pk) in selected_departments
        }
        expected_evals = {
            key: (eval_counts.get(key, 0), key in selected_evals)
            for key in set(eval_counts) | visible_selected_evals
        }
        expected_departments = {
            key: (department_counts.get(key, 0), key in selected_departments)
            for key in set(department_counts) | visible_selected_departments
        }
        assert options_by_id(_section(result.eval_filter)) == expected_evals
        assert options_by_id(_section(result.department_filter)) == expected_departments
        labels = {str(e.pk): e.name for e in evals}
        assert all(option.label == labels[option.id] for option in result.eval_filter.options)
        transaction.set_rollback(True)


def _section(section: Any) -> dict[str, Any]:
    return {
        "options": [{"id": o.id, "count": o.count, "selected": o.selected} for o in section.options]
    }


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("model", "index"),
    [(Eval, "eval_name_trgm_idx"), (Department, "department_name_trgm_idx")],
)
def test_name_searches_can_use_the_trigram_indexes(model: Any, index: str) -> None:
    if connection.vendor != "postgresql":
        require_service("the trigram indexes exist on PostgreSQL only")
    # The index is on UPPER(name::text), the expression Django's icontains compiles to.
    sql, params = model.objects.filter(name__icontains="ab%c").values("id").query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        # Otherwise, with the statistics earlier tests leave, a full walk of the unique name
        # index (filtering every row) can cost less on a tiny table and hide what is tested.
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan


# --- the day counts that the total and the facets are summed from ------------------------------


def _day_counts_from_tests() -> Counter[tuple[str, str, str, bool, date]]:
    return Counter(
        (
            str(test.eval_id),
            str(test.department_id),
            str(test.target_id),
            test.is_archived,
            test.created_at.date(),
        )
        for test in Test.objects.all()
    )


def _day_counts() -> Counter[tuple[str, str, str, bool, date]]:
    return Counter(
        {
            (
                str(row.eval_id),
                str(row.department_id),
                str(row.target_id),
                row.is_archived,
                row.day,
            ): row.count
            for row in TestDayCount.objects.filter(count__gt=0)
        }
    )


def test_day_counts_follow_every_write(operator: Any, research: Any) -> None:
    """Inserts (one by one and in bulk), archive through the service, direct updates of each
    counted column, and deletes all move the counts in the same transaction."""
    alpha = factories.EvalFactory.create(department=research)
    beta = factories.EvalFactory.create(department=research)
    other = factories.DepartmentFactory.create(name="Other")
    first = make_test(eval=alpha, created_at=at(1, 23, 59, 59))
    second = make_test(eval=alpha, created_at=at(2, 0, 0, 0))
    third = make_test(eval=beta, created_at=at(2, 12))
    assert _day_counts() == _day_counts_from_tests()
    assert sum(_day_counts().values()) == 3

    benchmark = factories.BenchmarkFactory.create(eval=beta)
    Test.objects.bulk_create(
        [
            Test(
                benchmark=benchmark,
                eval=beta,
                department=research,
                target=benchmark.default_target,
                created_at=at(day),
            )
            for day in (3, 3, 4)
        ]
    )
    assert _day_counts() == _day_counts_from_tests()

    assert set_archived(actor=Actor(user=operator), test_ids=[first.pk, third.pk], archived=True)
    assert _day_counts() == _day_counts_from_tests()
    assert (
        _day_counts()[
            (str(alpha.pk), str(research.pk), str(first.target_id), True, date(2026, 3, 1))
        ]
        == 1
    )

    Test.objects.filter(pk=second.pk).update(created_at=at(5))
    Test.objects.filter(pk=third.pk).update(eval=alpha, department=other)
    Test.objects.filter(pk=second.pk).update(target=third.target)
    # An update that changes none of the counted columns changes no count.
    Test.objects.filter(pk=first.pk).update(status="running", completed_runs=3)
    second.refresh_from_db()
    second.is_archived = True
    second.save()
    assert _day_counts() == _day_counts_from_tests()

    Test.objects.filter(pk__in=[first.pk, third.pk]).delete()
    assert _day_counts() == _day_counts_from_tests()
    assert sum(_day_counts().values()) == Test.objects.count() == 4


@hypothesis_settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    hours=st.lists(
        st.tuples(st.integers(0, 4 * 24 - 1), st.integers(0, 3599), st.booleans()),
        min_size=4,
        max_size=14,
    ),
    start=st.none() | st.integers(0, 5 * 24 * 3600),
    length=st.none() | st.integers(0, 4 * 24 * 3600),
    date_only=st.booleans(),
    is_archived=st.none() | st.booleans(),
)
# A test on each partial day and one on a whole day between them.
@example(
    hours=[(6, 0, False), (30, 0, False), (49, 0, True), (54, 0, False)],
    start=3 * 3600,
    length=2 * 24 * 3600,
    date_only=False,
    is_archived=None,
)
# Open-ended at one side, then the other.
@example(
    hours=[(1, 0, False), (50, 5, False)],
    start=None,
    length=None,
    date_only=False,
    is_archived=False,
)
@example(
    hours=[(1, 0, False), (50, 5, False)],
    start=25 * 3600,
    length=None,
    date_only=False,
    is_archived=None,
)
def test_total_and_facets_with_date_times_match_brute_force(
    hours: list[tuple[int, int, bool]],
    start: int | None,
    length: int | None,
    date_only: bool,
    is_archived: bool | None,
) -> None:
    """Date-time bounds cut days in parts: whole days come from the day counts, the partial first
    and last day from the tests themselves; together they must count every test exactly once."""
    first_moment = datetime(2026, 4, 1, tzinfo=UTC)
    with transaction.atomic():
        department = factories.DepartmentFactory.create(name="Bounds")
        evals = [factories.EvalFactory.create(department=department) for _ in range(2)]
        user = factories.UserFactory.create(is_staff=True, password="!")
        tests = [
            make_test(
                eval=evals[index % 2],
                created_at=first_moment + timedelta(hours=hour, seconds=second),
                is_archived=archived,
            )
            for index, (hour, second, archived) in enumerate(hours)
        ]
        lower = None if start is None else first_moment + timedelta(seconds=start)
        upper = None if lower is None or length is None else lower + timedelta(seconds=length)
        if date_only:
            bounds: dict[str, Any] = {
                "start_date": lower.date() if lower else None,
                "end_date": upper.date() if upper else None,
            }
            lower = None if lower is None else datetime.combine(lower.date(), time.min, UTC)
            upper = (
                None
                if upper is None
                else datetime.combine(upper.date(), time.min, UTC) + timedelta(days=1)
            )
        else:
            bounds = {"start_date": lower, "end_date": upper}
            upper = None if upper is None else upper + timedelta(microseconds=1)

        result = search_tests(actor=Actor(user=user), is_archived=is_archived, **bounds)

        matching = [
            test
            for test in tests
            if (lower is None or test.created_at >= lower)
            and (upper is None or test.created_at < upper)
            and (is_archived is None or test.is_archived == is_archived)
        ]
        assert result.total_count == len(matching)
        by_eval = Counter(str(test.eval_id) for test in matching)
        assert {option.id: option.count for option in result.eval_filter.options} == by_eval
        transaction.set_rollback(True)


def test_the_page_reads_only_what_it_shows(client_for: Any, staff: Any, research: Any) -> None:
    creator = factories.UserFactory.create(
        username="creator", first_name="Ada", last_name="Lovelace"
    )
    test = make_test(
        eval=factories.EvalFactory.create(department=research), created_at=at(1), created_by=creator
    )
    client = client_for(staff)
    search(client)  # warms the facet catalogue cache
    with CaptureQueriesContext(connection) as captured:
        body = search(client).json()
    assert [item["id"] for item in body["tests"]] == [str(test.pk)]
    assert body["tests"][0]["created_by_name"] == "Ada Lovelace"
    assert body["tests"][0]["benchmark_name"] == test.benchmark.name
    page_sql = [
        query["sql"]
        for query in captured.captured_queries
        if "ORDER BY" in query["sql"] and "LIMIT" in query["sql"]
    ]
    assert len(page_sql) == 1
    # Not the password hash, nor the benchmark's target, nor the rubric's criteria.
    for column in ('"password"', '"target"', '"criteria"', '"judge_instructions"'):
        assert column not in page_sql[0]


def test_items_and_options_render_as_their_declared_fields(staff: Any, research: Any) -> None:
    """The item and option serializers build their dicts directly for speed; DRF's own
    field-by-field rendering of the declared fields must give the same JSON."""
    creator = factories.UserFactory.create(
        username="creator", first_name="Ada", last_name="Lovelace"
    )
    eval = factories.EvalFactory.create(department=research)
    make_test(eval=eval, created_at=at(1), created_by=creator)
    make_test(
        eval=eval,
        created_at=datetime(2026, 3, 2, 8, 30, 15, 123456, tzinfo=UTC),
        total_runs=4,
        completed_runs=3,
        graded_runs=3,
        passed_runs=2,
        score_sum=2.2,
        infinite_mode=True,
        is_archived=True,
        status="running",
    )
    result = search_tests(actor=Actor(user=staff), eval_ids=[eval.pk])
    assert len(result.tests) == 2
    item = SearchTestItemSerializer()
    for test in result.tests:
        fast = item.to_representation(test)
        assert fast == serializers.Serializer.to_representation(item, test)
        assert list(fast) == list(item.fields)
    option = ListFilterOptionSerializer()
    options = [*result.eval_filter.options, *result.department_filter.options]
    assert options
    for choice in options:
        assert option.to_representation(choice) == serializers.Serializer.to_representation(
            option, choice
        )
    response = SearchTestResponseSerializer()
    fast_response = response.to_representation(result)
    assert fast_response == serializers.Serializer.to_representation(response, result)
    assert list(fast_response) == list(response.fields)
    assert [item["id"] for item in fast_response["tests"]] == [str(row.id) for row in result.tests]
