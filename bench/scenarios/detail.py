"""Scenario 6: ``get`` of a test with 10k graded runs.

Two tests: a running one (a tenth of its runs still pending), whose answer cannot be cached and
is what agents poll during a run, and a completed one, which get may answer from its cache.
Figure: p50 of the HTTP round trip (the default page of runs), and the number of SQL queries the
endpoint runs (captured in-process with the cache off). Floor: those queries replayed verbatim
with psycopg on one connection.
"""

from __future__ import annotations

from bench.context import Context
from bench.seed import seed_finished_test
from bench.stats import Row, percentile

TARGET_P50_MS = 30
TARGET_QUERIES = 10


def measure(context: Context, *, label: str, pending: int) -> list[Row]:
    runs = context.sizes.get_runs
    with context.connect(autocommit=False) as connection:
        test_id = str(
            seed_finished_test(
                connection=connection,
                world=context.world,
                department_id=context.world.department_ids[3],
                name=f"Get benchmark ({label})",
                runs=runs,
                steps_per_run=3,
                pending=pending,
            )
        )
    body = {"test_id": test_id}
    client = context.client()
    answer = client.call("get", body)
    summary = answer.get("status_summary") or {}
    if summary.get("total_runs") != runs:
        context.note(
            f"get ({label}): status_summary.total_runs is {summary.get('total_runs')}, "
            f"seeded {runs}"
        )
    durations, floors, statements = context.time_against_floor(
        client, "get", body, samples=context.sizes.get_samples, warm_up=3
    )
    client.close()
    p50 = percentile(durations, 0.5)
    returned = len(answer.get("runs") or [])
    note = f"{runs} runs, {returned} in the page, {context.sizes.get_samples} requests"
    return [
        Row(
            f"get p50 ({runs // 1000}k runs, {label})",
            p50,
            "ms",
            percentile(floors, 0.5),
            target=f"<= {TARGET_P50_MS} ms",
            met=p50 <= TARGET_P50_MS,
            note=note,
        ),
        Row(
            f"get queries ({label})",
            float(len(statements)),
            "queries",
            None,
            target=f"<= {TARGET_QUERIES}",
            met=len(statements) <= TARGET_QUERIES,
            note="SQL statements of one uncached request, authentication included",
        ),
    ]


def run(context: Context) -> list[Row]:
    running = measure(context, label="running", pending=context.sizes.get_runs // 10)
    completed = measure(context, label="completed", pending=0)
    # The completed test's SQL is the same as the running one's when uncached: one count row.
    return [*running, completed[0]]
