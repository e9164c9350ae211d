"""API key and session authentication, exercised through a real DRF view."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from tests import factories
from tests_app.api.authentication import actor_from_request

pytestmark = pytest.mark.django_db


class WhoAmI(APIView):
    def post(self, request: Any) -> Response:
        actor = actor_from_request(request)
        return Response({"user": request.user.username, "client": actor.client})


def call(**headers: str) -> Any:
    request = APIRequestFactory().post("/whoami", {}, format="json", **headers)
    response = WhoAmI.as_view()(request)
    response.render()
    return response


def test_no_credentials_is_401_with_error_body() -> None:
    response = call()
    assert response.status_code == 401
    assert response.data["code"] == "not_authenticated"
    assert "X-Api-Key" in response.data["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_x_api_key_authenticates_as_agent(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    response = call(HTTP_X_API_KEY=key)
    assert response.status_code == 200
    assert response.data == {"user": "operator", "client": "agent"}


def test_bearer_form_authenticates(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    response = call(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert response.data["user"] == "operator"


def test_x_mcp_marks_the_client(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    assert call(HTTP_X_API_KEY=key, HTTP_X_MCP="true").data["client"] == "mcp"
    assert call(HTTP_X_API_KEY=key, HTTP_X_MCP="false").data["client"] == "agent"


@pytest.mark.parametrize("key", ["nonsense", "abcd1234.not-the-secret", ""])
def test_unknown_key_is_401(operator: Any, key: str) -> None:
    factories.make_api_key(operator)
    response = call(HTTP_X_API_KEY=key) if key else call(HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 401


def test_wrong_secret_with_a_real_prefix_is_401(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    prefix = key.split(".")[0]
    response = call(HTTP_X_API_KEY=f"{prefix}.wrongsecret")
    assert response.status_code == 401
    assert response.data["code"] == "not_authenticated"


def test_revoked_key_is_401(operator: Any) -> None:
    api_key, key = factories.make_api_key(operator)
    api_key.revoked = True
    api_key.save()
    response = call(HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert "revoked" in response.data["detail"]


def test_inactive_user_key_is_401(operator: Any) -> None:
    _, key = factories.make_api_key(operator)
    operator.is_active = False
    operator.save()
    assert call(HTTP_X_API_KEY=key).status_code == 401


def test_only_the_hash_is_stored(operator: Any) -> None:
    api_key, key = factories.make_api_key(operator)
    secret = key.split(".", 1)[1]
    api_key.refresh_from_db()
    stored = " ".join(str(value) for value in api_key.__dict__.values())
    assert secret not in stored
    assert api_key.prefix == key.split(".")[0]


def test_last_used_is_recorded(operator: Any) -> None:
    api_key, key = factories.make_api_key(operator)
    assert api_key.last_used_at is None
    call(HTTP_X_API_KEY=key)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_session_without_csrf_is_refused(operator: Any) -> None:
    factory = APIRequestFactory(enforce_csrf_checks=True)
    request = factory.post("/whoami", {}, format="json")
    request.user = operator
    from django.contrib.sessions.backends.db import SessionStore

    request.session = SessionStore()
    response = WhoAmI.as_view()(request)
    response.render()
    assert response.status_code == 403
    assert "CSRF" in response.data["detail"]
