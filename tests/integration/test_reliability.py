"""Faults that must leave no work behind, with real processes: a Celery worker, PostgreSQL, and
a Redis server of the test's own on a spare port where Redis must die (the shared one is never
restarted).

* a replay whose task was lost (a worker killed before it claimed it, Redis restarted empty) is
  enqueued again by the sweep and replayed;
* a worker outlives a broker outage and takes work again once Redis is back;
* a replay whose database connections are terminated mid-way finishes, without a second model
  call for any turn;
* an idle websocket stays open.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import connection
from websockets.sync.client import connect

from tests import factories
from tests.conftest import require_service
from tests.fake_model import FakeModel
from tests.integration.conftest import WorkerProcess, wait_for
from tests.integration.daphne import DaphneServer, daphne_server_fixture  # noqa: F401
from tests.redis_server import RedisServer
from tests_app.actors import Actor
from tests_app.models import ReplayStep, Test, TestInvocation, TestRun
from tests_app.realtime.events import send_event
from tests_app.services.claiming import claim_next_run
from tests_app.services.running import request_replay
from tests_app.services.starting import start_test
from tests_app.services.sweep import enqueue_unstarted_invocations

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

WAIT_S = 60


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except FileNotFoundError as error:
        require_service(str(error))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def publish_to(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Celery]:
    """Send this process's background work to the broker at ``url`` (a Redis of the test's own)
    instead of the session's."""

    def use(url: str) -> Celery:
        # Not the current app: shared tasks keep sending to the session's broker elsewhere.
        app = Celery("replaybench-test", broker=url, set_as_current=False)
        app.conf.broker_connection_retry_on_startup = True

        def dispatch(task: Any, args: tuple[Any, ...]) -> None:
            app.send_task(task.name, args=args)

        monkeypatch.setattr("tests_app.background._dispatch", dispatch)
        return app

    return use


def requested_replay(benchmark: Any, user: Any) -> TestInvocation:
    """A replay that run handed to the workers: claimed, marked, its task published."""
    actor = Actor(user=user, client="agent")
    test = start_test(actor=actor, benchmark_id=benchmark.pk)
    claim = claim_next_run(actor=actor, test_id=test.pk)
    request_replay(
        actor=actor, test_id=test.pk, invocation_id=claim.invocation.pk, run_id=claim.run.pk
    )
    return TestInvocation.objects.get(pk=claim.invocation.pk)


def replayed(invocation: TestInvocation) -> bool:
    invocation.refresh_from_db()
    return invocation.status == TestInvocation.Status.REPLAYED


def test_a_replay_lost_with_redis_restarted_empty_is_enqueued_again_by_the_sweep(
    celery_worker_factory: Callable[..., WorkerProcess],
    own_redis: RedisServer,
    publish_to: Callable[[str], Celery],
    research: Any,
    staff: Any,
    settings: Any,
) -> None:
    publish_to(own_redis.url)
    settings.REPLAY_START_TIMEOUT = 0
    benchmark = factories.make_benchmark(department=research, entries=1, turns=2)
    # Requested while no worker runs: the task waits in Redis, then Redis restarts empty.
    invocation = requested_replay(benchmark, staff)
    own_redis.kill()
    own_redis.start()
    celery_worker_factory(REDIS_URL=own_redis.url)
    assert invocation.status == TestInvocation.Status.CREATED

    assert enqueue_unstarted_invocations() == 1

    wait_for(lambda: replayed(invocation), timeout=WAIT_S, what="the replay enqueued again")
    assert ReplayStep.objects.filter(invocation=invocation).count() == 2


def test_a_worker_outlives_a_broker_outage_and_takes_work_again(
    celery_worker_factory: Callable[..., WorkerProcess],
    own_redis: RedisServer,
    publish_to: Callable[[str], Celery],
    slow_model: FakeModel,
    research: Any,
    staff: Any,
) -> None:
    publish_to(own_redis.url)
    worker = celery_worker_factory(REDIS_URL=own_redis.url)
    target = {"kind": "openai", "model": "fake", "base_url": slow_model.base_url, "timeout_s": 10}
    benchmark = factories.make_benchmark(department=research, entries=2, turns=3, target=target)
    during = requested_replay(benchmark, staff)
    wait_for(
        lambda: ReplayStep.objects.filter(invocation=during).exists(),
        timeout=WAIT_S,
        what="a replay under way",
    )

    own_redis.kill()  # mid-replay: its next target slot and event meet no Redis
    time.sleep(3)
    own_redis.start()
    after = requested_replay(benchmark, staff)

    wait_for(lambda: replayed(during), timeout=WAIT_S, what="the replay the outage interrupted")
    wait_for(
        lambda: replayed(after),
        timeout=WAIT_S,
        what=f"a replay after the outage; the worker's log:\n{worker.log()[-3000:]}",
    )
    during.refresh_from_db()
    assert during.error == ""
    assert worker.process.poll() is None


@pytest.fixture
def slow_model(fake_model: FakeModel) -> FakeModel:
    fake_model.delay_s = 1.0
    return fake_model


def terminate_workers_connections(database: str) -> int:
    """pg_terminate_backend of every other connection to the test database: the worker's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_a_replay_whose_connections_are_terminated_finishes_without_calling_twice(
    celery_worker: WorkerProcess, slow_model: FakeModel, research: Any, staff: Any
) -> None:
    target = {"kind": "openai", "model": "fake", "base_url": slow_model.base_url, "timeout_s": 10}
    benchmark = factories.make_benchmark(department=research, entries=1, turns=4, target=target)
    invocation = requested_replay(benchmark, staff)
    wait_for(
        lambda: ReplayStep.objects.filter(invocation=invocation).exists(),
        timeout=WAIT_S,
        what="the first turn",
    )

    database = connection.settings_dict["NAME"]
    for turn in (2, 3):
        # Terminated while the model answers: the turn's write meets a dead connection.
        wait_for(
            lambda: terminate_workers_connections(database) >= 1,
            timeout=WAIT_S,
            what="a connection of the worker to terminate",
        )
        written = ReplayStep.objects.filter(invocation=invocation, turn=turn)
        wait_for(written.exists, timeout=WAIT_S, what=f"turn {turn}, after the termination")

    wait_for(lambda: replayed(invocation), timeout=WAIT_S, what="the replay to finish")
    invocation.refresh_from_db()
    assert invocation.error == ""
    assert ReplayStep.objects.filter(invocation=invocation).count() == 4
    assert TestRun.objects.get(pk=invocation.run_id).status == TestRun.Status.RUNNING
    # One model call per turn: every retry wrote an answer it already had.
    sent = [json.dumps(request["messages"]) for request in slow_model.chat_requests()]
    assert len(sent) == 4
    assert len(set(sent)) == 4


def test_an_idle_websocket_stays_open_and_still_gets_events(
    daphne_server: DaphneServer, research: Any, operator: Any
) -> None:
    benchmark = factories.make_benchmark(department=research, entries=1, turns=1)
    test = start_test(actor=Actor(user=operator), benchmark_id=benchmark.pk)
    _, key = factories.make_api_key(operator)
    closed: list[int | None] = []

    with connect(
        daphne_server.ws_url(f"ws/tests/{test.pk}/"), additional_headers={"X-Api-Key": key}
    ) as websocket:
        assert json.loads(websocket.recv(timeout=10))["type"] == "snapshot"
        # Longer than a Redis read timeout, with nothing to say.
        idle = threading.Event()
        idle.wait(12)
        send_event(test_id=test.pk, event_type="test.stopped", status=Test.Status.STOPPED)
        event = json.loads(websocket.recv(timeout=10))
        closed.append(websocket.close_code)

    assert event["type"] == "test.stopped"
    assert closed == [None]
