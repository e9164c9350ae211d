"""Realtime progress across real processes: daphne, a Celery worker, Redis and PostgreSQL.

A ``websockets`` client authenticated by an ``X-Api-Key`` header watches a test while the flow is
driven through the HTTP API on the daphne server; the replay and the grading run on the worker,
which publishes through channels-redis to the daphne process that holds the socket. The last test
does the same on the embedded default (`make run`: SQLite, a replay thread in the server process,
the in-memory layer).
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests import factories
from tests.integration import test_embedded_runtime as embedded
from tests.integration.daphne import (  # noqa: F401
    DaphneServer,
    daphne_server_fixture,
    post_api,
)
from tests_app.models import Grade, ReplayStep, TestInvocation
from tests_app.realtime.events import send_event

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("transactional_db")]

embedded_server = embedded.embedded_server  # the `make run` server fixture, shared

WAIT_S = 30  # the longest we wait for something that should happen
# The stated behaviour: an event arrives within a second of its data being written.
ARRIVAL_BOUND_S = 1.0


class EventReader:
    """Receives on a thread of its own, so an arrival time is taken when the message arrives
    and not when the test next gets round to looking."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.messages: queue.Queue[tuple[datetime, dict[str, Any]]] = queue.Queue()
        self.closed_with: int | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.websocket:
                self.messages.put((timezone.now(), json.loads(raw)))
        except ConnectionClosed:
            pass
        finally:
            self.closed_with = self.websocket.close_code

    def next(self, timeout: float = WAIT_S) -> tuple[datetime, dict[str, Any]]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message within {timeout}s")

    def until(self, event_type: str) -> list[tuple[datetime, dict[str, Any]]]:
        """Every message up to and including the first of ``event_type``."""
        received = []
        while True:
            arrived, message = self.next()
            received.append((arrived, message))
            if message["type"] == event_type:
                return received


def api_post(server: DaphneServer, key: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = post_api(server, key, action, body, timeout=WAIT_S)
    if status != 200:
        pytest.fail(f"{action} answered {status}: {answer}")
    return dict(answer)


def watch(server: DaphneServer, test_id: Any, key: str) -> ClientConnection:
    return connect(
        server.ws_url(f"ws/tests/{test_id}/"),
        additional_headers={"X-Api-Key": key},
        open_timeout=WAIT_S,
    )


def test_a_key_holder_watches_events_published_by_another_process(
    daphne_server: DaphneServer, benchmark: Any, viewer: Any
) -> None:
    test = factories.TestFactory.create(benchmark=benchmark, status="running")
    _, key = factories.make_api_key(viewer)

    with watch(daphne_server, test.pk, key) as websocket:
        reader = EventReader(websocket)
        _, snapshot = reader.next()
        # This process publishes through channels-redis; daphne forwards to the socket.
        send_event(test_id=test.pk, event_type="test.stopped", status="stopped")
        _, event = reader.next()

    assert snapshot["type"] == "snapshot"
    assert snapshot["test_id"] == str(test.pk)
    assert event["type"] == "test.stopped"
    assert event["seq"] == snapshot["seq"] + 1
    assert event["status"] == "stopped"


def test_refusals_are_visible_to_a_websockets_client(
    daphne_server: DaphneServer, benchmark: Any, outsider: Any
) -> None:
    test = factories.TestFactory.create(benchmark=benchmark)
    _, key = factories.make_api_key(outsider)
    url = daphne_server.ws_url(f"ws/tests/{test.pk}/")

    def close_code(**options: Any) -> int | None:
        with connect(url, open_timeout=WAIT_S, **options) as websocket:
            reader = EventReader(websocket)
            reader.thread.join(timeout=WAIT_S)
            assert reader.messages.empty()  # not even a snapshot
            return reader.closed_with

    assert close_code() == 4401
    assert close_code(additional_headers={"X-Api-Key": key}) == 4404
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin("http://evil.example"), open_timeout=WAIT_S)
    assert refused.value.response.status_code == 403


def test_a_replay_and_its_grade_stream_to_the_agent_as_they_happen(
    daphne_server: DaphneServer, celery_worker: Any, research: Any, operator: Any
) -> None:
    turns = 3
    benchmark = factories.make_benchmark(department=research, entries=1, turns=turns)
    _, key = factories.make_api_key(operator)

    test_id = api_post(daphne_server, key, "start", {"benchmark_id": str(benchmark.pk)})["test_id"]
    with watch(daphne_server, test_id, key) as websocket:
        reader = EventReader(websocket)
        _, snapshot = reader.next()
        claim = api_post(daphne_server, key, "next", {"test_id": test_id})
        ids = {"test_id": test_id, "test_invocation_id": claim["invocation_id"]}
        ids["run_id"] = claim["run_id"]
        api_post(daphne_server, key, "run", ids)

        replay = reader.until("run.completed")
        # Read before end: ending writes the invocation again.
        replayed_at = TestInvocation.objects.get(pk=claim["invocation_id"]).updated_at
        ended = api_post(daphne_server, key, "end", {**ids, "grade": True})
        graded = reader.until("grade.completed")

    assert snapshot["type"] == "snapshot"
    assert snapshot["status_summary"]["total_runs"] == 1
    events = [message for _, message in replay + graded]
    progress = [event for event in events if event["type"] != "test.completed"]
    assert [event["type"] for event in progress] == [
        "run.started",
        *["run.step"] * turns,
        "run.completed",
        "grade.completed",
    ]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs))
    assert seqs[0] > snapshot["seq"]
    for event in progress:
        assert event["test_id"] == test_id
        assert event["invocation_id"] == claim["invocation_id"]
        assert event["run_id"] == claim["run_id"]

    # Every event's data is in the database, and arrived within a second of being written.
    invocation = TestInvocation.objects.get(pk=claim["invocation_id"])
    steps = {step.turn: step for step in ReplayStep.objects.filter(invocation=invocation)}
    grade = Grade.objects.get(pk=ended["grade_id"])
    assert grade.status == Grade.Status.DONE
    written_at: list[datetime] = []
    for event in progress:
        if event["type"] == "run.started":
            assert invocation.started_at is not None
            written_at.append(invocation.started_at)
        elif event["type"] == "run.step":
            step = steps[event["turn"]]
            assert event["total_turns"] == turns
            assert event["output"] == step.output == f"Answer {event['turn']}."
            written_at.append(step.created_at)
        elif event["type"] == "run.completed":
            written_at.append(replayed_at)
        else:
            assert event["grade_id"] == str(grade.pk)
            assert event["score"] == pytest.approx(grade.score)
            assert event["passed"] == grade.passed
            written_at.append(grade.updated_at)
    assert sorted(steps) == [1, 2, 3]
    arrivals = [arrived for arrived, event in replay + graded if event["type"] != "test.completed"]
    gaps = [
        (event["type"], (arrived - written).total_seconds())
        for event, arrived, written in zip(progress, arrivals, written_at, strict=True)
    ]
    assert all(gap < ARRIVAL_BOUND_S for _, gap in gaps), gaps


def test_on_the_embedded_default_steps_stream_as_they_happen(
    embedded_server: dict[str, Any],
) -> None:
    post = embedded.post
    status, found = post(embedded_server, "/api/v5/artifacts/benchmark/search", {})
    assert status == 200, found
    status, started = post(
        embedded_server,
        "/api/v5/artifacts/test/start",
        {"benchmark_id": found["benchmarks"][0]["id"]},
    )
    assert status == 200, started
    test_id = started["test_id"]
    ws_url = embedded_server["base"].replace("http://", "ws://") + f"/ws/tests/{test_id}/"

    with connect(
        ws_url, additional_headers={"X-Api-Key": embedded_server["key"]}, open_timeout=WAIT_S
    ) as websocket:
        reader = EventReader(websocket)
        _, snapshot = reader.next()
        status, claim = post(embedded_server, "/api/v5/artifacts/test/next", {"test_id": test_id})
        assert status == 200, claim
        ids = {"test_id": test_id, "test_invocation_id": claim["invocation_id"]}
        ids["run_id"] = claim["run_id"]
        status, ran = post(embedded_server, "/api/v5/artifacts/test/run", ids)
        assert status == 200, ran
        replay = reader.until("run.completed")

    status, detail = post(embedded_server, "/api/v5/artifacts/test/get", {"test_id": test_id})
    assert status == 200, detail
    entry_id = next(run["entry_id"] for run in detail["runs"] if run["id"] == claim["run_id"])
    turns = next(item["turns"] for item in detail["entries"]["items"] if item["id"] == entry_id)
    events = [event for _, event in replay]
    assert snapshot["type"] == "snapshot"
    assert [event["type"] for event in events] == [
        "run.started",
        *["run.step"] * turns,
        "run.completed",
    ]
    assert [event["seq"] for event in events] == [
        snapshot["seq"] + offset for offset in range(1, turns + 3)
    ]

    # The server's SQLite file holds each step; its output went out when the row was written.
    database = sqlite3.connect(embedded_server["data_dir"] / "replaybench.sqlite3")
    try:
        rows = database.execute(
            "SELECT turn, output, created_at FROM tests_app_replaystep WHERE invocation_id = ?",
            (claim["invocation_id"].replace("-", ""),),
        ).fetchall()
    finally:
        database.close()
    written = {
        turn: (output, datetime.fromisoformat(created).replace(tzinfo=UTC))
        for turn, output, created in rows
    }
    assert sorted(written) == list(range(1, turns + 1))
    for arrived, event in replay:
        if event["type"] == "run.step":
            output, created_at = written[event["turn"]]
            assert event["output"] == output
            gap = (arrived - created_at).total_seconds()
            assert gap < ARRIVAL_BOUND_S, (event["turn"], gap)
