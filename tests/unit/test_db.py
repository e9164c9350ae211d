"""Django's PostgreSQL connections load timestamptz with psycopg's C loader, as Django would.

Django's own loader subclasses psycopg's pure-Python one (3.7 us a value); tests_app.db swaps in
the C loader behind the same contract: the value in the connection's time zone, set as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader

from tests_app import db

pytestmark = pytest.mark.django_db

TEXTS = [
    "2026-11-25 03:17:32.123456+00",
    "2026-11-25 03:17:32+00",
    "1969-07-20 20:17:40.5+00",
    "2026-03-29 01:30:00+02",  # another offset: the same instant, in UTC
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


@pytest.fixture(autouse=True)
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the loaders are psycopg's")


def load(cursor: Any) -> list[datetime]:
    cursor.execute("SELECT unnest(%s::timestamptz[])", [TEXTS])
    return [row[0] for row in cursor.fetchall()]


def test_django_connections_use_the_c_loader() -> None:
    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(
        connection.connection.adapters.types["timestamptz"].oid, 0
    )
    assert loader is not None
    assert issubclass(loader, db._UtcTimestamptzLoader)
    assert loader.c_loader.__module__.startswith("psycopg_")
    # Django then sees no reason to give each cursor a loader of its own.
    assert loader.timezone == connection.timezone == UTC


def test_values_are_the_ones_djangos_own_loader_gives() -> None:
    with connection.cursor() as cursor:
        ours = load(cursor)
    with connection.cursor() as cursor:
        register_tzloader(connection.timezone, cursor.cursor)  # Django's, on this cursor only
        djangos = load(cursor)

    assert ours == djangos
    assert [value.tzinfo for value in ours] == [UTC] * len(TEXTS)
    assert ours[0] == datetime(2026, 11, 25, 3, 17, 32, 123456, tzinfo=UTC)
    assert ours[3] == datetime(2026, 3, 28, 23, 30, tzinfo=UTC)


def test_models_read_the_same_instants() -> None:
    from tests import factories
    from tests_app.models import Department

    created = datetime(2026, 11, 25, 3, 17, 32, 654321, tzinfo=UTC)
    department = factories.DepartmentFactory(name="Timing", slug="timing")
    Department.objects.filter(pk=department.pk).update(created_at=created)

    assert Department.objects.values_list("created_at", flat=True).get(pk=department.pk) == created


def test_each_checkout_registers_the_loader_only_where_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the pool, Django's connection_created comes at every request's checkout."""
    import psycopg
    from psycopg.adapt import AdaptersMap

    registered: list[Any] = []
    original = AdaptersMap.register_loader

    def counting(self: AdaptersMap, *args: Any) -> None:
        registered.append(args[1])
        original(self, *args)

    monkeypatch.setattr(AdaptersMap, "register_loader", counting)
    connection.ensure_connection()
    db.use_c_timestamps(sender=None, connection=connection)  # a checkout of a pooled connection
    assert registered == []

    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    fresh = psycopg.connect(**params)

    class Wrapper:  # a new connection of Django's, as connection_created hands it over
        vendor = "postgresql"
        timezone = UTC

    wrapper = Wrapper()
    wrapper.connection = fresh  # type: ignore[attr-defined]
    try:
        db.use_c_timestamps(sender=None, connection=wrapper)  # type: ignore[arg-type]
        db.use_c_timestamps(sender=None, connection=wrapper)  # type: ignore[arg-type]
        with fresh.cursor() as cursor:
            assert load(cursor) == load(connection.cursor())
    finally:
        fresh.close()
    # Registered once, and the very class the other connections use.
    assert len(registered) == 1
    assert registered[0] is connection.connection.adapters.get_loader(
        connection.connection.adapters.types["timestamptz"].oid, 0
    )
