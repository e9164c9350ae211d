"""create_api_key prints a working key once and stores only its hash."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tests import factories
from tests_app.api.authentication import user_for_key
from tests_app.models import ApiKey

pytestmark = pytest.mark.django_db


def test_it_prints_a_key_that_authenticates_the_user(operator: Any) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_key", "--user", "operator", "--name", "ci agent", stdout=out, stderr=err
    )

    raw_key = out.getvalue().strip()
    found = user_for_key(raw_key)
    assert found is not None
    user, api_key = found
    assert user == operator
    assert api_key.name == "ci agent"
    assert api_key.prefix == raw_key.split(".")[0]
    # Only the hash is stored: the secret appears in no column.
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert all(raw_key not in str(value) for value in stored.values())
    assert raw_key.split(".")[1] not in stored["hashed_key"]
    assert "cannot be shown again" in err.getvalue()
    assert raw_key not in err.getvalue()


def test_each_call_makes_a_new_key(operator: Any) -> None:
    first, second = StringIO(), StringIO()
    call_command(
        "create_api_key", "--user", "operator", "--name", "a", stdout=first, stderr=StringIO()
    )
    call_command(
        "create_api_key", "--user", "operator", "--name", "a", stdout=second, stderr=StringIO()
    )
    assert first.getvalue() != second.getvalue()
    assert ApiKey.objects.filter(user=operator, revoked=False).count() == 2


def test_unknown_user_is_an_error(db: Any) -> None:
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_key", "--user", "ghost", "--name", "x", stdout=StringIO())
    assert ApiKey.objects.count() == 0


def test_inactive_user_is_an_error(db: Any) -> None:
    factories.UserFactory.create(username="gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        call_command("create_api_key", "--user", "gone", "--name", "x", stdout=StringIO())
    assert ApiKey.objects.count() == 0
