"""A self-contained HTML report: tables and inline SVG plots, no external assets.

The plotter draws what a forecast plot needs and nothing more: the interval as
a polygon band, actual values and forecasts as polylines (broken at gaps),
anomalies as circles, and axes with a few tick labels. It knows nothing about
metrics; ``pipeline/evaluate.py`` decides what to show.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from connectors.records import iso_times

WIDTH, HEIGHT = 880, 250
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 26, 30  # margins around the plot area
Scale = Callable[[np.ndarray], np.ndarray]  # data -> pixels
COLORS = {"actual": "#222222", "forecast": "#d9480f", "band": "#4dabf7", "anomaly": "#e03131"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1.4em 0 .3em; }
p.meta, figcaption { color: #555; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e3e3e3; text-align: right; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.overall td { font-weight: 600; background: #fafaf0; border-bottom: 2px solid #ccc; }
figure { margin: .4em 0 1em; }
svg { background: #fff; border: 1px solid #e3e3e3; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
"""


@dataclass(frozen=True, slots=True)
class Panel:
    """One plot: a stream's steps under one model (all arrays ``(n,)``, NaN = unknown)."""

    title: str
    timestamp: np.ndarray  # epoch seconds
    value: np.ndarray
    forecast: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    is_anomaly: np.ndarray  # bool
    interval: float = 0.9


@dataclass(frozen=True, slots=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    emphasised: Sequence[bool] = ()  # per row: an overall row
    text_columns: int = 2  # the leading columns are left-aligned text


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round numbers (steps of 1, 2 or 5 times a power of ten) in ``[lo, hi]``.

    >>> nice_ticks(0.13, 0.97)
    [0.2, 0.4, 0.6, 0.8]
    >>> nice_ticks(1012.3, 1031.9)
    [1015.0, 1020.0, 1025.0, 1030.0]
    """
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(n, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    count = math.floor(hi / step + 1e-9) - first + 1
    digits = max(0, -math.floor(math.log10(step)))
    return [round((first + i) * step, digits) for i in range(count)]


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(abs(step)) + 1e-9)) if step else 0
    return f"{value:.{digits}f}"


def _time_label(seconds: float, span: float) -> str:
    text = str(iso_times(np.array([seconds]))[0])  # 2016-12-04T13:00:00Z
    return text[:10] if span > 3 * 86_400 else f"{text[5:10]} {text[11:16]}"


def _runs(ok: np.ndarray) -> list[slice]:
    """Maximal slices where ``ok`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _points(x: np.ndarray, y: np.ndarray) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x.tolist(), y.tolist(), strict=True))


def svg_panel(panel: Panel, ident: str) -> str:
    """The panel as an ``<svg>`` element; ``ident`` keeps its clip path's id unique."""
    t, value, forecast = panel.timestamp, panel.value, panel.forecast
    shown = np.concatenate([value[np.isfinite(value)], forecast[np.isfinite(forecast)]])
    if not len(t) or not len(shown):
        return f'<svg width="{WIDTH}" height="{HEIGHT}"><text x="20" y="40">no steps</text></svg>'
    y_lo, y_hi = float(shown.min()), float(shown.max())
    pad = 0.08 * (y_hi - y_lo) or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    t_lo, t_hi = float(t[0]), float(t[-1])
    t_hi = t_hi if t_hi > t_lo else t_lo + 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(v: np.ndarray) -> np.ndarray:
        return LEFT + (v - t_lo) / (t_hi - t_lo) * plot_w

    def sy(v: np.ndarray) -> np.ndarray:
        return TOP + (y_hi - v) / (y_hi - y_lo) * plot_h

    # a jump of more than 3 typical steps in time is a gap: lines do not bridge it
    dt = np.diff(t)
    typical = float(np.median(dt)) if len(dt) else 1.0
    cut = np.concatenate([[False], dt > 3 * typical])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(panel.title)}">',
        f'<defs><clipPath id="clip-{ident}"><rect x="{LEFT}" y="{TOP}" width="{plot_w}" '
        f'height="{plot_h}"/></clipPath></defs>',
        *_axes(y_lo, y_hi, t_lo, t_hi, sx, sy),
        f'<g clip-path="url(#clip-{ident})">',
    ]
    band = np.isfinite(panel.lower) & np.isfinite(panel.upper)
    for run in _pieces(band, cut):
        x = sx(t[run])
        edge = np.concatenate([panel.upper[run], panel.lower[run][::-1]])  # around the band
        outline = _points(np.concatenate([x, x[::-1]]), sy(edge))
        parts.append(
            f'<polygon points="{outline}" fill="{COLORS["band"]}" fill-opacity="0.28" '
            'stroke="none"/>'
        )
    for name, series, width in (("actual", value, 1.1), ("forecast", forecast, 1.1)):
        for run in _pieces(np.isfinite(series), cut):
            parts.append(
                f'<polyline points="{_points(sx(t[run]), sy(series[run]))}" fill="none" '
                f'stroke="{COLORS[name]}" stroke-width="{width}" stroke-linejoin="round"/>'
            )
    flagged = np.flatnonzero(panel.is_anomaly & np.isfinite(value))
    for x, y in zip(sx(t[flagged]).tolist(), sy(value[flagged]).tolist(), strict=True):
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="none" '
            f'stroke="{COLORS["anomaly"]}" stroke-width="1.6"/>'
        )
    parts += ["</g>", _legend(panel), "</svg>"]
    return "\n".join(parts)


def _pieces(ok: np.ndarray, cut: np.ndarray) -> list[slice]:
    """Runs where ``ok``, split where ``cut`` marks a gap before a step."""
    pieces = []
    for run in _runs(ok):
        gaps = (np.flatnonzero(cut[run]) + run.start).tolist()
        bounds = [run.start, *(i for i in gaps if i > run.start), run.stop]
        pieces += [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return pieces


def _axes(y_lo: float, y_hi: float, t_lo: float, t_hi: float, sx: Scale, sy: Scale) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
    ]
    ticks = nice_ticks(y_lo, y_hi)
    for tick in ticks:
        y = float(sy(np.array([tick]))[0])
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick_label(tick, ticks)}</text>"
        )
    for i in range(5):
        when = t_lo + (t_hi - t_lo) * i / 4
        x = float(sx(np.array([when]))[0])
        anchor = ("start", "middle", "middle", "middle", "end")[i]
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="{anchor}">'
            f"{_time_label(when, t_hi - t_lo)}</text>"
        )
    return parts


def _legend(panel: Panel) -> str:
    items = [
        ("actual", f'<line x1="0" y1="0" x2="16" y2="0" stroke="{COLORS["actual"]}"/>'),
        ("forecast", f'<line x1="0" y1="0" x2="16" y2="0" stroke="{COLORS["forecast"]}"/>'),
        (
            f"{100 * panel.interval:.6g}% interval",
            f'<rect x="0" y="-5" width="16" height="10" fill="{COLORS["band"]}" '
            'fill-opacity="0.28"/>',
        ),
        ("anomaly", f'<circle cx="8" cy="0" r="4" fill="none" stroke="{COLORS["anomaly"]}"/>'),
    ]
    parts = [f'<text x="{LEFT}" y="16" font-weight="600">{html.escape(panel.title)}</text>']
    widths = [21 + 7 * len(label) + 16 for label, _ in items]  # ~7 px per character
    x = WIDTH - RIGHT - sum(widths)
    for (label, mark), width in zip(items, widths, strict=True):
        parts.append(
            f'<g transform="translate({x},12)">{mark}<text x="21" y="4">{label}</text></g>'
        )
        x += width
    return "\n".join(parts)


def html_table(table: Table) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        kind = ' class="text"' if i < table.text_columns else ""
        return f"<{tag}{kind}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(table.header))
    lines = [f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>"]
    emphasised = list(table.emphasised) or [False] * len(table.rows)
    for row, strong in zip(table.rows, emphasised, strict=True):
        kind = ' class="overall"' if strong else ""
        lines.append(f"<tr{kind}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    lines.append("</tbody>\n</table>")
    return "\n".join(lines)


def html_page(
    title: str,
    notes: Sequence[str],
    table: Table,
    figures: Sequence[tuple[str, Sequence[Panel]]],
    figure_note: str = "",
) -> str:
    """The whole report: a title, notes, the table, then a heading and plots per stream."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="meta">{html.escape(note)}</p>' for note in notes),
        "<h2>Metrics</h2>",
        html_table(table),
    ]
    if figures:
        parts.append("<h2>Forecasts</h2>")
        if figure_note:
            parts.append(f'<p class="meta">{html.escape(figure_note)}</p>')
    for i, (heading, panels) in enumerate(figures):
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        for j, panel in enumerate(panels):
            parts.append(f"<figure>{svg_panel(panel, f'{i}-{j}')}</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
