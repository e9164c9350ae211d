"""CPU seconds that each part of the runtime spends during a scenario, read from ``/proc``.

The replay scenario reports them beside its wall time, so that a reader sees whether the figure
is bound by the model server's delay or by the cores (and by which process). Linux only: where
``/proc`` is missing, :func:`cpu_seconds` returns an empty mapping and the note leaves it out.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.runtime import Runtime

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Runtime process names (worker2, web3, ...) grouped under one label each.
_LABELS = {
    "worker": "worker",
    "web": "web",
    "ws": "websockets",
    "openai": "model server",
    "local-model": "local model",
}


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command name) of every process we may read."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # After the name: state, ppid, ... utime and stime are fields 14 and 15 of the line,
        # cutime and cstime (children that exited and were waited for) 16 and 17: a
        # short-lived process, such as a PostgreSQL backend of one connection, is counted in
        # its parent once it is gone.
        table[int(entry.name)] = (
            int(fields[1]),
            sum(int(field) for field in fields[11:15]) / _TICKS,
            name,
        )
    return table


def _label(process_name: str) -> str:
    return _LABELS.get(process_name.rstrip("0123456789"), process_name)


def cpu_seconds(runtime: Runtime) -> dict[str, float]:
    """CPU seconds so far of the runtime's processes and their children by part, of PostgreSQL
    and Redis (every process of those names), and of this bench process."""
    table = _processes()
    if not table:
        return {}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}

    def add(label: str, pid: int) -> None:
        if pid in table:
            totals[label] = totals.get(label, 0.0) + table[pid][1]
        for child in children.get(pid, []):
            add(label, child)

    for name, process in runtime.processes.items():
        add(_label(name), process.pid)
    for _parent, seconds, name in table.values():
        if name == "postgres":
            totals["PostgreSQL"] = totals.get("PostgreSQL", 0.0) + seconds
        elif name.startswith("redis-server"):
            totals["Redis"] = totals.get("Redis", 0.0) + seconds
    totals["bench client"] = table.get(os.getpid(), (0, 0.0, ""))[1]
    return totals


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each part spent between two readings, largest first."""
    used = {label: after[label] - before.get(label, 0.0) for label in after}
    return dict(sorted(used.items(), key=lambda item: -item[1]))
