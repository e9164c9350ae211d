"""The export probe reports its own memory, not that of the bench process that started it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARENT_MB = 300


def test_a_probe_started_by_a_large_process_reports_its_own_peak() -> None:
    # Linux carries ru_maxrss over exec from the spawning process; the probe must not.
    ballast = bytearray(PARENT_MB * 1024 * 1024)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touch every page so it is resident
    script = "from bench.probe import resident_mb; print(resident_mb('VmHWM'), resident_mb())"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    del ballast
    peak, now = map(float, result.stdout.split())
    assert now <= peak < PARENT_MB / 2
