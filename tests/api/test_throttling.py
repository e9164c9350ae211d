"""The per-caller rate limit: a 429 in the one error body, with Retry-After, per key."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

pytestmark = pytest.mark.django_db

SEARCH = "/api/v5/artifacts/benchmark/search"


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "caller": "3/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def test_the_fourth_call_in_a_minute_is_429(
    three_per_minute: None, client_for: Any, operator: Any
) -> None:
    client = client_for(operator)
    statuses = [client.post(SEARCH, {}, format="json").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.post(SEARCH, {}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 61


def test_each_key_has_its_own_budget(
    three_per_minute: None, client_for: Any, operator: Any, viewer: Any
) -> None:
    first, second = client_for(operator), client_for(viewer)
    for _ in range(3):
        assert first.post(SEARCH, {}, format="json").status_code == 200
    assert first.post(SEARCH, {}, format="json").status_code == 429
    assert second.post(SEARCH, {}, format="json").status_code == 200
