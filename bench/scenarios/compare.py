"""Scenario 8: ``compare`` of two tests of one benchmark of 10,000 entries, through HTTP.

A baseline and a candidate (against another target) of one run per entry, three turns each,
every run graded with a continuous score (four decimals, as the reference grader writes them)
and latencies spread over hundreds of milliseconds, so that the statistics work on distinct
values and the turn counts hold many latencies. Figure: p95 of the HTTP round trip of the default
request (both tests, the first page of 100 entries), and the SQL statements of one request.
Floor: those statements replayed verbatim with psycopg on one connection: what is above it is the
statistics (the bootstrap above all), the rendering and HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from bench.context import Context
from bench.seed import make_benchmark, make_target, seed_finished_test
from bench.stats import Row, percentile

TARGET_P95_MS = 250
WARM_UP_REQUESTS = 5


def graded_by(scores: list[float]) -> Callable[[int], tuple[float, bool]]:
    """Run ``index`` scores ``scores[index]`` and passes from one half."""
    return lambda index: (scores[index], scores[index] >= 0.5)


def run(context: Context) -> list[Row]:
    entries = context.sizes.compare_entries
    department_id = context.world.department_ids[4]
    benchmark = make_benchmark(
        department_id=department_id,
        name="Compare benchmark",
        entries=entries,
        turns=3,
        target={"kind": "reference"},
    )
    candidate_target = make_target(
        department_id=department_id,
        name="Compare candidate",
        config={"kind": "openai", "model": "bench-candidate"},
    )
    rng = random.Random(context.rng.random())
    base_scores = [round(rng.betavariate(4, 2), 4) for _ in range(entries)]
    # The candidate: a little better on average, worse on some entries.
    candidate_scores = [
        round(min(1.0, max(0.0, score + rng.gauss(0.02, 0.12))), 4) for score in base_scores
    ]
    test_ids = []
    with context.connect(autocommit=False) as connection:
        for label, scores, target in (
            ("baseline", base_scores, None),
            ("candidate", candidate_scores, candidate_target),
        ):
            test_ids.append(
                str(
                    seed_finished_test(
                        connection=connection,
                        world=context.world,
                        department_id=department_id,
                        name=f"Compare {label}",
                        runs=entries,
                        steps_per_run=3,
                        benchmark=benchmark,
                        target=target,
                        outcome=graded_by(scores),
                        latency_ms=lambda index: 200 + (index * 7919) % 1800,
                    )
                )
            )
    body = {"test_ids": test_ids}
    client = context.client()
    answer = client.call("compare", body)
    delta = answer["deltas"][0]
    if delta["entries_compared"] != entries:
        context.note(f"compare: {delta['entries_compared']} entries compared of {entries}")
    durations, floors, statements = context.time_against_floor(
        client, "compare", body, samples=context.sizes.compare_samples, warm_up=WARM_UP_REQUESTS
    )
    client.close()
    p95 = percentile(durations, 0.95)
    floor = percentile(floors, 0.95)
    note = (
        f"{entries} entries x 2 tests, {context.sizes.compare_samples} requests; p50 "
        f"{percentile(durations, 0.5):.0f} ms, SQL p50 {percentile(floors, 0.5):.0f} ms; mean "
        "score delta "
        f"{delta['mean_score_delta']:.4f} {delta['mean_score_delta_ci']}, p {delta['p_value']:.2g}"
    )
    return [
        Row(
            f"compare p95 ({entries // 1000}k entries x 2)",
            p95,
            "ms",
            floor,
            target=f"<= {TARGET_P95_MS} ms",
            met=p95 <= TARGET_P95_MS,
            note=note,
        ),
        Row(
            "compare queries",
            float(len(statements)),
            "queries",
            None,
            note="SQL statements of one request, authentication included",
        ),
    ]
