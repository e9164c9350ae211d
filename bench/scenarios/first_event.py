"""Scenario 4: from the run call's response to the first ``run.step`` on the test's websocket.

One websocket (``ws/tests/<id>/``, API key header) stays open; each sample claims a run, sends
run, and waits for that invocation's first run.step, then for its end before the next sample, so
samples do not overlap. The target is the offline reference target: what is measured is the
pipeline (broker, worker, database, channel layer, daphne), not a model.
Floor: an event put straight on the channel layer from this process (group_send to the test's
group) until it arrives on the same websocket, i.e. the channel layer and daphne alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

from asgiref.sync import async_to_sync
from websockets.sync.client import ClientConnection, connect

from bench.context import Context
from bench.scenarios.claiming import start_test
from bench.seed import make_benchmark
from bench.stats import Row, percentile

TARGET_P50_MS = 50
WAIT_S = 15.0
END_TYPES = {"run.completed", "run.failed", "run.stopped"}


def wait_for(
    socket: ClientConnection, *, invocation_id: str, types: set[str], timeout: float
) -> dict[str, Any] | None:
    deadline = time.perf_counter() + timeout
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        try:
            message = json.loads(socket.recv(timeout=remaining))
        except TimeoutError:
            return None
        if message.get("type") in types and str(message.get("invocation_id")) == invocation_id:
            return dict(message)


def channel_layer_floor(context: Context, socket: ClientConnection, test_id: str) -> list[float]:
    from channels.layers import get_channel_layer

    from tests_app.realtime.events import group_name

    layer = get_channel_layer()
    assert layer is not None
    send = async_to_sync(layer.group_send)
    latencies = []
    for sample in range(context.sizes.first_event_samples):
        invocation_id = f"floor-{sample}"
        event = {
            "type": "run.step",
            # Far above any real sequence number, so a consumer that drops stale events keeps it.
            "seq": 10**12 + sample,
            "test_id": test_id,
            "invocation_id": invocation_id,
            "run_id": None,
            "turn": 1,
            "total_turns": 1,
            "output": "floor",
        }
        started = time.perf_counter()
        send(group_name(test_id), {"type": "test.event", "event": event})
        if wait_for(socket, invocation_id=invocation_id, types={"run.step"}, timeout=WAIT_S):
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def run(context: Context) -> list[Row]:
    samples = context.sizes.first_event_samples
    benchmark = make_benchmark(
        department_id=context.world.department_ids[2],
        name="First event benchmark",
        entries=samples + 3,
        turns=2,
        target={"kind": "reference"},
    )
    test_id = start_test(context, benchmark.pk)
    client = context.client()
    url = f"ws://127.0.0.1:{context.runtime.ws_port}/ws/tests/{test_id}/"
    latencies: list[float] = []
    missed = 0
    with connect(url, additional_headers={"X-Api-Key": context.world.operator_key}) as socket:
        socket.recv(timeout=WAIT_S)  # the snapshot sent on connect
        for sample in range(samples + 3):
            claim = client.call("next", {"test_id": test_id})
            invocation_id = str(claim["invocation_id"])
            client.call(
                "run",
                {
                    "test_id": test_id,
                    "test_invocation_id": invocation_id,
                    "run_id": str(claim["run_id"]),
                },
            )
            answered = time.perf_counter()
            step = wait_for(socket, invocation_id=invocation_id, types={"run.step"}, timeout=WAIT_S)
            arrived = time.perf_counter()
            if step is None:
                missed += 1
            elif sample >= 3:  # the first three warm the worker's connections and imports
                latencies.append((arrived - answered) * 1000)
            wait_for(socket, invocation_id=invocation_id, types=END_TYPES, timeout=WAIT_S)
        floors = channel_layer_floor(context, socket, test_id)
    client.close()
    if missed:
        context.note(f"first event: {missed} run calls produced no run.step within {WAIT_S:g} s")
    if len(floors) < samples:
        context.note(f"first event floor: {samples - len(floors)} channel-layer events lost")
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    note = f"{len(latencies)} samples, reference target"
    return [
        Row(
            "first event p50",
            p50,
            "ms",
            percentile(floors, 0.5),
            target=f"<= {TARGET_P50_MS} ms",
            met=bool(latencies) and p50 <= TARGET_P50_MS,
            note=note,
        ),
        Row("first event p95", p95, "ms", percentile(floors, 0.95), note=note),
    ]
