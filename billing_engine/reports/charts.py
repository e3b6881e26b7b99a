"""A tiny server-side SVG chart renderer: line charts and (stacked) bar charts.

No JavaScript, no plotting library: each function returns one self-contained ``<svg>``
string (text escaped) to inline in HTML. Values are integers (counts or minor units); the
caller passes ``fmt`` to turn an axis value into text (e.g. ``money.format_minor``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
           "#475569", "#ea580c")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]
    color: str | None = None


def nice_ticks(lo: int, hi: int, count: int = 5) -> list[int]:
    """Round tick values covering [lo, hi] (1-2-5 steps), always including 0."""
    lo, hi = min(lo, 0), max(hi, 0)
    if hi == lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(int(step), 1)
    start = (lo // step) * step
    ticks = []
    v = start
    while v < hi + step:
        ticks.append(v)
        if v >= hi:
            break
        v += step
    return ticks


WIDE, NARROW = 720, 360  # viewBox widths: desktop, and phones (the page shows one or the other)
PLOT_H = 196
LEFT, RIGHT, BOTTOM = 78, 16, 30


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    """A responsive chart: only a viewBox (no fixed size), so it scales to its container."""
    t = escape(title)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{t}" '
            f'font-family="system-ui, sans-serif" font-size="11">'
            f"<title>{t}</title>" + "".join(body) + "</svg>")


def _layout(series: Sequence[Series], width: int, show_legend: bool) -> tuple[list[str], int]:
    """The title, then the legend in rows of its own between the title and the plot (never
    over either: entries wrap to a new row when the width runs out). Returns the markup and
    the y where the plot starts."""
    parts: list[str] = []
    if not show_legend:
        return parts, 30
    x, y = LEFT, 38
    items = []
    for i, s in enumerate(series):
        w = 24 + 7 * len(s.name)
        if x + w > width - RIGHT and x > LEFT:
            x, y = LEFT, y + 16
        color = s.color or PALETTE[i % len(PALETTE)]
        items.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{x + 14}" y="{y}" fill="#111827">{escape(s.name)}</text>')
        x += w
    parts.append('<g class="legend">' + "".join(items) + "</g>")
    return parts, y + 14


def _title(title: str) -> str:
    return (f'<text class="chart-title" x="{LEFT}" y="18" font-size="13" font-weight="600" '
            f'fill="#111827">{escape(title)}</text>')


def _axes(ticks: list[int], labels: Sequence[str], *, left: int, top: int, plot_w: int, plot_h: int,
          fmt: Callable[[int], str]) -> tuple[list[str], Callable[[int], float]]:
    lo, hi = ticks[0], ticks[-1]

    def y(v: int) -> float:
        return top + plot_h - (v - lo) / (hi - lo) * plot_h

    parts = []
    for t in ticks:
        yy = y(t)
        parts.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + plot_w}" y2="{yy:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#374151">{escape(fmt(t))}</text>')
    parts.append(f'<line x1="{left}" y1="{y(0):.1f}" x2="{left + plot_w}" y2="{y(0):.1f}" stroke="#6b7280"/>')
    n = max(len(labels), 1)
    every = max(1, math.ceil(n / max(plot_w // 50, 1)))
    for i, lab in enumerate(labels):
        if i % every:
            continue
        x = left + (i + 0.5) * plot_w / n
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#374151">'
                     f"{escape(lab)}</text>")
    return parts, y


def line_chart(labels: Sequence[str], series: Sequence[Series], *, title: str, width: int = WIDE,
               fmt: Callable[[int], str] = str, gaps: Sequence[Sequence[bool]] = ()) -> str:
    """``gaps[i][j]`` true: series i has no value at label j (e.g. a rate of nothing); the point
    is left out."""
    left = LEFT
    legend, top = _layout(series, width, len(series) > 1)
    plot_w, plot_h = width - LEFT - RIGHT, PLOT_H
    height = top + plot_h + BOTTOM
    def shown(i: int, j: int) -> bool:
        return not (i < len(gaps) and j < len(gaps[i]) and gaps[i][j])

    values = [v for i, s in enumerate(series) for j, v in enumerate(s.values) if shown(i, j)] or [0]
    ticks = nice_ticks(min(values), max(values))
    body = [_title(title), *legend,
            f'<rect class="plot-area" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none"/>']
    axes, y = _axes(ticks, labels, left=left, top=top, plot_w=plot_w, plot_h=plot_h, fmt=fmt)
    body += axes
    n = max(len(labels), 1)
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = [(j, left + (j + 0.5) * plot_w / n, y(v)) for j, v in enumerate(s.values) if shown(i, j)]
        if pts:
            path = " ".join(f"{x:.1f},{yy:.1f}" for _, x, yy in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
            body += [f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3" fill="{color}"><title>{escape(labels[j])}: '
                     f"{escape(fmt(s.values[j]))}</title></circle>" for j, x, yy in pts]
    return _frame(width, height, title, body)


def bar_chart(labels: Sequence[str], series: Sequence[Series], *, title: str, width: int = WIDE,
              fmt: Callable[[int], str] = str, stacked: bool = True) -> str:
    left = LEFT
    legend, top = _layout(series, width, True)
    plot_w, plot_h = width - LEFT - RIGHT, PLOT_H
    height = top + plot_h + BOTTOM
    n = max(len(labels), 1)
    if stacked:
        highs = [sum(max(s.values[j], 0) for s in series) for j in range(len(labels))] or [0]
        lows = [sum(min(s.values[j], 0) for s in series) for j in range(len(labels))] or [0]
    else:
        highs = [max([s.values[j] for s in series] + [0]) for j in range(len(labels))] or [0]
        lows = [min([s.values[j] for s in series] + [0]) for j in range(len(labels))] or [0]
    ticks = nice_ticks(min(lows), max(highs))
    body = [_title(title), *legend,
            f'<rect class="plot-area" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none"/>']
    axes, y = _axes(ticks, labels, left=left, top=top, plot_w=plot_w, plot_h=plot_h, fmt=fmt)
    body += axes
    slot = plot_w / n
    bar_w = slot * 0.7 if stacked else slot * 0.8 / max(len(series), 1)
    for j, lab in enumerate(labels):
        up, down = 0, 0
        for i, s in enumerate(series):
            v = s.values[j]
            if v == 0:
                continue
            color = s.color or PALETTE[i % len(PALETTE)]
            if stacked:
                base = up if v > 0 else down
                y0, y1 = y(base), y(base + v)
                if v > 0:
                    up += v
                else:
                    down += v
                x = left + j * slot + (slot - bar_w) / 2
            else:
                y0, y1 = y(0), y(v)
                x = left + j * slot + slot * 0.1 + i * bar_w
            top_y, h = min(y0, y1), abs(y1 - y0)
            body.append(f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                        f'fill="{color}"><title>{escape(lab)} {escape(s.name)}: {escape(fmt(v))}</title></rect>')
    return _frame(width, height, title, body)
