"""Refresh the analytics views and invalidate the cache tags of the test domain (staff only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import connection

from tests_app import cache_tags
from tests_app.actors import Actor
from tests_app.errors import PermissionDenied

logger = logging.getLogger(__name__)

# Created by migration 0002_analytics: materialized on PostgreSQL, plain views on SQLite.
ANALYTICS_VIEWS = ("analytics_eval_daily", "analytics_department")


@dataclass(frozen=True)
class RefreshResult:
    refreshed_views: list[str]
    invalidated_tags: list[str]


def refresh_analytics_views() -> list[str]:
    """Refresh every analytics view; returns their names. Used by the beat task and refresh.

    CONCURRENTLY keeps the views readable while they rebuild (it needs the unique index each view
    has). SQLite's plain views are always current, so they are reported as refreshed.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for name in ANALYTICS_VIEWS:
                # The names are constants of this module, never input.
                cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name}")
        return list(ANALYTICS_VIEWS)
    if connection.vendor == "sqlite":
        return list(ANALYTICS_VIEWS)
    logger.warning("No analytics views on the %s backend", connection.vendor)
    return []


def refresh(*, actor: Actor) -> RefreshResult:
    if not actor.is_staff:
        raise PermissionDenied("Refreshing analytics is for staff only.", code="staff_only")
    views = refresh_analytics_views()
    tags = cache_tags.invalidate(*cache_tags.all_tags())
    return RefreshResult(refreshed_views=views, invalidated_tags=tags)
