"""retry: failed (or stopped) runs of a test go back to pending (issue 20, docs/run-all.md).

A retried run keeps its invocations as history; the next claim opens a new one on it. Its
attempts start again from zero, so the sweep gives it the same number of tries as a fresh run.
A completed test goes back to running; a stopped test stays stopped (start a new one instead).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from tests_app import cache_tags
from tests_app.actors import Actor
from tests_app.errors import InvalidTransition, ValidationFailed
from tests_app.models import Test, TestRun
from tests_app.realtime.events import publish_on_commit
from tests_app.selectors.scope import get_visible_test, require_operator
from tests_app.services.test_state import lock_test

RETRYABLE_STATUSES = (TestRun.Status.FAILED.value, TestRun.Status.STOPPED.value)
DEFAULT_STATUSES = (TestRun.Status.FAILED.value,)


def _validate(statuses: Iterable[str]) -> list[str]:
    chosen = list(statuses)
    wrong = [status for status in chosen if status not in RETRYABLE_STATUSES]
    if not chosen or wrong:
        raise ValidationFailed(
            f"Only {' and '.join(RETRYABLE_STATUSES)} runs can be retried.",
            fields={"statuses": [f"Choose from {', '.join(RETRYABLE_STATUSES)}."]},
        )
    return sorted(set(chosen))


def retry_runs(
    *, actor: Actor, test_id: uuid.UUID, statuses: Iterable[str] = DEFAULT_STATUSES
) -> int:
    """Put the test's runs in ``statuses`` (failed and/or stopped) back to pending; returns how
    many. Operators only. A completed test goes back to running; a stopped or archived test is a
    409; none to retry is 0, not an error.
    """
    chosen = _validate(statuses)
    test = get_visible_test(user=actor.user, test_id=test_id)
    require_operator(user=actor.user, department_id=test.department_id)
    with transaction.atomic():
        locked = lock_test(test.pk)  # the test first, as every service that moves its runs
        if locked.status == Test.Status.STOPPED:
            raise InvalidTransition(
                "The test is stopped; its runs cannot be retried (start a new test).",
                code="test_stopped",
            )
        if locked.is_archived:
            raise InvalidTransition(
                "The test is archived; unarchive it before retrying its runs.",
                code="test_archived",
            )
        now = timezone.now()
        requeued = TestRun.objects.filter(test=locked, status__in=chosen).update(
            status=TestRun.Status.PENDING, attempts=0, updated_at=now
        )
        if requeued == 0:
            return 0
        reopened = Test.objects.filter(pk=locked.pk, status=Test.Status.COMPLETED).update(
            status=Test.Status.RUNNING, finished_at=None, updated_at=now
        )
        status = Test.Status.RUNNING if reopened else locked.status
        cache_tags.invalidate_on_commit(cache_tags.detail_tag(locked.pk))
        publish_on_commit(
            test_id=locked.pk,
            event_type="test.retried",
            requeued_count=requeued,
            statuses=chosen,
            status=status,
        )
    return requeued
