"""POST /api/v5/artifacts/test/archive"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests import factories
from tests.api.lifecycle_support import agent, assert_error, post, started_test
from tests_app.errors import ValidationFailed
from tests_app.models import Test
from tests_app.services.archiving import set_archived

pytestmark = pytest.mark.django_db


def test_it_archives_and_counts_changed_rows(
    client_for: Any, operator: Any, benchmark: Any
) -> None:
    first, second, third = (started_test(operator, benchmark) for _ in range(3))
    Test.objects.filter(pk=second.pk).update(is_archived=True)

    response = post(
        client_for(operator),
        "archive",
        {"test_ids": [str(first.pk), str(second.pk), str(first.pk)]},
    )

    assert response.status_code == 200
    # second was already archived and first is listed twice: one row changed.
    assert response.json() == {"updated_count": 1}
    assert set(Test.objects.filter(is_archived=True).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
    third.refresh_from_db()
    assert third.is_archived is False


def test_it_unarchives(client_for: Any, operator: Any, benchmark: Any) -> None:
    tests = [started_test(operator, benchmark) for _ in range(2)]
    Test.objects.update(is_archived=True)

    response = post(
        client_for(operator),
        "archive",
        {"test_ids": [str(test.pk) for test in tests], "archived": False},
    )

    assert response.json() == {"updated_count": 2}
    assert not Test.objects.filter(is_archived=True).exists()


def test_an_empty_list_changes_nothing(client_for: Any, operator: Any, benchmark: Any) -> None:
    started_test(operator, benchmark)

    response = post(client_for(operator), "archive", {"test_ids": []})

    assert response.json() == {"updated_count": 0}
    assert not Test.objects.filter(is_archived=True).exists()


def test_invisible_tests_are_skipped_not_revealed(
    client_for: Any, operator: Any, outsider: Any, benchmark: Any
) -> None:
    mine = started_test(operator, benchmark)
    theirs = started_test(
        outsider, factories.make_benchmark(department=outsider_department(outsider))
    )

    response = post(
        client_for(operator),
        "archive",
        {"test_ids": [str(mine.pk), str(theirs.pk), str(uuid.uuid4())]},
    )

    assert response.json() == {"updated_count": 1}
    theirs.refresh_from_db()
    assert theirs.is_archived is False


def outsider_department(user: Any) -> Any:
    return user.memberships.get().department


def test_it_validates_ownership(client_for: Any, outsider: Any, started: Test) -> None:
    response = post(client_for(outsider), "archive", {"test_ids": [str(started.pk)]})

    # Archive is a bulk call: ids the caller cannot see count as not updated, like unknown ids.
    assert response.json() == {"updated_count": 0}
    started.refresh_from_db()
    assert started.is_archived is False


def test_a_viewer_cannot_archive(client_for: Any, viewer: Any, started: Test) -> None:
    response = post(client_for(viewer), "archive", {"test_ids": [str(started.pk)]})

    assert_error(response, 403, "permission_denied")
    started.refresh_from_db()
    assert started.is_archived is False


@pytest.mark.parametrize("ids", ["none", "foreign", "unknown"])
def test_a_viewer_cannot_archive_even_nothing(
    client_for: Any, viewer: Any, outsider: Any, started: Test, ids: str
) -> None:
    # A viewer operates no department: every archive call is refused, not counted as 0 changes.
    foreign = started_test(
        outsider, factories.make_benchmark(department=outsider_department(outsider))
    )
    test_ids = {"none": [], "foreign": [str(foreign.pk)], "unknown": [str(uuid.uuid4())]}[ids]
    body = assert_error(post(client_for(viewer), "archive", {"test_ids": test_ids}), 403)
    assert body["code"] == "permission_denied"
    assert not Test.objects.filter(is_archived=True).exists()


def test_an_operator_archiving_nothing_is_told_nothing_changed(
    client_for: Any, operator: Any, outsider: Any
) -> None:
    foreign = started_test(
        outsider, factories.make_benchmark(department=outsider_department(outsider))
    )
    for test_ids in ([], [str(foreign.pk)]):
        response = post(client_for(operator), "archive", {"test_ids": test_ids})
        assert response.json() == {"updated_count": 0}
    foreign.refresh_from_db()
    assert foreign.is_archived is False


def test_staff_archives_anywhere(
    client_for: Any, staff: Any, outsider: Any, benchmark: Any
) -> None:
    test = started_test(
        outsider, factories.make_benchmark(department=outsider_department(outsider))
    )

    assert post(client_for(staff), "archive", {"test_ids": [str(test.pk)]}).json() == {
        "updated_count": 1
    }


def test_it_requires_credentials(client: Any, started: Test) -> None:
    response = client.post(
        "/api/v5/artifacts/test/archive",
        {"test_ids": [str(started.pk)]},
        content_type="application/json",
    )

    assert_error(response, 401, "not_authenticated")
    started.refresh_from_db()
    assert started.is_archived is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "test_ids"),
        ({"test_ids": ["not-a-uuid"]}, "test_ids"),
        ({"test_ids": str(uuid.UUID(int=1))}, "test_ids"),
        ({"test_ids": [str(uuid.UUID(int=1))], "archived": "no"}, "archived"),
        ({"test_ids": [str(uuid.UUID(int=1))], "all": True}, "all"),
        ({"test_ids": [str(uuid.uuid4()) for _ in range(1001)]}, "test_ids"),
    ],
)
def test_it_rejects_bad_bodies(
    client_for: Any, operator: Any, started: Test, body: dict[str, Any], field: str
) -> None:
    error = assert_error(post(client_for(operator), "archive", body), 400, "invalid")

    assert field in error["fields"]
    started.refresh_from_db()
    assert started.is_archived is False


def test_a_thousand_ids_are_accepted(client_for: Any, operator: Any, started: Test) -> None:
    ids = [str(started.pk)] + [str(uuid.uuid4()) for _ in range(999)]

    assert post(client_for(operator), "archive", {"test_ids": ids}).json() == {"updated_count": 1}


def test_the_service_validates_ids_for_other_callers(operator: Any, started: Test) -> None:
    # The admin action calls set_archived directly, without the serializer in front.
    with pytest.raises(ValidationFailed) as malformed:
        set_archived(actor=agent(operator), test_ids=[str(started.pk), "oops"], archived=True)
    with pytest.raises(ValidationFailed):
        set_archived(actor=agent(operator), test_ids=[started.pk] * 1001, archived=True)

    assert malformed.value.fields == {"test_ids": ["'oops' is not a valid UUID."]}
    assert set_archived(actor=agent(operator), test_ids=[started.pk], archived=True) == 1
    assert set_archived(actor=agent(operator), test_ids=[started.pk], archived=True) == 0
