"""The whole API against its own OpenAPI schema, with schemathesis: every operation, every check.

schemathesis reads /api/schema/ from the app and sends each operation generated requests, valid
and invalid (wrong types, missing and unknown fields, values out of range), with a staff key; each
answer must be what the schema promises: a documented status, the documented body, no 5xx, an
invalid request refused, a valid one accepted (or refused for a documented reason: an id that
does not exist, a state that forbids it). The examples are bounded so that the run takes about a
minute; the ids are random, so most calls end at a 404, which is the answer the schema documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from config.wsgi import application
from tests import factories

EXAMPLES_PER_OPERATION = 100

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@pytest.fixture
def wsgi_keeps_the_test_transaction() -> Iterator[None]:
    # Django's WSGI handler closes the database connection after each request, which would end
    # the test's transaction; its test client disconnects this handler in the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_key(
    db: Any, monkeypatch: pytest.MonkeyPatch, research: Any, wsgi_keeps_the_test_transaction: None
) -> str:
    # Hundreds of calls a minute from one address, a share of them without credentials (the
    # checks that an operation refuses a missing key): more than the production budgets allow.
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "caller": None, "failed_authentication": None}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    factories.make_benchmark(department=research)
    user = factories.UserFactory.create(username="schema-staff", is_staff=True, is_superuser=True)
    return factories.make_api_key(user)[1]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_keeps_the_schemas_promises(case: Any, staff_key: str) -> None:
    case.call_and_validate(headers={"X-Api-Key": staff_key})
