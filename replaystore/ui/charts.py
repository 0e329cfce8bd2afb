"""Charts as inline SVG written on the server: no JavaScript, no CDN, nothing to fetch offline.

Three shapes cover every page: bars (optionally stacked, with a legend), a histogram of values,
and step lines over steps or versions. Every mark carries a `<title>`, so hovering shows its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
from markupsafe import Markup
from numpy.typing import ArrayLike

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")


def _number(value: float) -> str:
    """Axis text: short, exact for integers, three significant digits otherwise."""
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:.3g}"


def _frame(body: list[str], y_max: float, y_label: str, x_label: str, legend: Sequence[str] = (), y_min: float = 0.0) -> Markup:
    """Axes, gridlines at five levels, labels and a legend around the marks in `body`."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + (18 if legend else 0)}" role="img" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        level = y_min + (y_max - y_min) * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_number(level)}</text>')
    parts.extend(body)
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 14 {TOP + plot_h / 2:.1f})" text-anchor="middle" class="label">{escape(y_label)}</text>'
    )
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" class="label">{escape(x_label)}</text>')
    x = LEFT
    for i, name in enumerate(legend):
        parts.append(f'<rect x="{x}" y="{HEIGHT + 4}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT + 13}" class="tick">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, y_label: str, x_label: str, stacked: bool = True) -> Markup:
    """One group of bars per label; the series stack (or stand side by side) within a group."""
    names = list(series)
    values = np.array([[float(v) for v in series[n]] for n in names]).reshape(len(names), len(labels))
    top = float(values.sum(0).max() if stacked else values.max()) if values.size else 0.0
    top = top or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(labels), 1)
    width = slot * 0.8 / (1 if stacked else max(len(names), 1))
    body: list[str] = []
    every = max(1, -(-len(labels) // 12))  # at most 12 x labels
    for j, label in enumerate(labels):
        base = 0.0
        for i, name in enumerate(names):
            v = values[i, j]
            h = plot_h * v / top
            x = LEFT + slot * j + slot * 0.1 + (0 if stacked else width * i)
            y = TOP + plot_h - plot_h * base / top - h
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{max(width, 1):.1f}" height="{h:.1f}" fill="{PALETTE[i % len(PALETTE)]}">'
                f"<title>{escape(str(label))} · {escape(name)}: {_number(v)}</title></rect>"
            )
            if stacked:
                base += v
        if j % every == 0:
            body.append(f'<text x="{LEFT + slot * (j + 0.5):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" class="tick">{escape(str(label))}</text>')
    return _frame(body, top, y_label, x_label, names if len(names) > 1 else ())


def histogram(
    values: Sequence[float] | np.ndarray, *, x_label: str, bins: int = 30, y_label: str = "rows", weights: Sequence[int] | np.ndarray | None = None
) -> Markup:
    """Counts of `values` in equal-width bins (integers get one bin per value when there are few);
    `weights` counts each value that many times (value counts aggregated elsewhere)."""
    data = np.asarray(values, dtype=np.float64)
    weight = np.ones_like(data) if weights is None else np.asarray(weights, dtype=np.float64)
    finite = np.isfinite(data)
    data, weight = data[finite], weight[finite]
    if data.size == 0:
        return Markup('<p class="empty">no values</p>')
    lo, hi = float(data.min()), float(data.max())
    if np.all(data == np.round(data)) and hi - lo < bins:
        edges = np.arange(lo - 0.5, hi + 1.5)
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    counts, edges = np.histogram(data, edges, weights=weight)
    labels = [_number((a + b) / 2) for a, b in zip(edges, edges[1:])]
    return bars(labels, {x_label: counts.tolist()}, y_label=y_label, x_label=x_label)


def lines(x: ArrayLike, series: Mapping[str, ArrayLike], *, y_label: str, x_label: str, step: bool = True, y_max: float | None = None) -> Markup:
    """One polyline per series over shared x values (steps hold their value until the next x)."""
    xs = np.asarray(x, dtype=np.float64)
    if xs.size == 0:
        return Markup('<p class="empty">no values</p>')
    top = y_max if y_max is not None else max(float(np.nanmax(np.asarray(v, dtype=np.float64))) for v in series.values()) or 1.0
    low = min(0.0, min(float(np.nanmin(np.asarray(v, dtype=np.float64))) for v in series.values()))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = float(xs.max() - xs.min()) or 1.0
    px = LEFT + (xs - xs.min()) / span * plot_w
    body: list[str] = []
    for i, (name, ys) in enumerate(series.items()):
        py = TOP + plot_h - (np.asarray(ys, dtype=np.float64) - low) / ((top - low) or 1.0) * plot_h
        points = []
        for k in range(len(px)):
            if step and k:
                points.append(f"{px[k]:.1f},{py[k - 1]:.1f}")
            points.append(f"{px[k]:.1f},{py[k]:.1f}")
        dash = ' stroke-dasharray="6 4"' if i else ""  # later series dashed: one that overlays the first stays visible
        body.append(
            f'<polyline class="mark" fill="none" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="2"{dash} points="{" ".join(points)}"><title>{escape(name)}</title></polyline>'
        )
    whole = bool(np.all(xs == np.round(xs)))
    for value in np.linspace(xs.min(), xs.max(), min(len(xs), 6)):
        shown = round(value) if whole else round(value, 3)
        body.append(
            f'<text x="{LEFT + (shown - xs.min()) / span * plot_w:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" class="tick">{_number(shown)}</text>'
        )
    return _frame(body, top, y_label, x_label, list(series) if len(series) > 1 else (), y_min=low)
