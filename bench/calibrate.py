"""How fast this machine is right now: a fixed single-core Python workload, and a message
between two processes, timed.

The bench's machine is shared, and its speed moves by up to 2x within an hour: every figure and
every floor moves with it. Ratios share their minute with their floors; the absolute targets
(claims/s, milliseconds) do not, so the run notes this figure beside the table, measured with
the runtime started and idle, before the scenarios (after them PostgreSQL's autovacuum and the
like still run). Lower is faster. The workload always does the same work, so two runs' figures
compare the machine's moments, not the code.

The second figure is the one that moves most here: every API call, statement, Redis command
and model call is a round trip between two processes, and on this virtual machine one costs
tens of microseconds (a few on bare metal), more in its slow spells, while the interpreter's
own speed hardly changes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
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


_ECHO = """
import socket, sys
peer = socket.socket(fileno=int(sys.argv[1]))
while data := peer.recv(1):
    peer.send(data)
"""


def round_trip_us(*, messages: int = 3000, rounds: int = 3) -> float:
    """The fastest of ``rounds`` averages of a one-byte message to another process and back over
    a socket pair, in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        ours, theirs = socket.socketpair()
        echo = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        try:
            ours.sendall(b"x")
            ours.recv(1)  # the echo process is up
            started = time.perf_counter()
            for _ in range(messages):
                ours.send(b"x")
                ours.recv(1)
            best = min(best, (time.perf_counter() - started) / messages)
        finally:
            ours.close()
            echo.wait(timeout=10)
    return best * 1_000_000
