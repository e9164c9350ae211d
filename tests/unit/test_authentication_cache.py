"""The cached API key authentication: fewer queries, and every change takes effect at once.

The cache is on in these tests whatever the environment (``API_KEY_CACHE_SECONDS`` set here; the
cache is Redis under ``make test``, else the process's own).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from tests import factories
from tests_app.api import authentication
from tests_app.models import ApiKey, Membership
from tests_app.selectors.scope import operable_department_ids, visible_department_ids
from tests_app.services.api_keys import revoke_keys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cached(settings: Any) -> None:
    settings.API_KEY_CACHE_SECONDS = 30


class Scope(APIView):
    throttle_classes: list[Any] = []

    def post(self, request: Any) -> Response:
        return Response(
            {
                "user": request.user.username,
                "visible": sorted(str(d) for d in visible_department_ids(request.user) or []),
                "operable": sorted(str(d) for d in operable_department_ids(request.user) or []),
            }
        )


def call(key: str) -> Any:
    request = APIRequestFactory().post("/scope", {}, format="json", HTTP_X_API_KEY=key)
    response = Scope.as_view()(request)
    response.render()
    return response


def queries_of_call(key: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as captured:
        response = call(key)
    return len(captured.captured_queries), response


def warm(key: str) -> None:
    """Two calls: the first reads the rows (and writes last_used_at), the second is cached."""
    assert call(key).status_code == 200
    count, response = queries_of_call(key)
    assert response.status_code == 200
    assert count == 0


def test_a_warm_key_authenticates_without_sql(viewer: Any, research: Any) -> None:
    _, key = factories.make_api_key(viewer)
    first_count, first = queries_of_call(key)
    assert first.status_code == 200
    assert first_count == 3  # the key with its user, the memberships, last_used_at
    count, response = queries_of_call(key)
    assert count == 0
    assert response.data == {"user": "viewer", "visible": [str(research.pk)], "operable": []}
    assert ApiKey.objects.get(prefix=key.partition(".")[0]).last_used_at is not None


def test_the_secret_is_checked_on_every_call_of_a_cached_key(viewer: Any) -> None:
    _, key = factories.make_api_key(viewer)
    warm(key)
    prefix = key.partition(".")[0]
    assert call(f"{prefix}.not-the-secret").status_code == 401
    assert call(key).status_code == 200


def test_a_revoked_key_is_refused_at_once(viewer: Any) -> None:
    api_key, key = factories.make_api_key(viewer)
    warm(key)
    assert revoke_keys(key_ids=[api_key.pk]) == 1
    response = call(key)
    assert response.status_code == 401
    assert response.data["code"] == "not_authenticated"


def test_a_key_revoked_by_saving_it_is_refused_at_once(viewer: Any) -> None:
    api_key, key = factories.make_api_key(viewer)
    warm(key)
    api_key.revoked = True
    api_key.save()  # the admin's change form
    assert call(key).status_code == 401


def test_a_deleted_key_is_refused_at_once(viewer: Any) -> None:
    api_key, key = factories.make_api_key(viewer)
    warm(key)
    api_key.delete()
    assert call(key).status_code == 401


def test_a_deactivated_user_is_refused_at_once(viewer: Any) -> None:
    _, key = factories.make_api_key(viewer)
    warm(key)
    viewer.is_active = False
    viewer.save()
    assert call(key).status_code == 401


def test_a_new_role_and_a_removed_membership_apply_at_once(
    viewer: Any, research: Any, support: Any
) -> None:
    _, key = factories.make_api_key(viewer)
    warm(key)
    membership = Membership.objects.get(user=viewer, department=research)
    membership.role = Membership.Role.OPERATOR
    membership.save()
    assert call(key).data["operable"] == [str(research.pk)]

    factories.MembershipFactory.create(user=viewer, department=support, role=Membership.Role.VIEWER)
    assert call(key).data["visible"] == sorted([str(research.pk), str(support.pk)])

    membership.delete()
    assert call(key).data == {"user": "viewer", "visible": [str(support.pk)], "operable": []}


def test_a_stale_entry_written_just_after_a_revoke_is_not_trusted(viewer: Any) -> None:
    # A request that read the key just before the revoke and caches it just after.
    api_key, key = factories.make_api_key(viewer)
    prefix = key.partition(".")[0]
    loaded = authentication._load(prefix)
    assert loaded is not None
    stale_key, memberships, _ = loaded
    revoke_keys(key_ids=[api_key.pk])
    authentication._store(prefix, stale_key, memberships)
    assert call(key).status_code == 401


def test_a_login_does_not_drop_the_entry(viewer: Any) -> None:
    from django.contrib.auth.models import update_last_login

    _, key = factories.make_api_key(viewer)
    warm(key)
    update_last_login(type(viewer), viewer)
    count, response = queries_of_call(key)
    assert (count, response.status_code) == (0, 200)


def test_nothing_is_cached_when_the_ttl_is_zero(settings: Any, viewer: Any) -> None:
    settings.API_KEY_CACHE_SECONDS = 0
    _, key = factories.make_api_key(viewer)
    call(key)
    count, response = queries_of_call(key)
    assert response.status_code == 200
    assert count == 2  # the key with its user, and the memberships
    assert cache.get(authentication._entry_key(key.partition(".")[0])) is None
