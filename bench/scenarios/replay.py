"""Scenario 3: replay throughput against the loopback server that answers each call after 50 ms.

A benchmark of N entries x 3 user turns with an ``openai`` target pointed at the fake server.
Every run is claimed first (not timed), then 16 clients send the run calls; the wall time goes
from the first run call to the moment the database shows every invocation replayed (polled
every 20 ms). Floor: calls x 50 ms / 32, a worker of 32 threads kept busy by a zero-cost server.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from typing import Any

import psycopg

from bench.client import ApiError
from bench.context import Context, parallel
from bench.cpu import cpu_seconds, spent
from bench.runtime import WORKER_CONCURRENCY
from bench.scenarios.claiming import start_test
from bench.seed import make_benchmark
from bench.stats import Row

DELAY_S = 0.05
TARGET_RATIO = 1.3
FINISHED = ("replayed", "ended", "failed", "stopped")


def fake_server(context: Context, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{context.runtime.openai_port}{path}", method=method, data=b""
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def claim_everything(context: Context, test_id: str) -> list[tuple[str, str]]:
    """(invocation id, run id) of every run of the test, claimed through next."""
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def loop(_: int) -> None:
        client = context.client()
        while True:
            try:
                answer = client.call("next", {"test_id": test_id})
            except ApiError as error:
                if error.status == 409:
                    break
                raise
            with lock:
                claims.append((str(answer["invocation_id"]), str(answer["run_id"])))
        client.close()

    parallel(context.sizes.next_clients, loop)
    return claims


def finished_count(connection: psycopg.Connection[Any], test_id: str) -> tuple[int, int]:
    row = connection.execute(
        "SELECT count(*) FILTER (WHERE status = ANY(%s)),"
        " count(*) FILTER (WHERE status = 'failed') FROM tests_app_testinvocation"
        " WHERE test_id = %s",
        (list(FINISHED), test_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run(context: Context) -> list[Row]:
    entries, turns = context.sizes.replay_entries, context.sizes.replay_turns
    benchmark = make_benchmark(
        department_id=context.world.department_ids[1],
        name="Replay benchmark",
        entries=entries,
        turns=turns,
        target={
            "kind": "openai",
            "model": "bench-echo",
            "base_url": context.runtime.openai_base_url,
            "timeout_s": 30,
        },
    )
    test_id = start_test(context, benchmark.pk)
    claims = claim_everything(context, test_id)
    if len(claims) != entries:
        context.note(f"replay: claimed {len(claims)} of {entries} runs")
    fake_server(context, "/stats/reset", "POST")

    queue = list(claims)
    lock = threading.Lock()
    run_failures: list[str] = []
    cpu_before = cpu_seconds(context.runtime)
    started = time.perf_counter()

    def sender(_: int) -> None:
        client = context.client()
        while True:
            with lock:
                if not queue:
                    break
                invocation_id, run_id = queue.pop()
            try:
                client.call(
                    "run",
                    {"test_id": test_id, "test_invocation_id": invocation_id, "run_id": run_id},
                )
            except ApiError as error:
                with lock:
                    run_failures.append(f"{error.status}")
        client.close()

    sent_at: list[float] = []

    def send_all() -> None:
        parallel(context.sizes.next_clients, sender)
        sent_at.append(time.perf_counter())

    # The senders run beside the poller: replays start while run calls are still being sent.
    senders = threading.Thread(target=send_all)
    senders.start()
    floor = entries * turns * DELAY_S / WORKER_CONCURRENCY
    deadline = started + max(300.0, 60 * floor)
    done = failed = 0
    # One connection for every poll: a new PostgreSQL connection costs its server about 4.5 ms
    # of CPU here, which at 40 polls a second took a tenth of the two cores from the replays.
    with context.connect() as poller:
        while time.perf_counter() < deadline:
            done, failed = finished_count(poller, test_id)
            if done >= len(claims):
                break
            time.sleep(0.02)
    wall = time.perf_counter() - started
    cpu = spent(cpu_before, cpu_seconds(context.runtime))
    senders.join()
    sent_seconds = sent_at[0] - started
    stats = fake_server(context, "/stats")
    if run_failures:
        context.note(f"replay: {len(run_failures)} run calls failed: {sorted(set(run_failures))}")
    if done < len(claims):
        context.note(f"replay: only {done} of {len(claims)} invocations finished in time")
    if failed:
        context.note(f"replay: {failed} invocations failed")
    expected_calls = len(claims) * turns
    if stats["calls"] != expected_calls:
        context.note(
            f"replay: the model server saw {stats['calls']} calls, expected {expected_calls}"
        )
    complete = done >= len(claims) and not failed
    note = (
        f"{entries}x{turns} turns, {stats['calls']} calls, max {stats['max_in_flight']} in flight;"
        f" run calls took {sent_seconds:.1f} s"
    )
    if cpu:
        # Whether the wall time is the model's delay or the cores: CPU seconds by process.
        parts = ", ".join(f"{label} {seconds:.1f}" for label, seconds in cpu.items() if seconds)
        note += f"; CPU s {parts} (of {os.cpu_count()} cores x {wall:.1f} s)"
    return [
        Row(
            f"replay wall {entries}x{turns}",
            wall,
            "s",
            floor,
            target=f"<= {TARGET_RATIO}x floor",
            met=complete and wall <= TARGET_RATIO * floor,
            note=note,
        )
    ]
