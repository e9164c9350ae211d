"""The per-caller rate limit: a 429 in the one error body, with Retry-After, per key."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests import factories

pytestmark = pytest.mark.django_db

SEARCH = "/api/v5/artifacts/benchmark/search"


@pytest.fixture
def three_per_minute(rate_limits: Any) -> None:
    rate_limits(caller="3/min")


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


@pytest.fixture
def three_failures_per_minute(rate_limits: Any) -> None:
    rate_limits(failed_authentication="3/min")


def statuses_and_codes(responses: list[Any]) -> list[tuple[int, str]]:
    return [(response.status_code, response.json()["code"]) for response in responses]


REFUSED = [(401, "not_authenticated")] * 3 + [(429, "throttled")] * 2


def test_anonymous_calls_are_throttled_after_the_failure_budget(
    three_failures_per_minute: None, client: Any
) -> None:
    responses = [client.post(SEARCH, {}, content_type="application/json") for _ in range(5)]
    assert statuses_and_codes(responses) == REFUSED
    assert 0 < int(responses[-1]["Retry-After"]) <= 61


def test_a_wrong_secret_is_throttled_after_the_failure_budget(
    three_failures_per_minute: None, client: Any, operator: Any
) -> None:
    _, key = factories.make_api_key(operator)
    prefix = key.partition(".")[0]
    wrong = f"{prefix}.{'x' * 32}"
    responses = [
        client.post(SEARCH, {}, content_type="application/json", HTTP_X_API_KEY=wrong)
        for _ in range(5)
    ]
    assert statuses_and_codes(responses) == REFUSED


def test_distinct_unknown_keys_share_one_budget_per_address(
    three_failures_per_minute: None, client: Any
) -> None:
    # Every call invents a new key (X-Api-Key and Bearer alike): one counter for the address.
    responses = [
        client.post(
            SEARCH,
            {},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secrets.token_hex(4)}.{secrets.token_hex(16)}",
        )
        for _ in range(5)
    ]
    assert statuses_and_codes(responses) == REFUSED
    # Another address has its own budget.
    other = client.post(SEARCH, {}, content_type="application/json", REMOTE_ADDR="10.0.0.2")
    assert other.status_code == 401


def test_a_valid_key_still_works_from_an_address_over_its_failure_budget(
    three_failures_per_minute: None, client: Any, client_for: Any, operator: Any
) -> None:
    for _ in range(4):
        client.post(SEARCH, {}, content_type="application/json", HTTP_X_API_KEY="no.such-key")
    assert client_for(operator).post(SEARCH, {}, format="json").status_code == 200


def test_an_invented_forwarded_for_does_not_buy_a_new_budget(
    three_failures_per_minute: None, client: Any
) -> None:
    responses = [
        client.post(
            SEARCH, {}, content_type="application/json", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"
        )
        for n in range(5)
    ]
    assert statuses_and_codes(responses) == REFUSED
