"""Scenario 1: search at growing numbers of tests, with facets and total_count, through HTTP.

Seeding is COPY in batches over 40 benchmarks (10 departments x 4 evals), created_at spread over a
year, a tenth archived. Requests mix five shapes (no filter, an eval, a department substring with
is_archived, a 30-day window, an eval substring with an offset) with random parameters, so a
cache keyed on the body sees few repeats. Floor: the SQL the endpoint ran for the same body,
captured in-process and replayed verbatim with psycopg on one connection.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from bench.context import Context
from bench.seed import CopyTable, copy_lines, copy_text
from bench.stats import Row, percentile

STATUSES = ["completed"] * 7 + ["running", "pending", "stopped"]
DAYS = 365


WARM_UP_REQUESTS = 30


def seed_tests(context: Context, *, first: int, last: int) -> None:
    from tests_app.models import Test

    table = CopyTable(
        Test,
        variables=[
            "id",
            "created_at",
            "benchmark_id",
            "eval_id",
            "department_id",
            "target_id",
            "target_snapshot",
            "status",
            "is_archived",
            "completed_runs",
        ],
        constants={
            "created_by_id": context.world.staff_id,
            "total_runs": 10,
            "graded_runs": 0,
            "passed_runs": 0,
            "score_sum": 0.0,
        },
    )
    benchmarks = [tuple(str(part) for part in row) for row in context.world.search_benchmarks]
    world = context.world
    targets = {
        str(department): [
            (str(target), copy_text(world.target_snapshots[target])) for target in ids
        ]
        for department, ids in world.department_targets.items()
    }
    now = timezone.now()
    rng = context.rng
    with context.connect(autocommit=False) as connection:
        for start in range(first, last, 50_000):
            stop = min(last, start + 50_000)
            lines = []
            for _ in range(start, stop):
                benchmark, evaluation, department = benchmarks[rng.randrange(len(benchmarks))]
                target, snapshot = targets[department][rng.randrange(len(targets[department]))]
                status = STATUSES[rng.randrange(len(STATUSES))]
                created = now - timedelta(seconds=rng.randrange(DAYS * 86_400))
                lines.append(
                    table.line(
                        str(uuid.uuid4()),
                        created.isoformat(),
                        benchmark,
                        evaluation,
                        department,
                        target,
                        snapshot,
                        status,
                        "t" if rng.random() < 0.1 else "f",
                        "10" if status == "completed" else "0",
                    )
                )
            copy_lines(connection, table, lines)
            connection.commit()
    with context.connect() as connection:
        # Steady-state statistics and visibility map, as autovacuum would leave them.
        # The whole database: the scenarios before this one bulk-load runs, steps and invocations,
        # and autovacuum working through them would run beside the timed searches.
        connection.execute("VACUUM ANALYZE")


def request_bodies(context: Context, count: int) -> list[dict[str, Any]]:
    rng = context.rng
    evals = [str(evaluation) for _, evaluation, _ in context.world.search_benchmarks]
    today = timezone.now().date()
    bodies: list[dict[str, Any]] = []
    for index in range(count):
        shape = index % 5
        if shape == 0:
            body: dict[str, Any] = {}
        elif shape == 1:
            body = {"eval_ids": [rng.choice(evals)]}
        elif shape == 2:
            body = {
                "department_search": f"department {rng.randint(1, 10):02d}",
                "is_archived": False,
            }
        elif shape == 3:
            start = today - timedelta(days=rng.randrange(30, DAYS))
            body = {
                "start_date": start.isoformat(),
                "end_date": (start + timedelta(days=30)).isoformat(),
            }
        else:
            body = {
                "eval_search": f"eval {rng.randint(1, 10):02d}",
                "page_offset": 20 * rng.randint(1, 5),
            }
        body["page_size"] = 20
        bodies.append(body)
    return bodies


def refresh_analytics(context: Context) -> None:
    """Search may read materialized views; refresh them as the periodic task would."""
    response = context.client(context.world.staff_key).post("/api/v5/artifacts/test/refresh", {})
    if response.status != 200:
        context.note(f"refresh answered {response.status}; searched without it")


def measure(context: Context, tests: int) -> list[Row]:
    samples = context.sizes.search_samples
    bodies = request_bodies(context, samples)
    client = context.client(context.world.staff_key)
    with context.connect() as connection:
        row = connection.execute("SELECT count(*) FROM tests_app_test").fetchone()
        expected = row[0] if row else 0
    warm = client.call("search", {})
    if warm.get("total_count") != expected:
        context.note(f"search total_count {warm.get('total_count')} for {expected} tests")
    # Steady state: every web process and thread has its connections and caches before timing.
    for body in request_bodies(context, WARM_UP_REQUESTS):
        client.call("search", body)
    durations = []
    for body in bodies:
        response = client.post("/api/v5/artifacts/test/search", body)
        if response.status != 200:
            raise RuntimeError(f"search answered {response.status}: {response.body}")
        durations.append(response.seconds * 1000)
    client.close()

    floors = []
    statement_counts = set()
    with context.connect() as connection:
        for body in bodies:
            _, statements = context.capture_sql("search", body, context.world.staff_key)
            statement_counts.add(len(statements))
            floors.append(context.time_statements(connection, statements) * 1000)
    label = f"{tests // 1000}k" if tests < 1_000_000 else f"{tests / 1_000_000:g}M"
    p50, p95 = percentile(durations, 0.5), percentile(durations, 0.95)
    floor50, floor95 = percentile(floors, 0.5), percentile(floors, 0.95)
    at_scale = tests >= 1_000_000
    met95 = p95 <= 2 * floor95 and (p95 <= 50 or not at_scale)
    target95 = "<= 50 ms and <= 2x floor" if at_scale else "<= 2x floor"
    note = f"{samples} requests, {sorted(statement_counts)} SQL statements each"
    return [
        Row(f"search {label} p50", p50, "ms", floor50, note=note),
        Row(f"search {label} p95", p95, "ms", floor95, target=target95, met=met95, note=note),
    ]


def run(context: Context) -> list[Row]:
    rows: list[Row] = []
    seeded = 0
    for tests in context.sizes.search_tests:
        print(f"  seeding tests {seeded:,} -> {tests:,}", flush=True)
        started = time.perf_counter()
        seed_tests(context, first=seeded, last=tests)
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
        seeded = tests
        refresh_analytics(context)
        rows.extend(measure(context, tests))
    return rows
