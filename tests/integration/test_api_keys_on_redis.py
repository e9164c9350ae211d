"""API keys and the rate limit on the production cache: a warm key is read from Redis without a
query, and the limit holds per key across calls.

Integration tests keep the real settings: the cache is django-redis on ``REDIS_URL``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_redis.cache import RedisCache
from rest_framework.test import APIClient

from tests import factories
from tests.integration.conftest import redis_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SEARCH = "/api/v5/artifacts/benchmark/search"


@pytest.fixture(autouse=True)
def redis_cache(settings: Any) -> None:
    redis_url()  # Redis is there (a failure in CI, else a skip)
    assert isinstance(caches[DEFAULT_CACHE_ALIAS], RedisCache)
    settings.API_KEY_CACHE_SECONDS = 30


@pytest.fixture
def three_per_minute(rate_limits: Any) -> None:
    rate_limits(caller="3/min")


def caller(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def test_a_warm_key_costs_no_query(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    client = caller(key)
    assert client.post(SEARCH, {}, format="json").status_code == 200  # reads and caches the key

    with CaptureQueriesContext(connection) as queries:
        response = client.post(SEARCH, {}, format="json")

    assert response.status_code == 200
    assert not any("apikey" in query["sql"].lower() for query in queries.captured_queries)
    assert not any("membership" in query["sql"].lower() for query in queries.captured_queries)


def test_the_limit_holds_per_key(three_per_minute: None, operator: Any, viewer: Any) -> None:
    _, key = factories.make_api_key(operator)
    _, other_key = factories.make_api_key(viewer)
    client = caller(key)

    statuses = [client.post(SEARCH, {}, format="json").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    refused = client.post(SEARCH, {}, format="json")
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 61
    assert caller(other_key).post(SEARCH, {}, format="json").status_code == 200
