"""Drop cached API key authentications when what they were built from changes.

``tests_app.api.authentication`` caches a key with its user and the user's memberships. Saving
or deleting any of those (the admin, a service, a management command, in any process) deletes
the entries of the keys concerned, after the transaction commits so that no request can cache
the old rows again in between.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from tests_app.models import ApiKey, Membership


def forget_keys_of_user(user_id: Any) -> None:
    from tests_app.api.authentication import forget_key_prefixes

    if settings.API_KEY_CACHE_SECONDS <= 0 or user_id is None:
        return
    prefixes = list(ApiKey.objects.filter(user_id=user_id).values_list("prefix", flat=True))
    forget_key_prefixes(prefixes)


def forget_after_commit(prefixes: list[str]) -> None:
    from tests_app.api.authentication import forget_key_prefixes

    if settings.API_KEY_CACHE_SECONDS <= 0 or not prefixes:
        return
    forget_key_prefixes(prefixes)  # now, and again once the change is visible to others
    transaction.on_commit(lambda: forget_key_prefixes(prefixes))


@receiver([post_save, post_delete], sender=ApiKey, dispatch_uid="replaybench-apikey-cache")
def _key_changed(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    if kwargs.get("created"):
        return  # a new key's prefix is new: nothing is cached under it
    forget_after_commit([instance.prefix])


@receiver([post_save, post_delete], sender=Membership, dispatch_uid="replaybench-member-cache")
def _membership_changed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    user_id = instance.user_id
    forget_keys_of_user(user_id)
    transaction.on_commit(lambda: forget_keys_of_user(user_id))


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a login touches the user row; nothing the API key check reads
    user_id = instance.pk
    forget_keys_of_user(user_id)
    transaction.on_commit(lambda: forget_keys_of_user(user_id))


def connect_user_signals() -> None:
    user_model = get_user_model()
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="replaybench-user-cache")
    # A deleted user's keys are deleted with it (cascade), each sending its own post_delete.
