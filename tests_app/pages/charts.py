"""Server-side SVG charts: no script and no network needed to read them.

Each function returns markup that is safe to embed (every label is escaped here) and carries a
``<title>`` and ``role="img"`` so screen readers get the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# One colour per run status; the legend repeats the numbers, so colour is never the only cue.
STATUS_COLOURS = {
    "pending": "#9aa5b1",
    "claimed": "#f0b429",
    "running": "#2680c2",
    "completed": "#3ebd93",
    "failed": "#d64545",
    "stopped": "#616e7c",
}
SERIES_COLOURS = ["#2680c2", "#d64545", "#3ebd93", "#9446ed", "#f0b429", "#616e7c", "#e668a7"]


def status_bar(by_status: Mapping[str, int], *, width: int = 640, height: int = 28) -> SafeString:
    """A stacked horizontal bar of run counts by status (the legend is HTML, see below)."""
    total = sum(by_status.values())
    label = ", ".join(f"{name} {count}" for name, count in by_status.items())
    parts = [
        f'<svg class="chart chart-status" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Runs by status: {escape(label)}" preserveAspectRatio="none" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>Runs by status: {escape(label)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#e4e7eb" rx="4"/>',
    ]
    x = 0.0
    for name, count in by_status.items():
        if total and count:
            segment = width * count / total
            parts.append(
                f'<rect class="segment-{escape(name)}" x="{x:.1f}" y="0" width="{segment:.1f}" '
                f'height="{height}" fill="{STATUS_COLOURS.get(name, "#9aa5b1")}">'
                f"<title>{escape(name)}: {count}</title></rect>"
            )
            x += segment
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  # every interpolated label is escaped above


def status_legend(by_status: Mapping[str, int]) -> list[tuple[str, int, str]]:
    """(status, count, colour) for the HTML legend under :func:`status_bar`; text stays readable
    on a narrow screen, where an SVG legend would shrink with the chart."""
    return [(name, count, STATUS_COLOURS.get(name, "#9aa5b1")) for name, count in by_status.items()]


@dataclass(frozen=True)
class Point:
    day: date
    value: float


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    y_max: float = 1.0,
    width: int = 640,
    height: int = 220,
) -> SafeString:
    """Lines over time, one per series (e.g. one per eval), values 0..y_max, days on the x axis."""
    left, right, top, bottom = 40, 10, 10, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    days = sorted({point.day for points in series.values() for point in points})
    parts = [
        f'<svg class="chart chart-line" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = y_max * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{value:.2f}</text>"
        )
    if not days:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="13">'
            "No graded runs yet</text></svg>"
        )
        return mark_safe("".join(parts))  # noqa: S308  # static text only

    def x_of(day: date) -> float:
        if len(days) == 1:
            return left + plot_w / 2
        return left + plot_w * days.index(day) / (len(days) - 1)

    for label_day in (days[0], days[-1]) if len(days) > 1 else (days[0],):
        anchor = "start" if label_day == days[0] and len(days) > 1 else "end"
        if len(days) == 1:
            anchor = "middle"
        parts.append(
            f'<text x="{x_of(label_day):.1f}" y="{height - 8}" font-size="10" '
            f'text-anchor="{anchor}">{label_day.isoformat()}</text>'
        )
    for index, (name, points) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        coordinates = [
            (x_of(point.day), top + plot_h - plot_h * min(point.value, y_max) / y_max)
            for point in sorted(points, key=lambda p: p.day)
        ]
        if len(coordinates) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), point in zip(coordinates, sorted(points, key=lambda p: p.day), strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(name)} {point.day.isoformat()}: {point.value:.2f}</title></circle>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  # every interpolated label is escaped above


def legend_colours(names: Sequence[str]) -> list[tuple[str, str]]:
    """The colour each series got in :func:`line_chart`, for an HTML legend."""
    return [(name, SERIES_COLOURS[i % len(SERIES_COLOURS)]) for i, name in enumerate(names)]


def histogram(
    series: Mapping[str, Sequence[int]],
    edges: Sequence[float],
    *,
    title: str,
    x_label: str,
    width: int = 640,
    height: int = 200,
    marker: float | None = None,
    first_colour: int = 0,
) -> SafeString:
    """Counts per bin (``edges`` has one more value than each series), one bar per series in
    each bin, side by side; ``marker`` draws a vertical line at that x value (e.g. zero);
    series take SERIES_COLOURS from ``first_colour`` on (to match another chart's legend)."""
    left, right, top, bottom = 40, 10, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    bins = len(edges) - 1
    # Whole-number gridlines: four steps of a whole number that reach the highest count.
    step = max(
        1, math.ceil(max([count for counts in series.values() for count in counts] + [1]) / 4)
    )
    highest = step * 4
    parts = [
        f'<svg class="chart chart-histogram" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{step * tick}</text>"
        )
    bin_w = plot_w / bins
    bar_w = bin_w * 0.8 / max(1, len(series))
    for index, (name, counts) in enumerate(series.items()):
        colour = SERIES_COLOURS[(first_colour + index) % len(SERIES_COLOURS)]
        for position, count in enumerate(counts):
            if not count:
                continue
            bar_h = plot_h * count / highest
            x = left + position * bin_w + bin_w * 0.1 + index * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w:.1f}" '
                f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(name)}, '
                f"{edges[position]:.2f} to {edges[position + 1]:.2f}: {count}</title></rect>"
            )
    if marker is not None and edges[0] <= marker <= edges[-1]:
        x = left + plot_w * (marker - edges[0]) / (edges[-1] - edges[0])
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#323f4b" '
            'stroke-dasharray="4 3"/>'
        )
    for position in (0, bins // 2, bins):
        x = left + position * bin_w
        parts.append(
            f'<text x="{x:.1f}" y="{height - 18}" font-size="10" text-anchor="middle">'
            f"{edges[position]:g}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" '
        f'text-anchor="middle">{escape(x_label)}</text></svg>'
    )
    return mark_safe("".join(parts))  # noqa: S308  # every interpolated label is escaped above
