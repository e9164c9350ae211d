"""Statements on the hot paths of the API, prepared on Django's own connections.

Django binds parameters on the client and never prepares (``prepare_threshold`` is None), so
PostgreSQL parses and plans every statement on every call. For the few single statements that
run on every call of a hot endpoint (next's claim, run's mark) that planning is about as much
of PostgreSQL's CPU as running them (0.2-0.3 ms each for the claim); :func:`hot_cursor` binds
them on the server and prepares them on each pooled connection's first use instead. Off with
``DATABASE_PREPARED_STATEMENTS=false`` (a transaction-pooling PgBouncer older than 1.21).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper


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
