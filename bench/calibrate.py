"""How fast this machine is right now: a fixed single-core Python workload, timed.

The bench's machine is shared, and its speed moves by up to 2x within an hour: every figure and
every floor moves with it. Ratios share their minute with their floors; the absolute targets
(claims/s, milliseconds) do not, so the run notes this figure beside the table, measured with
the runtime started and idle, before the scenarios (after them PostgreSQL's autovacuum and the
like still run). Lower is faster. The workload always does the same work, so two runs' figures
compare the machine's moments, not the code.
"""

from __future__ import annotations

import time

ITERATIONS = 400_000


def _workload() -> int:
    # Integer arithmetic, a dict and a list: the interpreter's everyday work, no I/O.
    table: dict[int, int] = {}
    total = 0
    for number in range(ITERATIONS):
        table[number & 1023] = number
        total += (number * 7) % 13 + len(table)
    return total + sum(list(table.values())[:10])


def python_speed_ms(*, rounds: int = 7) -> float:
    """The fastest of ``rounds`` timings of the workload, in milliseconds (the fastest is the
    one least disturbed by other processes)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        _workload()
        best = min(best, time.perf_counter() - started)
    return best * 1000
