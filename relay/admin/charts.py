"""Server-rendered SVG charts: no JavaScript, no build step, readable on a phone.

The SVG scales with its `viewBox`; every number drawn is computed here and every
label passes `escape`, so a chart cannot carry markup from the data.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from relay.store.timeline import Series

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 480, 170, 34, 20, 10

# Status colours, shared with the pages' badges (dashboard.css).
COLOURS = {
    "delivered": "#2e7d32",
    "dry_run": "#6d8f3f",
    "queued": "#1565c0",
    "ignored": "#9e9e9e",
    "failed": "#e65100",
    "rejected": "#8d6e63",
    "dead": "#c62828",
}


def _frame(series: Series, top: float, label: str) -> list[str]:
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="axis">{_num(top)}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end" class="axis">0</text>',
    ]
    n = len(series.buckets)
    for i, anchor in ((0, "start"), (n // 2, "middle"), (n - 1, "end")):
        at = series.start + series.step * i
        x = {"start": LEFT, "middle": LEFT + (WIDTH - LEFT) * (i + 0.5) / n, "end": WIDTH}[anchor]
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}" class="axis">'
            f"{at:%H:%M}</text>"
        )
    return parts


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def events_chart(series: Series, label: str) -> Markup:
    """Stacked bars: events per bucket, coloured by outcome."""
    totals = [sum(b.values()) for b in series.buckets]
    top = max(max(totals, default=0), 1)
    parts = _frame(series, top, label)
    plot_h = HEIGHT - BOTTOM - TOP
    n = len(series.buckets)
    width = (WIDTH - LEFT) / n
    for i, bucket in enumerate(series.buckets):
        y = HEIGHT - BOTTOM
        for status in COLOURS:
            count = bucket.get(status, 0)
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            parts.append(
                f'<rect x="{LEFT + i * width + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(width - 1, 0.5):.1f}" height="{h:.1f}" fill="{COLOURS[status]}">'
                f"<title>{escape(status)}: {count}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text


def rate_chart(series: Series, limit: float, label: str) -> Markup:
    """Average calls/s as bars, the busiest second as dots, the App's limit as a line."""
    peaks = [b["peak"] for b in series.buckets]
    top = math.ceil(max(max(peaks, default=0), limit) * 1.1 / 5) * 5
    parts = _frame(series, top, label)
    plot_h = HEIGHT - BOTTOM - TOP
    n = len(series.buckets)
    width = (WIDTH - LEFT) / n
    for i, bucket in enumerate(series.buckets):
        x = LEFT + i * width
        if bucket["average"]:
            h = plot_h * bucket["average"] / top
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" '
                f'width="{max(width - 1, 0.5):.1f}" height="{h:.1f}" fill="#1565c0">'
                f"<title>average {bucket['average']:.2f}/s</title></rect>"
            )
        if bucket["peak"]:
            y = HEIGHT - BOTTOM - plot_h * bucket["peak"] / top
            parts.append(
                f'<circle cx="{x + width / 2:.1f}" cy="{y:.1f}" r="2" fill="#e65100">'
                f"<title>busiest second {bucket['peak']:.0f} calls</title></circle>"
            )
    y = HEIGHT - BOTTOM - plot_h * limit / top
    parts.append(
        f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="#c62828" '
        f'stroke-dasharray="6 4"/><text x="{WIDTH - 2}" y="{y - 3:.1f}" text-anchor="end" '
        f'class="axis">limit {_num(limit)}/s</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text
