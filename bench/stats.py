"""Figures, the result table and its JSON copy."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation), the usual reading of p50/p95 in load tests."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One line of the table.

    ``ratio`` is always "how far from the floor": figure/floor for times and memory,
    floor/figure for rates, so 1.0 is as good as the floor and larger is worse.
    """

    scenario: str
    figure: float | None
    unit: str
    floor: float | None = None
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = False
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.figure is not None and self.floor:
            if self.higher_is_better:
                self.ratio = self.floor / self.figure if self.figure else math.inf
            else:
                self.ratio = self.figure / self.floor


def _format_number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in {"queries", "dupes", "rows"}:
        return f"{value:.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    header = ["scenario", "figure", "floor", "ratio", "target", "met?"]
    lines = [header]
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            [
                row.scenario,
                f"{_format_number(row.figure, row.unit)} {row.unit}",
                f"{_format_number(row.floor, row.unit)} {row.unit}" if row.floor else "-",
                f"{row.ratio:.2f}x" if row.ratio is not None else "-",
                row.target or "-",
                met,
            ]
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    rendered = [
        "| "
        + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        + " |"
        for line in lines
    ]
    rendered.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(rendered)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": memory_gib, "python": platform.python_version()}


def results_path(*, mode: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return directory / f"bench-{mode}-{stamp}.json"


def write_results(
    *,
    rows: Sequence[Row],
    mode: str,
    sizes: dict[str, Any],
    notes: list[str],
    path: Path,
    complete: bool = True,
) -> Path:
    """Write the run's JSON; called after every scenario, so a run cut short keeps its rows."""
    document = {
        "mode": mode,
        "complete": complete,
        "finished_at": datetime.now(UTC).isoformat(),
        "commit": _git_commit(),
        "machine": machine(),
        "sizes": sizes,
        "rows": [asdict(row) for row in rows],
        "notes": notes,
        "table": render_table(rows),
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    (path.parent / f"latest-{mode}.json").write_text(path.read_text())
    return path
