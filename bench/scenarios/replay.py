"""Replay scenarios: a benchmark of N entries x 3 user turns with an ``openai`` target pointed at
a loopback model server that answers each call after a fixed delay.

Every run is claimed first (not timed), then 16 clients send the run calls; the wall time goes
from the first run call to the moment the database shows every invocation replayed (polled every
20 ms). Beside it, the CPU the runtime spent per replayed turn: the web and worker processes,
PostgreSQL and Redis (the model server and the bench client apart).

* ``replay``: the model answers after 50 ms and the workers run 32 replays at once; floor:
  calls x 50 ms / 32, a worker kept busy by a zero-cost server.
* ``concurrency``: the model answers after 1 s, as real models do, and the workers run 256
  replays at once (two processes of 128 threads) within PostgreSQL's 100 connections; floor:
  calls x 1 s / 256.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.client import ApiError
from bench.context import Context, parallel
from bench.cpu import cpu_seconds, spent
from bench.runtime import WORKER_CONCURRENCY
from bench.scenarios.claiming import start_test
from bench.seed import make_benchmark
from bench.stats import Row

FINISHED = ("replayed", "ended", "failed", "stopped")
# CPU of these parts is the system's; the model server and the load client stand outside it.
SYSTEM_PARTS = ("worker", "web", "websockets", "PostgreSQL", "Redis")
CONCURRENT_REPLAYS = 256
# Connections per worker process in the concurrency scenario: the web's and the workers' pools
# together stay within PostgreSQL's default of 100.
CONCURRENT_POOL_MAX = 24


def model_server(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"")
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


def finished_count(connection: psycopg.Connection[Any], test_id: str) -> tuple[int, int, int]:
    """Finished and failed invocations of the test, and the server's open connections."""
    row = connection.execute(
        "SELECT count(*) FILTER (WHERE status = ANY(%s)),"
        " count(*) FILTER (WHERE status = 'failed'),"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        " FROM tests_app_testinvocation WHERE test_id = %s",
        (list(FINISHED), test_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@dataclass(frozen=True)
class Outcome:
    wall: float
    calls: int
    max_in_flight: int
    cpu: dict[str, float]
    complete: bool
    peak_connections: int
    note: str

    @property
    def cpu_ms_per_turn(self) -> float | None:
        system = sum(self.cpu.get(part, 0.0) for part in SYSTEM_PARTS)
        return 1000 * system / self.calls if self.cpu and self.calls else None


@dataclass
class Sending:
    """run calls being sent from their own thread; see :func:`send_runs`."""

    thread: threading.Thread
    # HTTP statuses of the calls that failed.
    failures: list[int]
    # When the last call returned (empty until then).
    finished_at: list[float]


def send_runs(context: Context, test_id: str, claims: list[tuple[str, str]]) -> Sending:
    """Send run for every claim from next_clients client threads, in the background: the caller
    polls meanwhile, so replays start while run calls are still being sent."""
    queue = list(claims)
    lock = threading.Lock()
    sending = Sending(thread=threading.Thread(), failures=[], finished_at=[])

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
                    sending.failures.append(error.status)
        client.close()

    def send_all() -> None:
        parallel(context.sizes.next_clients, sender)
        sending.finished_at.append(time.perf_counter())

    sending.thread = threading.Thread(target=send_all)
    sending.thread.start()
    return sending


def replay_all(context: Context, *, port: int, entries: int, delay_s: float, label: str) -> Outcome:
    """Replay a fresh test of ``entries`` x 3 turns against the model server on ``port``."""
    turns = context.sizes.replay_turns
    benchmark = make_benchmark(
        department_id=context.world.department_ids[1],
        name=f"{label} benchmark",
        entries=entries,
        turns=turns,
        target={
            "kind": "openai",
            "model": "bench-echo",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "timeout_s": max(30, 10 * delay_s),
        },
    )
    test_id = start_test(context, benchmark.pk)
    claims = claim_everything(context, test_id)
    if len(claims) != entries:
        context.note(f"{label}: claimed {len(claims)} of {entries} runs")
    model_server(port, "/stats/reset", "POST")

    cpu_before = cpu_seconds(context.runtime)
    started = time.perf_counter()
    sending = send_runs(context, test_id, claims)
    deadline = started + max(300.0, 60 * entries * turns * delay_s / WORKER_CONCURRENCY)
    done = failed = peak_connections = 0
    # One connection for every poll: a new one costs the server more than the poll itself.
    with context.connect() as poller:
        while time.perf_counter() < deadline:
            done, failed, connections = finished_count(poller, test_id)
            peak_connections = max(peak_connections, connections)
            if done >= len(claims):
                break
            time.sleep(0.02)
    wall = time.perf_counter() - started
    cpu = spent(cpu_before, cpu_seconds(context.runtime))
    sending.thread.join()
    stats = model_server(port, "/stats")
    if sending.failures:
        failures = sorted(set(sending.failures))
        context.note(f"{label}: {len(sending.failures)} run calls failed: {failures}")
    if done < len(claims):
        context.note(f"{label}: only {done} of {len(claims)} invocations finished in time")
    if failed:
        context.note(f"{label}: {failed} invocations failed")
    expected_calls = len(claims) * turns
    if stats["calls"] != expected_calls:
        context.note(f"{label}: the model server saw {stats['calls']} calls, not {expected_calls}")
    if stats["duplicates"]:
        # Each conversation's first user message names it, so a repeat is a turn asked twice.
        context.note(f"{label}: {stats['duplicates']} model calls repeated an earlier turn")
    note = (
        f"{entries}x{turns} turns, {stats['calls']} calls, max {stats['max_in_flight']} in flight,"
        f" at most {peak_connections} PostgreSQL connections; run calls took"
        f" {sending.finished_at[0] - started:.1f} s"
    )
    if cpu:
        # Whether the wall time is the model's delay or the cores: CPU seconds by process.
        parts = ", ".join(f"{part} {seconds:.2f}" for part, seconds in cpu.items() if seconds)
        note += f"; CPU s {parts} (of {os.cpu_count()} cores x {wall:.1f} s)"
    return Outcome(
        wall=wall,
        calls=int(stats["calls"]),
        max_in_flight=int(stats["max_in_flight"]),
        cpu=cpu,
        complete=done >= len(claims) and not failed,
        peak_connections=peak_connections,
        note=note,
    )


def cpu_row(outcome: Outcome, label: str) -> Row:
    return Row(
        f"{label} CPU per turn",
        outcome.cpu_ms_per_turn,
        "ms",
        note="web, workers, PostgreSQL and Redis; the model server and the bench client apart",
    )


def run(context: Context) -> list[Row]:
    entries = context.sizes.replay_entries
    delay_s = 0.05
    outcome = replay_all(
        context, port=context.runtime.openai_port, entries=entries, delay_s=delay_s, label="replay"
    )
    floor = outcome.calls * delay_s / WORKER_CONCURRENCY if outcome.calls else None
    label = f"replay {entries}x{context.sizes.replay_turns}"
    return [
        Row(
            f"{label} wall",
            outcome.wall,
            "s",
            floor,
            target="<= 1.3x floor",
            met=outcome.complete and floor is not None and outcome.wall <= 1.3 * floor,
            note=outcome.note,
        ),
        cpu_row(outcome, label),
    ]


def run_concurrent(context: Context) -> list[Row]:
    """256 replays at once against a model that answers in 1 s (workers restarted for it)."""
    entries = context.sizes.replay_entries
    delay_s = 1.0
    runtime = context.runtime
    port = runtime.start_openai(delay_ms=delay_s * 1000, name="openai-slow")
    runtime.stop_workers()
    runtime.start_worker(
        processes=runtime.worker_processes,
        concurrency=CONCURRENT_REPLAYS,
        pool_max=CONCURRENT_POOL_MAX,
    )
    try:
        outcome = replay_all(
            context, port=port, entries=entries, delay_s=delay_s, label="concurrency"
        )
    finally:
        runtime.stop_workers()
        runtime.start_worker(processes=runtime.worker_processes)
    # Replays do not run in lockstep: the calls spread over the slots, but each replay's turns
    # follow one another.
    turns = context.sizes.replay_turns
    floor = max(turns * delay_s, outcome.calls * delay_s / CONCURRENT_REPLAYS)
    label = f"{CONCURRENT_REPLAYS} at once {entries}x{context.sizes.replay_turns}"
    return [
        Row(
            f"{label} wall",
            outcome.wall,
            "s",
            floor,
            target="<= 1.15x floor, <= 100 connections",
            met=outcome.complete
            and outcome.wall <= 1.15 * floor
            and outcome.peak_connections <= 100,
            note=outcome.note,
        ),
        cpu_row(outcome, label),
    ]
