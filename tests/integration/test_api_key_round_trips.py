"""An API call's Redis work on the production cache: the key's cached entry and the rate limit's
count travel in one round trip, and the limit still holds per key.

Integration tests keep the real settings: the cache is django-redis on ``REDIS_URL``.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_redis.cache import RedisCache
from redis.connection import AbstractConnection
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests import factories
from tests.integration.conftest import redis_url
from tests_app.api.throttling import CallerRateThrottle, api_key_ident

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SEARCH = "/api/v5/artifacts/benchmark/search"


@pytest.fixture(autouse=True)
def redis_cache(settings: Any) -> None:
    redis_url()  # Redis is there (a failure in CI, else a skip)
    assert isinstance(caches[DEFAULT_CACHE_ALIAS], RedisCache)
    settings.API_KEY_CACHE_SECONDS = 30


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "caller": "3/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every write of commands to Redis by this process (a pipeline's commands are one)."""
    sent: list[Any] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list | tuple) else command)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def caller(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def window_count(key: str) -> int:
    """What the rate limit counted this window for calls that sent ``key``."""
    throttle = CallerRateThrottle()
    counter = throttle.window(throttle.key_of(api_key_ident(key)))
    assert counter is not None
    return int(cache.get(counter.key) or 0)


def test_a_warm_key_costs_one_round_trip_and_no_query(
    operator: Any, round_trips: list[Any]
) -> None:
    _, key = factories.make_api_key(operator)
    client = caller(key)
    assert client.post(SEARCH, {}, format="json").status_code == 200  # reads and caches the key
    round_trips.clear()

    with CaptureQueriesContext(connection) as queries:
        response = client.post(SEARCH, {}, format="json")

    assert response.status_code == 200
    assert not any("apikey" in query["sql"].lower() for query in queries.captured_queries)
    # The key's entry and the count in one write; nothing after it counts the call again (the
    # throttle's own incr is a script).
    assert b"MGET" in round_trips[0]
    assert b"INCR" in round_trips[0]
    assert not any(b"INCR" in command or b"EVAL" in command for command in round_trips[1:])
    assert window_count(key) == 2


def test_the_limit_holds_per_key_with_the_count_taken_at_authentication(
    three_per_minute: None, operator: Any, viewer: Any
) -> None:
    _, key = factories.make_api_key(operator)
    _, other_key = factories.make_api_key(viewer)
    client = caller(key)

    statuses = [client.post(SEARCH, {}, format="json").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    refused = client.post(SEARCH, {}, format="json")
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 61
    assert window_count(key) == 5
    assert caller(other_key).post(SEARCH, {}, format="json").status_code == 200


def test_calls_with_a_wrong_secret_cannot_use_up_the_keys_budget(
    three_per_minute: None, operator: Any
) -> None:
    api_key, key = factories.make_api_key(operator)
    forged = caller(f"{api_key.prefix}.not-the-secret")

    statuses = [forged.post(SEARCH, {}, format="json").status_code for _ in range(5)]

    # A wrong secret is a 401 whatever its count; the count (taken before the key is checked)
    # lands on a budget of its own, and the key's is untouched.
    assert statuses == [401] * 5
    assert window_count(f"{api_key.prefix}.not-the-secret") == 5
    assert window_count(key) == 0
    assert caller(key).post(SEARCH, {}, format="json").status_code == 200
