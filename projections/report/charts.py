"""Inline SVG charts for the HTML report: pure functions from numbers to escaped SVG text.

No JavaScript, no fonts, no external references; colours from the Okabe-Ito palette
(distinguishable with every common colour-vision deficiency, >= 3:1 against white)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

#: Okabe-Ito colours with at least 3:1 contrast on white (WCAG 1.4.11 for graphics).
BLUE = "#0072B2"
VERMILLION = "#D55E00"
GREEN = "#007A5A"  # Okabe-Ito bluish green, darkened a little to reach 4.5:1
PURPLE = "#A64D86"
INK = "#1B1F24"
MUTED = "#4A5260"
GRID = "#D0D5DD"

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def _esc(text: str) -> str:
    return escape(text, quote=True)


_NARROW = set("ijlI.,:;'|!()[]{} ")
_SLIGHT = set("frt-/")
_WIDE = set("mwMW%@<>=+~")


def text_width(text: str, size: float = 12.0, bold: bool = False) -> float:
    """A generous estimate of rendered width (em widths of common sans-serif fonts, which
    vary: DejaVu Sans is among the widest, so estimate for it)."""
    em = 0.0
    for c in text:
        if c in _NARROW:
            em += 0.34
        elif c in _SLIGHT:
            em += 0.44
        elif c in _WIDE:
            em += 0.92
        elif c.isupper():
            em += 0.72
        else:
            em += 0.63
    return em * size * (1.08 if bold else 1.0)


def fit_label(text: str, max_width: float, size: float = 12.0, bold: bool = False) -> str:
    """`text`, cut with an ellipsis if it would be wider than `max_width`."""
    if text_width(text, size, bold) <= max_width:
        return text
    while text and text_width(text + "…", size, bold) > max_width:
        text = text[:-1]
    return text + "…"


# ---------------------------------------------------------------- number formats


def fmt_int(value: float | None) -> str:
    return "–" if value is None else f"{round(value):,}"


def fmt_number(value: float | None, digits: int = 1) -> str:
    """Thousands separators; fractional values keep `digits` decimals, whole ones none."""
    if value is None:
        return "–"
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def fmt_money(value: float | None) -> str:
    """9,876 · 45 k · 1.23 M: numbers a VP reads at a glance."""
    if value is None:
        return "–"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:,.2f} M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:,.0f} k"
    return f"{value:,.0f}"


def fmt_percent(share: float | None, digits: int = 1) -> str:
    return "–" if share is None else f"{share * 100:.{digits}f} %"


def fmt_duration(seconds: float | None) -> str:
    """45 s, 12 min, 3.2 h, 4.1 d."""
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min" if s >= 600 else f"{s / 60:.1f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d" if s < 100 * 86400 else f"{s / 86400:,.0f} d"


# ---------------------------------------------------------------- axes


def nice_ticks(maximum: float, target: int = 5) -> list[float]:
    """0, step, 2·step, ... covering `maximum`, with step 1, 2, 2.5 or 5 × 10^k."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    n = math.ceil(maximum / step - 1e-9)
    return [i * step for i in range(n + 1)]


_UNITS = ((86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def duration_ticks(maximum: float, target: int = 5) -> tuple[list[float], Callable[[float], str]]:
    """Ticks at round numbers of the largest fitting unit (days, hours, minutes, seconds)."""
    unit, name = next(((u, n) for u, n in _UNITS if maximum / u >= 2), (1.0, "s"))
    ticks = nice_ticks(maximum / unit, target)

    def label(value: float) -> str:
        v = value / unit
        return f"{v:g} {name}"

    return [t * unit for t in ticks], label


# ---------------------------------------------------------------- charts


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: Sequence[float | None]


def _svg_open(width: float, height: float, title: str, desc: str) -> tuple[str, str]:
    # no xmlns: the charts live inline in HTML5, whose parser puts <svg> in the SVG namespace
    # (and the page then holds no http:// reference at all)
    n = hashlib.sha256(f"{title}\n{desc}".encode()).hexdigest()[:10]  # stable: same data, same page
    head = (
        f'<svg class="chart" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-labelledby="chart{n}t chart{n}d" '
        f'font-family="{_esc(FONT)}" font-size="12" fill="{INK}">'
        f'<title id="chart{n}t">{_esc(title)}</title><desc id="chart{n}d">{_esc(desc)}</desc>'
    )
    return head, "</svg>"


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: float = 12, weight: str = "normal",
          fill: str = INK) -> str:
    bold = f' font-weight="{weight}"' if weight != "normal" else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size:g}"{bold} '
            f'fill="{fill}">{_esc(text)}</text>')


def bar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_label: Callable[[float | None], str],
    axis_label: str,
    ticks: Callable[[float], tuple[list[float], Callable[[float], str]]] | None = None,
    width: float = 560,
    annotations: Sequence[str] | None = None,
) -> str:
    """Horizontal bars, one group per category and one bar per series; a value label at the
    end of every bar, an x axis with round ticks and a legend when there are several series.
    `annotations` adds a muted note under each category name (e.g. "n = 412")."""
    size = 12.0
    bar_h = 18.0 if len(series) > 1 else 22.0
    group_gap = 14.0
    max_label = width * 0.3
    label_w = max([min(text_width(c, 13, bold=True), max_label) for c in categories] + [40.0])
    if annotations:
        label_w = max(label_w, *(text_width(a, 11) for a in annotations))
    left = label_w + 14
    all_values = [v for s in series for v in s.values if v is not None]
    value_w = max([text_width(value_label(v), size) for v in all_values] + [text_width("–", size)]) + 10
    right = value_w + 8
    plot_w = width - left - right
    legend_h = 26.0 if len(series) > 1 else 0.0
    top = 8.0 + legend_h
    group_h = bar_h * len(series)
    plot_h = len(categories) * (group_h + group_gap) + group_gap / 2
    axis_h = 44.0
    height = top + plot_h + axis_h
    maximum = max(all_values, default=0.0)
    tick_values, tick_label = (ticks or _plain_ticks)(maximum)
    scale_max = tick_values[-1] if tick_values[-1] > 0 else 1.0

    def x_of(v: float) -> float:
        return left + plot_w * (v / scale_max)

    desc_parts = []
    for i, category in enumerate(categories):
        values = ", ".join(f"{s.name} {value_label(s.values[i])}" for s in series)
        desc_parts.append(f"{category}: {values}")
    head, tail = _svg_open(width, height, title, "; ".join(desc_parts))
    out = [head]
    # legend
    if len(series) > 1:
        x = left
        for s in series:
            out.append(f'<rect x="{x:.1f}" y="8" width="14" height="14" rx="2" fill="{s.colour}"/>')
            out.append(_text(x + 20, 19.5, s.name, size=12))
            x += 20 + text_width(s.name, 12) + 24
    # grid and ticks
    axis_y = top + plot_h
    for t in tick_values:
        x = x_of(t)
        out.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{axis_y:.1f}" stroke="{GRID}" '
                   f'stroke-width="1"/>')
        out.append(_text(x, axis_y + 16, tick_label(t), anchor="middle", size=11, fill=MUTED))
    out.append(f'<line x1="{left:.1f}" y1="{axis_y:.1f}" x2="{left + plot_w:.1f}" y2="{axis_y:.1f}" '
               f'stroke="{MUTED}" stroke-width="1"/>')
    out.append(_text(left + plot_w / 2, axis_y + 36, axis_label, anchor="middle", size=12, fill=MUTED))
    # bars
    y = top + group_gap / 2
    for i, category in enumerate(categories):
        mid = y + group_h / 2
        shown = fit_label(category, max_label, 13, bold=True)
        label_y = mid - 1 if annotations else mid + 4.5
        label = _text(left - 10, label_y, shown, anchor="end", size=13, weight="600")
        if shown != category:  # cut: the whole name as a tooltip
            label = label.replace("</text>", f"<title>{_esc(category)}</title></text>")
        out.append(label)
        if annotations:
            out.append(_text(left - 10, mid + 13, annotations[i], anchor="end", size=11, fill=MUTED))
        for j, s in enumerate(series):
            value = s.values[i]
            by = y + j * bar_h
            if value is not None and value > 0:
                w = max(x_of(value) - left, 1.5)
                out.append(f'<rect x="{left:.1f}" y="{by + 1.5:.1f}" width="{w:.1f}" height="{bar_h - 3:.1f}" '
                           f'rx="2" fill="{s.colour}"><title>{_esc(f"{category} – {s.name}: {value_label(value)}")}'
                           f'</title></rect>')
                end = left + w
            else:
                end = left
            out.append(_text(end + 6, by + bar_h / 2 + 4, value_label(value), size=size))
        y += group_h + group_gap
    out.append(tail)
    return "".join(out)


def _plain_ticks(maximum: float) -> tuple[list[float], Callable[[float], str]]:
    return nice_ticks(maximum), lambda v: fmt_number(v, 1)


def percent_ticks(maximum: float) -> tuple[list[float], Callable[[float], str]]:
    """Shares 0..1 on an axis that always ends at 100 %."""
    return [0.0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v * 100:.0f} %"


def funnel_chart(
    stages: Sequence[tuple[str, int]],
    conversions: Sequence[float | None],
    *,
    title: str,
    width: float = 560,
    rate_word: str = "continue",
) -> str:
    """Centred bars, widest first, with the count on each bar and the stage-to-stage
    rate between consecutive bars ("↓ 40.0 % continue"; a period funnel says "ratio")."""
    bar_h = 40.0
    gap = 30.0
    label_w = max(text_width(name, 14, bold=True) for name, _ in stages) + 24
    left = label_w
    plot_w = width - left - 20
    centre = left + plot_w / 2
    top = 6.0
    height = top + len(stages) * bar_h + (len(stages) - 1) * gap + 8
    maximum = max((n for _, n in stages), default=0) or 1
    desc = "; ".join(f"{name}: {n:,}" for name, n in stages)
    desc += (". Conversion: " if rate_word == "continue" else ". Ratio to the stage before: ") + ", ".join(
        f"{stages[i][0]} to {stages[i + 1][0]} {fmt_percent(c)}" for i, c in enumerate(conversions)
    )
    head, tail = _svg_open(width, height, title, desc)
    out = [head]
    y = top
    for i, (name, n) in enumerate(stages):
        w = max(plot_w * n / maximum, 3.0)
        x = centre - w / 2
        out.append(_text(left - 14, y + bar_h / 2 + 5, name, anchor="end", size=14, weight="600"))
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{bar_h:.1f}" rx="3" fill="{BLUE}">'
                   f'<title>{_esc(f"{name}: {n:,} leads")}</title></rect>')
        label = f"{n:,}"
        if text_width(label, 14, bold=True) + 12 < w:
            out.append(_text(centre, y + bar_h / 2 + 5, label, anchor="middle", size=14, weight="700",
                             fill="#FFFFFF"))
        else:
            out.append(_text(centre + w / 2 + 8, y + bar_h / 2 + 5, label, size=14, weight="700"))
        if i < len(conversions):
            rate = conversions[i]
            cy = y + bar_h + gap / 2 + 5
            label = f"↓ {fmt_percent(rate)} continue" if rate_word == "continue" else f"↓ ratio {fmt_percent(rate)}"
            out.append(_text(centre, cy, label, anchor="middle", size=12, fill=MUTED))
        y += bar_h + gap
    out.append(tail)
    return "".join(out)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_label: Callable[[float | None], str],
    axis_label: str,
    width: float = 560,
    height: float = 260,
) -> str:
    """One line per series over the labels (intervals, oldest first), a dot per value with its
    value as a tooltip, a y axis with round ticks, a legend; at most about ten x labels shown."""
    legend_h = 26.0
    left, right, top, bottom = 48.0, 12.0, 8.0 + legend_h, 52.0
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for v in s.values if v is not None]
    tick_values = nice_ticks(max(values, default=0.0))
    scale_max = tick_values[-1] if tick_values[-1] > 0 else 1.0
    n = len(labels)

    def x_of(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y_of(v: float) -> float:
        return top + plot_h * (1 - v / scale_max)

    desc = "; ".join(f"{label}: " + ", ".join(f"{s.name} {value_label(s.values[i])}" for s in series)
                     for i, label in enumerate(labels))
    head, tail = _svg_open(width, height, title, desc)
    out = [head]
    x = left
    for s in series:
        out.append(f'<rect x="{x:.1f}" y="8" width="14" height="14" rx="2" fill="{s.colour}"/>')
        out.append(_text(x + 20, 19.5, s.name, size=12))
        x += 20 + text_width(s.name, 12) + 24
    for t in tick_values:
        y = y_of(t)
        out.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + plot_w:.1f}" y2="{y:.1f}" stroke="{GRID}" '
                   f'stroke-width="1"/>')
        out.append(_text(left - 6, y + 4, fmt_number(t, 1), anchor="end", size=11, fill=MUTED))
    step = max(1, math.ceil(n / 10))
    for i, label in enumerate(labels):
        if i % step == 0 or i == n - 1:
            out.append(_text(x_of(i), top + plot_h + 16, label, anchor="middle", size=11, fill=MUTED))
    out.append(_text(left + plot_w / 2, height - 10, axis_label, anchor="middle", size=12, fill=MUTED))
    for s in series:
        points = [(x_of(i), y_of(v)) for i, v in enumerate(s.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for i, v in enumerate(s.values):
            if v is not None:
                out.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3" fill="{s.colour}">'
                           f'<title>{_esc(f"{labels[i]} – {s.name}: {value_label(v)}")}</title></circle>')
    out.append(tail)
    return "".join(out)
