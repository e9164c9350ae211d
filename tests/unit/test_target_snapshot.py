"""A test calls the target as it was when the test started, whatever edits came after."""

from __future__ import annotations

from typing import Any

import pytest

from tests import factories
from tests.fake_model import FakeModel
from tests_app.actors import CLIENT_AGENT, Actor
from tests_app.models import TestInvocation
from tests_app.services.claiming import claim_next_run
from tests_app.services.replay import replay_invocation
from tests_app.services.starting import start_test

pytestmark = pytest.mark.django_db


def test_the_replay_calls_the_snapshot_not_the_edited_target(
    fake_model: FakeModel, operator: Any, research: Any, django_capture_on_commit_callbacks: Any
) -> None:
    target = factories.OpenAITargetFactory.create(
        department=research, model="model-at-start", base_url=fake_model.base_url, seed=11
    )
    benchmark = factories.make_benchmark(department=research, entries=1, turns=2, target=target)
    actor = Actor(user=operator, client=CLIENT_AGENT)
    test = start_test(actor=actor, benchmark_id=benchmark.pk)
    invocation = claim_next_run(actor=actor, test_id=test.pk).invocation
    # Edited after the start: the running test must not notice.
    target.model = "model-edited-later"
    target.base_url = "http://127.0.0.1:9/v1"
    target.save()

    with django_capture_on_commit_callbacks(execute=True):
        replay_invocation(invocation_id=invocation.pk)

    invocation.refresh_from_db()
    assert invocation.status == TestInvocation.Status.REPLAYED
    requests = fake_model.chat_requests()
    assert [(request["model"], request["seed"]) for request in requests] == [
        ("model-at-start", 11),
        ("model-at-start", 11),
    ]
