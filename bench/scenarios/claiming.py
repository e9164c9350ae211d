"""Scenario 2: ``next`` from 16 concurrent HTTP clients on one test.

Each client calls next until the test answers 409 (no pending run left). Figure: claims per
second from the first call to the last claim, and duplicates (a run handed out twice), counted
from the answers and checked against the database. Floor: the same claim as raw SQL (pick with
FOR UPDATE SKIP LOCKED, mark the run, insert the invocation, point the test at it) from 16
psycopg connections on a second test of the same benchmark.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from typing import Any

from django.utils import timezone

from bench.client import ApiError
from bench.context import Context, parallel
from bench.cpu import cpu_seconds, spent
from bench.seed import CopyTable, make_benchmark
from bench.stats import Row

TARGET_CLAIMS_PER_SECOND = 500


def claim_all_over_http(context: Context, test_id: str) -> tuple[list[str], float, Counter[str]]:
    """Every run of the test claimed by the clients; returns run ids, seconds and failures."""
    run_ids: list[str] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    start_gate = threading.Barrier(context.sizes.next_clients)
    first_call: list[float] = []
    last_claim = [0.0]

    def client_loop(_: int) -> None:
        client = context.client()
        mine: list[str] = []
        start_gate.wait()
        with lock:
            first_call.append(time.perf_counter())
        while True:
            try:
                answer = client.call("next", {"test_id": test_id})
            except ApiError as error:
                if error.status == 409:
                    break
                with lock:
                    failures[str(error.status)] += 1
                if sum(failures.values()) > 100:
                    break
                continue
            mine.append(str(answer["run_id"]))
            ended = time.perf_counter()
            with lock:
                last_claim[0] = max(last_claim[0], ended)
        client.close()
        with lock:
            run_ids.extend(mine)

    parallel(context.sizes.next_clients, client_loop)
    return run_ids, last_claim[0] - min(first_call), failures


def raw_claim_floor(context: Context, test_id: str, operator_id: int) -> tuple[list[str], float]:
    from tests_app.models import TestInvocation

    invocations = CopyTable(
        TestInvocation,
        variables=["id", "created_at", "test_id", "run_id"],
        constants={"status": "created", "client": "agent", "actor_id": operator_id},
    )
    insert = invocations.insert_statement()
    run_ids: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(context.sizes.next_clients)
    first_call: list[float] = []
    last_claim = [0.0]

    def connection_loop(_: int) -> None:
        mine: list[str] = []
        with context.connect(autocommit=False) as connection:
            start_gate.wait()
            with lock:
                first_call.append(time.perf_counter())
            while True:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id FROM tests_app_testrun WHERE test_id = %s AND status = 'pending'"
                        " ORDER BY cycle, ordinal LIMIT 1 FOR UPDATE SKIP LOCKED",
                        (test_id,),
                    )
                    row = cursor.fetchone()
                    if row is None:
                        connection.rollback()
                        break
                    run_id, invocation_id = row[0], uuid.uuid4()
                    cursor.execute(
                        insert,
                        invocations.parameters(invocation_id, timezone.now(), test_id, run_id),
                    )
                    cursor.execute(
                        "UPDATE tests_app_testrun SET status = 'claimed', attempts = attempts + 1,"
                        " latest_invocation_id = %s, updated_at = now() WHERE id = %s",
                        (invocation_id, run_id),
                    )
                    # Last, so the test row (every claim's hot spot) is locked for the least time.
                    cursor.execute(
                        "UPDATE tests_app_test SET current_invocation_id = %s,"
                        " status = CASE WHEN status = 'pending' THEN 'running' ELSE status END,"
                        " started_at = COALESCE(started_at, now()), updated_at = now()"
                        " WHERE id = %s",
                        (invocation_id, test_id),
                    )
                connection.commit()
                mine.append(str(run_id))
                ended = time.perf_counter()
                with lock:
                    last_claim[0] = max(last_claim[0], ended)
        with lock:
            run_ids.extend(mine)

    parallel(context.sizes.next_clients, connection_loop)
    return run_ids, last_claim[0] - min(first_call)


def database_duplicates(context: Context, test_id: str) -> tuple[int, int]:
    """Invocations of the test and how many runs have more than one."""
    with context.connect() as connection:
        row = connection.execute(
            "SELECT count(*), count(*) - count(DISTINCT run_id) FROM tests_app_testinvocation"
            " WHERE test_id = %s",
            (test_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def start_test(context: Context, benchmark_id: Any) -> str:
    answer = context.client().call("start", {"benchmark_id": str(benchmark_id)})
    return str(answer["test_id"])


def run(context: Context) -> list[Row]:
    runs = context.sizes.next_runs
    benchmark = make_benchmark(
        department_id=context.world.department_ids[0],
        name="Claim benchmark",
        entries=runs,
        turns=1,
        target={"kind": "reference"},
    )
    http_test, floor_test = start_test(context, benchmark.pk), start_test(context, benchmark.pk)

    cpu_before = cpu_seconds(context.runtime)
    run_ids, seconds, failures = claim_all_over_http(context, http_test)
    cpu = spent(cpu_before, cpu_seconds(context.runtime))
    if failures:
        context.note(f"next failures (status: count): {dict(failures)}")
    answer_duplicates = len(run_ids) - len(set(run_ids))
    stored, stored_duplicates = database_duplicates(context, http_test)
    if len(run_ids) != runs or stored != runs:
        context.note(f"next claimed {len(run_ids)} runs ({stored} invocations stored) of {runs}")
    duplicates = max(answer_duplicates, stored_duplicates)
    claims_per_second = len(run_ids) / seconds if seconds > 0 else 0.0

    floor_ids, floor_seconds = raw_claim_floor(context, floor_test, context.world.operator_id)
    floor_duplicates = len(floor_ids) - len(set(floor_ids))
    floor_rate = len(floor_ids) / floor_seconds if floor_seconds > 0 else 0.0
    clients = context.sizes.next_clients
    note = f"{runs} runs, {clients} clients, {seconds:.1f} s"
    if cpu:
        # Where the cores went: the HTTP path (web) against the database and the clients.
        parts = ", ".join(f"{label} {used:.1f}" for label, used in cpu.items() if used >= 0.05)
        note += f"; CPU s {parts} (of {os.cpu_count()} cores x {seconds:.1f} s)"
    return [
        Row(
            f"next claims/s ({clients} clients)",
            claims_per_second,
            "claims/s",
            floor_rate,
            target=f">= {TARGET_CLAIMS_PER_SECOND}/s",
            met=claims_per_second >= TARGET_CLAIMS_PER_SECOND,
            higher_is_better=True,
            note=note,
        ),
        Row(
            "next duplicates",
            float(duplicates),
            "dupes",
            None,
            target="0",
            met=duplicates == 0 and len(run_ids) == runs,
            note=f"raw SQL floor duplicates: {floor_duplicates}",
        ),
    ]
