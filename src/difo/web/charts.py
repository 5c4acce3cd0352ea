"""Inline SVG charts drawn here, in Python: no chart library, no request to anywhere.

Every label is escaped; the result is Markup a template can place as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 200
PAD_LEFT = 48
PAD_BOTTOM = 22
PAD_TOP = 10


def line_chart(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
               *, title: str, unit: str = "") -> Markup:
    """A line per series (name, css class, values), x labels under it, y axis from 0."""
    count = max(len(labels), 1)
    top = max((max(values, default=0.0) for _, _, values in series), default=0.0)
    top = _nice(top)
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP

    def x(index: int) -> float:
        return PAD_LEFT + (plot_w * index / (count - 1) if count > 1 else plot_w / 2)

    def y(value: float) -> float:
        return PAD_TOP + plot_h - (plot_h * value / top if top else 0.0)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for step in range(6):  # top is 1, 2 or 5 x 10^n: fifths are round numbers
        value = top * step / 5
        level = y(value)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - 8}" '
                     f'y1="{level:.1f}" y2="{level:.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_LEFT - 4}" y="{level + 4:.1f}" '
                     f'text-anchor="end">{escape(_short(value))}{escape(unit)}</text>')
    every = max(count // 8, 1)
    shown = set(range(0, count, every))
    if count - 1 not in shown:  # the newest label always, without overlapping its neighbour
        shown.discard(max(shown))
        shown.add(count - 1)
    for index, label in enumerate(labels):
        if index in shown:
            anchor = "end" if index == count - 1 and count > 1 else "middle"
            parts.append(f'<text class="axis" x="{x(index):.1f}" y="{HEIGHT - 6}" '
                         f'text-anchor="{anchor}">{escape(label)}</text>')
    for name, css, values in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="line {escape(css)}" points="{points}">'
                     f"<title>{escape(name)}</title></polyline>")
        for index, value in enumerate(values if count <= 40 else []):
            parts.append(f'<circle class="dot {escape(css)}" cx="{x(index):.1f}" '
                         f'cy="{y(value):.1f}" r="2.5"><title>{escape(labels[index])} '
                         f"{escape(name)}: {escape(_short(value))}{escape(unit)}</title>"
                         "</circle>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice(value: float) -> float:
    """The next round number at or above `value` (1, 2, 5 x 10^n), at least 1."""
    if value <= 1:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"
