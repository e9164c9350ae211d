"""Issuing and revoking API keys. The raw key exists only in the return value of ``issue_key``:
the database keeps its prefix and a hash (djangorestframework-api-key), so it cannot be shown again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction

from tests_app.models import ApiKey
from tests_app.signals import forget_after_commit


def issue_key(*, api_key: ApiKey) -> str:
    """Give an unsaved ApiKey (user and name set) a fresh secret, save it, return the raw key."""
    if not api_key._state.adding:
        raise ValueError("issue_key takes a new, unsaved API key")
    raw_key = ApiKey.objects.assign_key(api_key)
    api_key.save()
    return raw_key


def create_api_key(
    *, user: Any, name: str, expiry_date: datetime | None = None
) -> tuple[ApiKey, str]:
    api_key = ApiKey(user=user, name=name, expiry_date=expiry_date)
    return api_key, issue_key(api_key=api_key)


def revoke_keys(
    *,
    user: Any | None = None,
    name: str | None = None,
    key_ids: Iterable[uuid.UUID | str] | None = None,
) -> int:
    """Revoke usable keys of ``user`` (called ``name`` when given) or by id; how many changed.

    Revoking cannot be undone (the library refuses to un-revoke a key).
    """
    if user is None and key_ids is None:
        raise ValueError("revoke_keys needs a user or key ids")
    queryset = ApiKey.objects.filter(revoked=False)
    if user is not None:
        queryset = queryset.filter(user=user)
    if name is not None:
        queryset = queryset.filter(name=name)
    if key_ids is not None:
        queryset = queryset.filter(pk__in=list(key_ids))
    with transaction.atomic():
        prefixes = list(queryset.select_for_update().values_list("prefix", flat=True))
        revoked = queryset.update(revoked=True)
        # A queryset update sends no signal: drop the cached authentications here.
        forget_after_commit(prefixes)
    return revoked


@transaction.atomic
def rotate_key(*, user: Any, name: str) -> tuple[ApiKey, str, int]:
    """Revoke the user's keys called ``name`` and issue a new one (the seed's demo key)."""
    revoked = revoke_keys(user=user, name=name)
    api_key, raw_key = create_api_key(user=user, name=name)
    return api_key, raw_key, revoked
