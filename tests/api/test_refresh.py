"""POST /api/v5/artifacts/test/refresh, the analytics views, the beat task and the cache tags."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from tests import factories
from tests_app import cache_tags, tasks
from tests_app.services.refresh import ANALYTICS_VIEWS

pytestmark = pytest.mark.django_db

REFRESH = "/api/v5/artifacts/test/refresh"
VIEWS = ["analytics_eval_daily", "analytics_department"]
TAGS = ["test-docs", "test-facets", "test-detail"]


def eval_daily(eval_id: Any) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT day, tests, runs, graded, passed, mean_score FROM analytics_eval_daily "
            "WHERE eval_id = %s ORDER BY day",
            [eval_id.hex if connection.vendor == "sqlite" else eval_id],
        )
        return [
            (
                row[0] if isinstance(row[0], date) else date.fromisoformat(row[0]),
                *row[1:5],
                None if row[5] is None else round(float(row[5]), 6),
            )
            for row in cursor.fetchall()
        ]


def department_row(department_id: Any) -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tests, active_tests, runs, graded, passed FROM analytics_department "
            "WHERE department_id = %s",
            [department_id.hex if connection.vendor == "sqlite" else department_id],
        )
        return tuple(cursor.fetchone())


@pytest.mark.parametrize("role", ["viewer", "operator", "outsider"])
def test_non_staff_is_403(client_for: Any, request: pytest.FixtureRequest, role: str) -> None:
    user = request.getfixturevalue(role)
    response = client_for(user).post(REFRESH, {}, format="json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Refreshing analytics is for staff only.",
        "code": "staff_only",
    }


def test_no_credentials_is_401() -> None:
    assert APIClient().post(REFRESH, {}, format="json").status_code == 401


def test_unknown_field_is_400(client_for: Any, staff: Any) -> None:
    response = client_for(staff).post(REFRESH, {"views": ["x"]}, format="json")
    assert response.status_code == 400
    assert "views" in response.json()["fields"]


def test_staff_refreshes_the_views_with_current_data(
    client_for: Any, staff: Any, research: Any
) -> None:
    eval = factories.EvalFactory.create(department=research)
    benchmark = factories.BenchmarkFactory.create(eval=eval)
    for day, runs, graded, passed, score_sum, archived in [
        (1, 4, 2, 1, 1.5, False),
        (1, 2, 2, 2, 1.8, True),
        (3, 3, 0, 0, 0.0, False),
    ]:
        factories.TestFactory.create(
            benchmark=benchmark,
            created_at=datetime(2026, 3, day, 23, 30, tzinfo=UTC),
            total_runs=runs,
            graded_runs=graded,
            passed_runs=passed,
            score_sum=score_sum,
            is_archived=archived,
        )

    response = client_for(staff).post(REFRESH, format="json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "refreshed_views": VIEWS, "invalidated_tags": TAGS}
    assert eval_daily(eval.pk) == [
        (date(2026, 3, 1), 2, 6, 4, 3, round(3.3 / 4, 6)),
        (date(2026, 3, 3), 1, 3, 0, 0, None),
    ]
    assert department_row(research.pk) == (3, 2, 9, 4, 3)


def test_the_beat_task_refreshes_the_views(research: Any) -> None:
    eval = factories.EvalFactory.create(department=research)
    tasks.refresh_analytics.apply(throw=True)
    assert eval_daily(eval.pk) == []
    factories.TestFactory.create(
        benchmark=factories.BenchmarkFactory.create(eval=eval),
        created_at=datetime(2026, 3, 5, 8, tzinfo=UTC),
        total_runs=2,
    )
    tasks.refresh_analytics.apply(throw=True)
    assert eval_daily(eval.pk) == [(date(2026, 3, 5), 1, 2, 0, 0, None)]


def test_analytics_views_are_named_in_one_place() -> None:
    assert list(ANALYTICS_VIEWS) == VIEWS


def test_refresh_invalidates_cached_values(client_for: Any, staff: Any) -> None:
    builds: list[str] = []

    def builder(name: str) -> Any:
        def build() -> str:
            builds.append(name)
            return f"{name} {len(builds)}"

        return build

    first = cache_tags.cached([cache_tags.DOCS], "k", builder("docs"))
    assert cache_tags.cached([cache_tags.DOCS], "k", builder("docs")) == first
    detail = cache_tags.cached(cache_tags.detail_tags("abc"), "get:abc", builder("detail"))
    assert builds == ["docs", "detail"]

    client_for(staff).post(REFRESH, {}, format="json")

    assert cache_tags.cached([cache_tags.DOCS], "k", builder("docs")) != first
    assert cache_tags.cached(cache_tags.detail_tags("abc"), "get:abc", builder("detail")) != detail
    assert builds == ["docs", "detail", "docs", "detail"]


def test_invalidating_one_tag_leaves_the_others() -> None:
    calls: list[str] = []
    cache_tags.cached(cache_tags.detail_tags("one"), "get:one", lambda: calls.append("one"))
    cache_tags.cached(cache_tags.detail_tags("two"), "get:two", lambda: calls.append("two"))
    cache_tags.cached([cache_tags.FACETS], "facets", lambda: calls.append("facets"))

    assert cache_tags.invalidate(cache_tags.detail_tag("one")) == ["test-detail:one"]

    cache_tags.cached(cache_tags.detail_tags("one"), "get:one", lambda: calls.append("one"))
    cache_tags.cached(cache_tags.detail_tags("two"), "get:two", lambda: calls.append("two"))
    cache_tags.cached([cache_tags.FACETS], "facets", lambda: calls.append("facets"))
    assert calls == ["one", "two", "facets", "one"]


def test_a_lost_version_counter_never_revives_old_values() -> None:
    cache_tags.cached([cache_tags.DOCS], "k", lambda: "old")
    # The counter is evicted; old values must not be served under a restarted version.
    cache.delete("cachetag:v:test-docs")
    assert cache_tags.cached([cache_tags.DOCS], "k", lambda: "new") == "new"
    cache.delete("cachetag:v:test-docs")
    cache_tags.invalidate(cache_tags.DOCS)
    assert cache_tags.cached([cache_tags.DOCS], "k", lambda: "newer") == "newer"


def test_a_value_built_across_an_invalidate_is_not_served_after_it() -> None:
    key = f"k-{uuid.uuid4()}"
    built: list[int] = []

    def build() -> int:
        built.append(len(built) + 1)
        if len(built) == 1:
            # A change commits while the first build is reading the old rows.
            cache_tags.invalidate(cache_tags.DOCS)
        return built[-1]

    assert cache_tags.cached([cache_tags.DOCS], key, build) == 1
    assert cache_tags.cached([cache_tags.DOCS], key, build) == 2  # the first was stale: rebuilt
    assert cache_tags.cached([cache_tags.DOCS], key, build) == 2
    assert built == [1, 2]


class CountingCache:
    """The cache, with the names of the methods called on it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def test_a_warm_read_is_one_read_of_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"get:{uuid.uuid4()}"
    cache_tags.cached(cache_tags.detail_tags("abc"), key, lambda: "value")
    counting = CountingCache(cache)
    monkeypatch.setattr(cache_tags, "cache", counting)

    value = cache_tags.cached(cache_tags.detail_tags("abc"), key, lambda: "rebuilt")

    assert value == "value"
    assert counting.calls == ["get_many"]


def test_invalidate_on_commit_waits_for_the_commit(
    django_capture_on_commit_callbacks: Any,
) -> None:
    cache_tags.cached([cache_tags.FACETS], "k", lambda: "before")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        cache_tags.invalidate_on_commit(cache_tags.FACETS)
    assert cache_tags.cached([cache_tags.FACETS], "k", lambda: "after") == "before"
    for callback in callbacks:
        callback()
    assert cache_tags.cached([cache_tags.FACETS], "k", lambda: "after") == "after"
