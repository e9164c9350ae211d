"""Django's PostgreSQL connections, made cheaper where the API's hot paths spend: statements
prepared once per connection, and timestamps parsed in C.

Django binds parameters on the client and never prepares (``prepare_threshold`` is None), so
PostgreSQL parses and plans every statement on every call. For the few single statements that
run on every call of a hot endpoint (next's claim, run's mark) that planning is about as much
of PostgreSQL's CPU as running them (0.2-0.3 ms each for the claim); :func:`hot_cursor` binds
them on the server and prepares them on each pooled connection's first use instead. Off with
``DATABASE_PREPARED_STATEMENTS=false`` (a transaction-pooling PgBouncer older than 1.21).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Iterator
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader


class _PreparingCursor(psycopg.Cursor[Any]):
    """psycopg's server-side binding cursor, preparing what it runs."""

    def execute(  # type: ignore[override]
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: Any = None
    ) -> _PreparingCursor:
        super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)
        return self


@contextlib.contextmanager
def hot_cursor() -> Iterator[CursorWrapper]:
    """A cursor for one of the hot statements: on PostgreSQL with prepared statements on, a
    preparing cursor in Django's wrapper; else Django's own cursor. Also Django's own while
    queries are logged (DEBUG, or a test capturing them): its log shows each statement with its
    values, which only client-side binding can give."""
    if (
        connection.vendor != "postgresql"
        or not settings.DATABASE_PREPARED_STATEMENTS
        or connection.queries_logged
    ):
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = _PreparingCursor(connection.connection)
    with CursorWrapper(raw, connection) as cursor:
        yield cursor


def _c_timestamptz_loader() -> Any:
    """psycopg's own text loader for timestamptz when its C implementation is in use (the
    ``binary`` extra, pinned), else None."""
    if psycopg.pq.__impl__ == "python":
        return None
    loader = psycopg.adapters.get_loader(
        psycopg.adapters.types["timestamptz"].oid, psycopg.pq.Format.TEXT
    )
    return loader if loader is not None and loader.__module__.startswith("psycopg_") else None


class _UtcTimestamptzLoader(Loader):
    """Django's timestamptz loader (``BaseTzLoader``: psycopg's loader, then the connection's
    time zone set on the result) on psycopg's C loader instead of its pure-Python one, which
    Django subclasses: 0.2 us a value instead of 3.7. A get of a running test reads about 300
    timestamps. Django compares ``timezone`` to decide whether a cursor needs its own loader."""

    timezone = datetime.UTC
    c_loader: Any

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._load = self.c_loader(oid, context).load

    def load(self, data: Buffer) -> datetime.datetime:
        value: datetime.datetime = self._load(data)
        return value.replace(tzinfo=self.timezone)


@functools.cache
def _utc_timestamptz_loader() -> type[_UtcTimestamptzLoader] | None:
    """:class:`_UtcTimestamptzLoader` on this process's C loader, made once."""
    c_loader = _c_timestamptz_loader()
    if c_loader is None:
        return None
    return type(
        "UtcTimestamptzLoader",
        (_UtcTimestamptzLoader,),
        {"c_loader": c_loader, "__module__": __name__},
    )


def use_c_timestamps(*, sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """On a PostgreSQL connection of Django's in UTC (``USE_TZ``), load timestamptz with
    :class:`_UtcTimestamptzLoader` (connected to ``connection_created`` in apps.py).

    With the pool that signal comes at every checkout, i.e. every request, for connections
    that mostly have the loader already: then this is one dictionary lookup."""
    if connection.vendor != "postgresql" or connection.timezone != datetime.UTC:
        return
    loader = _utc_timestamptz_loader()
    if loader is None:
        return
    adapters = connection.connection.adapters
    if adapters.get_loader(adapters.types["timestamptz"].oid, psycopg.pq.Format.TEXT) is loader:
        return
    adapters.register_loader("timestamptz", loader)
