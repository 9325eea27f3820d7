"""The report's building blocks: escaping, the names of stages, models and conversions, times and
periods as words, and the table, figure and KPI markup every section uses."""

from __future__ import annotations

from datetime import UTC, datetime, time
from html import escape

from projections.query import Query

STAGE_NAMES = {
    "captured": "Captured", "nurtured": "Nurtured", "mql": "MQL", "sal": "SAL", "sql": "SQL",
    "won": "Won", "recycled": "Recycled", "lost": "Lost", "disqualified": "Disqualified",
}
MODEL_NAMES = {
    "first": "first touch (all credit to the first touch)",
    "last": "last touch (all credit to the last touch)",
    "linear": "linear (equal credit to every touch)",
    "u_shaped": "U-shaped (40 % first, 40 % last, 20 % spread over the middle)",
    "time_decay": "time decay (a touch's weight halves every 7 days before the conversion)",
}
CONVERSION_NAMES = {"mql": "MQL", "sql": "SQL", "won": "won deals"}


def esc(value: object) -> str:
    """Escape anything that goes into the page; channel, campaign and owner names come from
    upstream systems and are untrusted."""
    return escape("(none)" if value is None else str(value), quote=True)


def stage_name(name: str) -> str:
    return STAGE_NAMES.get(name, name)


def when(value: datetime | None, empty: str = "—") -> str:
    if value is None:
        return empty
    value = value.astimezone(UTC)
    if value.time() == time(0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def period(query: Query) -> str:
    if query.from_ is None and query.to is None:
        return "all time"
    if query.to is None:
        return f"from {when(query.from_)}"
    if query.from_ is None:
        return f"before {when(query.to)}"
    return f"{when(query.from_)} to {when(query.to)} (end exclusive)"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def table(headers: list[tuple[str, bool]], rows: list[list[str]], caption: str | None = None) -> str:
    """`headers` are (label, numeric); cells are already escaped/formatted strings."""
    head = "".join(f'<th scope="col"{" class=num" if num else ""}>{esc(h)}</th>' for h, num in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i == 0:
                cells.append(f'<th scope="row">{cell}</th>')
            else:
                cells.append(f'<td{" class=num" if headers[i][1] else ""}>{cell}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(svg: str) -> str:
    """The chart with its title shown above it (the SVG's own <title> is only a tooltip)."""
    start = svg.index("<title")
    start = svg.index(">", start) + 1
    caption = svg[start:svg.index("</title>", start)]  # already escaped
    return f"<figure><figcaption>{caption}</figcaption>{svg}</figure>"


def kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><span class="value">{value}</span><span class="label">{esc(label)}</span></div>'
