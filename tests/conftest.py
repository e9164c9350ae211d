"""Named actors and shared fixtures.

The world: department Research (operator, viewer) and Support (outsider is its operator);
``staff`` sees everything. ``client_for(user)`` gives an API client that sends that user's key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests import factories
from tests.fake_model import FakeModel
from tests_app.models import Membership

CI = os.environ.get("CI", "").lower() == "true"


def require_service(reason: str) -> None:
    """A missing service fails the run in CI and skips the test elsewhere."""
    if CI:
        pytest.fail(f"CI=true and a required service is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_runtime(request: pytest.FixtureRequest, settings: Any) -> None:
    # Unit and API tests run background work inline on commit and use the embedded runtime's
    # in-memory channel layer (thread-safe: events are sent from the process's sender thread)
    # and cache; integration tests keep the real ones (Celery on Redis, channels-redis).
    if request.node.get_closest_marker("browser") is None:
        # Hashing is not what these tests measure; browser tests keep the real hasher because
        # the server process they log in to verifies the passwords.
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if request.node.get_closest_marker("integration") is None:
        settings.BACKGROUND_BACKEND = "sync"
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": "tests_app.realtime.layers.ThreadSafeInMemoryChannelLayer"}
        }
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        # Throttle counters live there: a test must not spend the budget of the next one.
        cache.clear()


@pytest.fixture
def rate_limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set throttle rates for the test (``rate_limits(caller="3/min")``). The throttles' clock
    stands still halfway through a minute meanwhile: budgets are counted in fixed windows, and
    calls that straddled a minute's turn would start a new one."""

    def set_rates(**rates: str) -> None:
        merged = {**api_settings.DEFAULT_THROTTLE_RATES, **rates}
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", merged)
        halfway = time.time() // 60 * 60 + 30
        monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: halfway))

    return set_rates


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    """An OpenAI-compatible model server on loopback that the test scripts (tests/fake_model.py)."""
    server = FakeModel().start()
    yield server
    server.stop()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every realtime event sent (after commit), in order: recorded, not sent (and without the
    seq that some take with their data)."""
    sent: list[dict[str, Any]] = []

    def record(*, seq: int | None = None, **event: Any) -> None:
        sent.append(event)

    monkeypatch.setattr("tests_app.realtime.events.send_event", record)
    return sent


@pytest.fixture
def research(db: Any) -> Any:
    return factories.DepartmentFactory.create(name="Research", slug="research")


@pytest.fixture
def support(db: Any) -> Any:
    return factories.DepartmentFactory.create(name="Support", slug="support")


@pytest.fixture
def staff(db: Any) -> Any:
    return factories.UserFactory.create(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def operator(research: Any) -> Any:
    user = factories.UserFactory.create(
        username="operator", first_name="Olive", last_name="Operator"
    )
    factories.MembershipFactory.create(
        user=user, department=research, role=Membership.Role.OPERATOR
    )
    return user


@pytest.fixture
def viewer(research: Any) -> Any:
    user = factories.UserFactory.create(username="viewer")
    factories.MembershipFactory.create(user=user, department=research, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def outsider(support: Any) -> Any:
    user = factories.UserFactory.create(username="outsider")
    factories.MembershipFactory.create(user=user, department=support, role=Membership.Role.OPERATOR)
    return user


@pytest.fixture
def client_for(db: Any) -> Callable[..., APIClient]:
    """An API client authenticated with a fresh API key of ``user`` (X-Api-Key header)."""

    def make(user: Any, *, mcp: bool = False) -> APIClient:
        _, key = factories.make_api_key(user)
        client = APIClient()
        headers = {"HTTP_X_API_KEY": key}
        if mcp:
            headers["HTTP_X_MCP"] = "1"
        client.credentials(**headers)
        return client

    return make


@pytest.fixture
def benchmark(research: Any) -> Any:
    """A Research benchmark with two entries of three user turns, reference target."""
    return factories.make_benchmark(department=research, entries=2, turns=3)
