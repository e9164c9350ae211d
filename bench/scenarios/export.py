"""Scenario 5: export of a completed test with 100k runs and 300k steps.

The export runs through the real view and service in a fresh subprocess (:mod:`bench.probe`),
whose peak resident memory (its VmHWM) is the memory figure. Rows per second counts the data
rows the answer reports (runs.csv + turns.csv). Floors: the same rows streamed out of PostgreSQL
as CSV with COPY TO STDOUT (a denormalized runs query and the steps), and the probe's resident
memory just before the call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from psycopg import sql

from bench.context import Context
from bench.runtime import ROOT, base_environment
from bench.seed import seed_finished_test
from bench.stats import Row

TARGET_ROWS_PER_SECOND = 50_000
TARGET_PEAK_MB = 200

RUNS_QUERY = """
SELECT r.id, r.cycle, r.ordinal, e.id, e.title, r.status, r.score, r.passed,
       i.id, i.status, i.client, i.started_at, i.ended_at, i.steps_count, i.error,
       g.id, g.source, g.status, g.score, g.passed, g.feedback
FROM tests_app_testrun r
JOIN tests_app_benchmarkentry e ON e.id = r.entry_id
LEFT JOIN tests_app_testinvocation i ON i.id = r.latest_invocation_id
LEFT JOIN LATERAL (
    SELECT * FROM tests_app_grade WHERE invocation_id = i.id AND status = 'done'
    ORDER BY created_at DESC LIMIT 1
) g ON true
WHERE r.test_id = {test_id}
ORDER BY r.cycle, r.ordinal
"""

STEPS_QUERY = """
SELECT i.run_id, s.invocation_id, s.turn, s.input, s.output, s.reference, s.latency_ms,
       s.prompt_tokens, s.completion_tokens, s.error
FROM tests_app_replaystep s
JOIN tests_app_testinvocation i ON i.id = s.invocation_id
WHERE i.test_id = {test_id}
ORDER BY i.run_id, s.invocation_id, s.turn
"""


def copy_out_floor(context: Context, test_id: str) -> tuple[int, float]:
    """Rows and seconds to stream both CSVs' worth of rows out of PostgreSQL."""
    rows = 0
    started = time.perf_counter()
    with context.connect() as connection, connection.cursor() as cursor:
        for query in (RUNS_QUERY, STEPS_QUERY):
            statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(
                sql.SQL(query).format(test_id=sql.Literal(test_id))
            )
            with cursor.copy(statement) as copy:
                for chunk in copy:
                    rows += bytes(chunk).count(b"\n")
    return rows, time.perf_counter() - started


def probe_export(context: Context, test_id: str) -> dict[str, object]:
    environment = base_environment(
        database_url=context.runtime.database_url, redis_url=context.runtime.redis_url
    )
    environment["BENCH_API_KEY"] = context.world.operator_key
    environment["MEDIA_ROOT"] = str(context.runtime.log_directory.parent / "media")
    environment["LOG_LEVEL"] = "WARNING"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.probe", "export", test_id],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode or not lines:
        raise RuntimeError(
            f"export probe failed ({completed.returncode}): {completed.stderr[-800:]}"
        )
    return dict(json.loads(lines[-1]))


def run(context: Context) -> list[Row]:
    runs, steps = context.sizes.export_runs, context.sizes.export_steps_per_run
    with context.connect(autocommit=False) as connection:
        test_id = str(
            seed_finished_test(
                connection=connection,
                world=context.world,
                department_id=context.world.department_ids[4],
                name="Export benchmark",
                runs=runs,
                steps_per_run=steps,
            )
        )
    result = probe_export(context, test_id)
    if result["status"] != 200:
        raise RuntimeError(f"export answered {result['status']}: {result['answer']}")
    answer = result["answer"]
    assert isinstance(answer, dict)
    expected_rows = runs + runs * steps
    row_count = int(answer.get("row_count") or 0)
    if row_count != expected_rows:
        context.note(f"export: row_count {row_count}, expected {expected_rows}")
    seconds = float(result["seconds"])  # type: ignore[arg-type]
    rate = row_count / seconds if seconds > 0 else 0.0
    floor_rows, floor_seconds = copy_out_floor(context, test_id)
    peak_mb, before_mb = float(result["peak_mb"]), float(result["before_mb"])  # type: ignore[arg-type]
    note = f"{runs} runs + {runs * steps} steps in {seconds:.1f} s"
    return [
        Row(
            "export rows/s",
            rate,
            "rows/s",
            floor_rows / floor_seconds if floor_seconds > 0 else None,
            target=f">= {TARGET_ROWS_PER_SECOND:,}/s",
            met=rate >= TARGET_ROWS_PER_SECOND and row_count == expected_rows,
            higher_is_better=True,
            note=note,
        ),
        Row(
            "export peak memory",
            peak_mb,
            "MB",
            before_mb,
            target=f"<= {TARGET_PEAK_MB} MB",
            met=peak_mb <= TARGET_PEAK_MB,
            note="peak RSS of the exporting process; floor: its RSS before the call",
        ),
    ]
