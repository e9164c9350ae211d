"""archive: set or clear the archived flag of tests (DESIGN §3 "archive")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from tests_app import cache_tags
from tests_app.actors import Actor
from tests_app.errors import PermissionDenied, ValidationFailed
from tests_app.selectors.scope import operable_department_ids, visible_tests

MAX_ARCHIVE_IDS = 1000


def _parse_ids(test_ids: Sequence[uuid.UUID | str]) -> set[uuid.UUID]:
    if len(test_ids) > MAX_ARCHIVE_IDS:
        raise ValidationFailed(
            f"At most {MAX_ARCHIVE_IDS} test ids per call.",
            fields={
                "test_ids": [f"Ensure this field has no more than {MAX_ARCHIVE_IDS} elements."]
            },
        )
    parsed: set[uuid.UUID] = set()
    malformed: list[str] = []
    for raw in test_ids:
        try:
            parsed.add(raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)))
        except ValueError:
            malformed.append(f"{raw!r} is not a valid UUID.")
    if malformed:
        raise ValidationFailed(
            f"The request is invalid (test_ids): {malformed[0]}", fields={"test_ids": malformed}
        )
    return parsed


def set_archived(*, actor: Actor, test_ids: Sequence[uuid.UUID | str], archived: bool) -> int:
    """Set ``is_archived`` on the given tests; return how many rows actually changed.

    Ids the caller cannot see are skipped (not an error, so ids do not leak); a test the caller
    can see but not operate (a viewer) is a 403 and nothing changes, and so is any call by a
    caller who operates no department, whatever the ids (an empty or foreign-only list too).
    Raises ValidationFailed for more than 1000 ids or a malformed one.
    """
    ids = _parse_ids(test_ids)
    operable = operable_department_ids(actor.user)
    if operable == []:
        raise PermissionDenied(
            "Only operators of a department may archive its tests; you operate none."
        )
    if not ids:
        return 0
    visible = visible_tests(actor.user).filter(pk__in=ids)
    with transaction.atomic():
        if operable is not None:
            read_only = visible.exclude(department_id__in=operable).count()
            if read_only:
                raise PermissionDenied(
                    f"You may view {read_only} of these tests but not operate them: "
                    "only operators of their department may archive them."
                )
        changing = visible.exclude(is_archived=archived)
        changed_ids = list(changing.values_list("pk", flat=True))
        cache_tags.invalidate_on_commit(*(cache_tags.detail_tag(pk) for pk in changed_ids))
        return changing.filter(pk__in=changed_ids).update(
            is_archived=archived, updated_at=timezone.now()
        )
