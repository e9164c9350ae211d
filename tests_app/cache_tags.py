"""Tag-based invalidation on the Django cache (local memory embedded, Redis in production).

Every tag has a version counter stored in the cache; a cached value is stored with the versions
its tags had when it was built, so ``invalidate(tag)`` bumps one counter and every value built
under an older version is never served again (it is rebuilt, or expires on its own). Nothing has
to enumerate keys, which Redis and local memory caches cannot do cheaply. A read is one
``get_many`` of the tags' versions and the stored value together: one round trip to Redis.

Tags of the test domain:

* ``test-docs``: the docs composed from the code (the OpenAPI schema is costly to build).
* ``test-facets``: the facet option catalogue (eval and department names) of search.
* ``test-detail``: every cached get of a test; ``test-detail:<id>``: the get of one test.

How another module caches a value::

    cache_tags.cached(cache_tags.detail_tags(test.id), f"get:{test.id}", build)

and a service that changes what the value shows calls ``invalidate_on_commit(*tags)``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import transaction

T = TypeVar("T")

DOCS = "test-docs"
FACETS = "test-facets"
DETAIL = "test-detail"
# The tags that name whole families; refresh invalidates all of them.
DOMAIN_TAGS = (DOCS, FACETS, DETAIL)

DEFAULT_TIMEOUT = 300
_VERSION_PREFIX = "cachetag:v:"
_VALUE_PREFIX = "cachetag:value:"


def detail_tag(test_id: uuid.UUID | str) -> str:
    return f"{DETAIL}:{test_id}"


def detail_tags(test_id: uuid.UUID | str) -> list[str]:
    """Tags for a cached get of one test: its own and the family tag (so refresh reaches it)."""
    return [DETAIL, detail_tag(test_id)]


def all_tags() -> list[str]:
    return list(DOMAIN_TAGS)


def _fresh_version() -> int:
    # A counter that vanished (eviction, Redis flush) restarts from the clock rather than from 1,
    # so it never matches a version that older cached values were built with.
    return time.time_ns()


def _version_keys(tags: list[str]) -> list[str]:
    return [_VERSION_PREFIX + tag for tag in tags]


def _versions(tags: list[str], found: dict[str, Any]) -> list[int]:
    """The tags' versions from what a read ``found``, starting the counters that are missing."""
    keys = _version_keys(tags)
    missing = {key: _fresh_version() for key in keys if key not in found}
    if missing:
        for key, version in missing.items():
            # add() keeps a version that another process set in the meantime.
            cache.add(key, version, timeout=None)
        found = {**found, **cache.get_many(list(missing))}
    return [int(found.get(key) or missing[key]) for key in keys]


def make_key(tags: Iterable[str], key: str) -> str:
    """Where the value of ``key`` under ``tags`` is stored (with the versions it was built with)."""
    tag_list = sorted(set(tags))
    digest = hashlib.sha256(f"{key}|{','.join(tag_list)}".encode()).hexdigest()[:32]
    return f"{_VALUE_PREFIX}{digest}"


def cached(
    tags: Iterable[str], key: str, builder: Callable[[], T], *, timeout: int = DEFAULT_TIMEOUT
) -> T:
    """The cached value of ``key`` under ``tags``, built (and stored) when missing or stale.

    The versions are read before the value is built and stored with it, so a value built from
    rows read before an ``invalidate`` carries the old version and is never served after it.
    """
    tag_list = sorted(set(tags))
    value_key = make_key(tag_list, key)
    found = cache.get_many([*_version_keys(tag_list), value_key])
    versions = _versions(tag_list, found)
    stored = found.get(value_key)
    if isinstance(stored, tuple) and len(stored) == 2 and stored[0] == versions:
        return stored[1]
    value = builder()
    cache.set(value_key, (versions, value), timeout=timeout)
    return value


def invalidate(*tags: str) -> list[str]:
    """Make every value cached under any of ``tags`` stale. Returns the tags, in order."""
    for tag in tags:
        key = _VERSION_PREFIX + tag
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, _fresh_version(), timeout=None)
    return list(tags)


def invalidate_on_commit(*tags: str) -> None:
    """Invalidate once the surrounding transaction commits (a reader in between would otherwise
    cache the old rows again under the new version)."""
    transaction.on_commit(lambda: invalidate(*tags))
