"""The Overview's charts, as inline SVG rendered on the server (no JS library).

Pure: takes counts, returns markup. Every label is escaped (reasons and channels come
from records on a topic anyone with produce rights can write).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from processors.topics import CHANNELS

#: one colour per channel (colour-blind safe, Okabe-Ito)
CHANNEL_COLOURS: dict[str, str] = {
    "email": "#0072B2",
    "sms": "#E69F00",
    "push": "#009E73",
    "browser": "#CC79A7",
}
OTHER_COLOUR = "#999999"
WIDTH, HEIGHT = 760, 240
LEFT, BOTTOM, TOP = 44, 28, 12


def _nice_top(value: int) -> int:
    """The y-axis top: the smallest of 1, 2, 5 x 10^k at or above ``value`` (at least 1)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def sends_per_hour(hours: Sequence[tuple[int, Counter[tuple[str, str]]]]) -> Markup:
    """Stacked bars: sends per channel for each hour (``hours``: (hour start ms, counts))."""
    totals = [sum(n for (kind, _), n in counts.items() if kind == "send") for _, counts in hours]
    top = _nice_top(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(hours), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="notifications sent per hour, by channel">'
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{top * frac:g}</text>'
        )
    for i, (start, counts) in enumerate(hours):
        x = LEFT + i * slot + slot * 0.15
        y = TOP + plot_h
        for channel in CHANNELS:
            n = counts.get(("send", channel), 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{CHANNEL_COLOURS[channel]}"><title>{escape(channel)}: {n}</title></rect>'
            )
        if i % max(1, len(hours) // 8) == 0 or i == len(hours) - 1:
            label = datetime.fromtimestamp(start / 1000, UTC).strftime("%H:00")
            parts.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{label}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def skips_by_reason(skips: Mapping[str, int]) -> Markup:
    """Horizontal bars: skips per reason, most frequent first."""
    items = sorted(skips.items(), key=lambda kv: (-kv[1], kv[0]))
    row_h, label_w = 24, 200
    height = max(1, len(items)) * row_h + 8
    top = max((n for _, n in items), default=1)
    bar_w = WIDTH - label_w - 60
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        'aria-label="skipped notifications by reason">'
    ]
    if not items:
        parts.append('<text x="8" y="20">no skips in this window</text>')
    for i, (reason, n) in enumerate(items):
        y = 4 + i * row_h
        w = bar_w * n / top
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(reason)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{OTHER_COLOUR}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{n}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
