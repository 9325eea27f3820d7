"""The HTML report: one self-contained page (inline CSS and SVG, no scripts or external
references) with the funnel, time in stage, attribution and speed to lead."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from html import escape
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from projections import charts
from projections.charts import Series, fmt_duration, fmt_int, fmt_money, fmt_number, fmt_percent
from projections.query import Query

if TYPE_CHECKING:
    from projections.service import Analytics

MAIN_PATH = ("captured", "mql", "sal", "sql", "won")
DETOURS = ("nurtured", "recycled", "lost", "disqualified")
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
CONVERSION_NAMES_SHORT = {"mql": "MQL", "sql": "SQL", "won": "Deal"}
#: stages a lead waits in on its way (won, lost, disqualified are end states)
OPEN_STAGES = ("captured", "nurtured", "mql", "sal", "sql", "recycled")


def _e(value: object) -> str:
    """Escape anything that goes into the page; channel, campaign and owner names come from
    upstream systems and are untrusted."""
    return escape("(none)" if value is None else str(value), quote=True)


def _stage(name: str) -> str:
    return STAGE_NAMES.get(name, name)


def _when(value: datetime | None, empty: str = "—") -> str:
    if value is None:
        return empty
    value = value.astimezone(UTC)
    if value.time() == time(0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _period(query: Query) -> str:
    if query.from_ is None and query.to is None:
        return "all time"
    if query.to is None:
        return f"from {_when(query.from_)}"
    if query.from_ is None:
        return f"before {_when(query.to)}"
    return f"{_when(query.from_)} to {_when(query.to)} (end exclusive)"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _leadledger_version() -> str:
    try:
        return package_version("leadledger")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "dev"


#: The page needs nothing but its own inline CSS: should escaping ever fail, no script runs
#: and nothing is fetched (also sent as a header by `serve`).
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
:root { --ink: #1B1F24; --muted: #4A5260; --rule: #D0D5DD; --band: #F3F5F8; --accent: #0072B2; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; color: var(--ink); background: #FFFFFF;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-variant-numeric: tabular-nums; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 40px; }
.grid { display: grid; grid-template-columns: minmax(0, 1fr); gap: 8px 44px; }
@media screen and (min-width: 1100px) { .grid { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); } }
header { border-bottom: 3px solid var(--accent); padding-bottom: 16px; margin-bottom: 24px; }
h1 { font-size: 28px; line-height: 1.2; margin: 0 0 4px; }
.subtitle { font-size: 17px; color: var(--muted); margin: 0 0 16px; }
dl.params { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; font-size: 14px; }
dl.params dt { color: var(--muted); }
dl.params dd { margin: 0; font-weight: 600; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin: 0 0 28px; }
.kpi { background: var(--band); border-radius: 6px; padding: 12px 14px; }
.kpi .value { display: block; font-size: 24px; font-weight: 700; line-height: 1.2; }
.kpi .label { display: block; font-size: 13px; color: var(--muted); }
section { margin: 0 0 28px; break-inside: avoid; page-break-inside: avoid; min-width: 0; }
.share { color: var(--muted); }
h2 { font-size: 21px; margin: 0 0 6px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.lede { margin: 0 0 14px; font-size: 15px; }
p.note { margin: 8px 0 0; font-size: 13px; color: var(--muted); }
figure { margin: 12px 0 8px; }
figcaption { font-weight: 600; font-size: 14px; margin: 0 0 2px; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 4px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0 0; }
caption { text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--rule); }
thead th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 2px solid var(--rule); }
tbody th { text-align: left; font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #FAFBFC; }
.empty { color: var(--muted); font-style: italic; }
footer { border-top: 1px solid var(--rule); padding-top: 12px; font-size: 12.5px; color: var(--muted); }
footer dt { font-weight: 600; color: var(--ink); }
footer dd { margin: 0 0 6px; }
@page { size: A4; margin: 14mm; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  header { padding-bottom: 8px; margin-bottom: 12px; }
  .kpis { grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 8px; margin-bottom: 16px; }
  .kpi { border: 1px solid var(--rule); padding: 8px 10px; }
  .kpi .value { font-size: 18px; }
  section { break-inside: avoid; margin-bottom: 18px; }
  svg.chart { max-width: 88%; }
  footer { break-inside: avoid; }
}
"""


def _table(headers: list[tuple[str, bool]], rows: list[list[str]], caption: str | None = None) -> str:
    """`headers` are (label, numeric); cells are already escaped/formatted strings."""
    head = "".join(f'<th scope="col"{" class=num" if num else ""}>{_e(h)}</th>' for h, num in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i == 0:
                cells.append(f'<th scope="row">{cell}</th>')
            else:
                cells.append(f'<td{" class=num" if headers[i][1] else ""}>{cell}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: str) -> str:
    """The chart with its title shown above it (the SVG's own <title> is only a tooltip)."""
    start = svg.index("<title")
    start = svg.index(">", start) + 1
    caption = svg[start:svg.index("</title>", start)]  # already escaped
    return f"<figure><figcaption>{caption}</figcaption>{svg}</figure>"


def _kpi(value: str, label: str) -> str:
    return f'<div class="kpi"><span class="value">{value}</span><span class="label">{_e(label)}</span></div>'


# ---------------------------------------------------------------- sections


def _funnel_section(funnel: dict[str, Any], mode: str) -> str:
    group = funnel["groups"][0] if funnel["groups"] else {"stages": {}, "conversion": {}}
    stages: dict[str, int] = group["stages"]
    conversion: dict[str, float | None] = group["conversion"]
    captured = stages.get("captured", 0)
    scope = ("of the leads captured in the period, how many ever reached each stage" if mode == "cohort"
             else "distinct leads entering each stage during the period")
    out = ['<section id="funnel"><h2>Funnel: where leads get stuck</h2>']
    if not captured and not any(stages.values()):
        out.append('<p class="empty">No leads in this period.</p></section>')
        return "".join(out)
    steps = [f"{a}->{b}" for a, b in pairwise(MAIN_PATH)]
    rates = [conversion.get(step) for step in steps]
    known = [(r, s) for r, s in zip(rates, steps, strict=True) if r is not None]
    won = stages.get("won", 0)
    lede = (f"{fmt_int(captured)} leads captured, {fmt_int(won)} won "
            f"({fmt_percent(_ratio(won, captured))} end to end).")
    if known:
        worst_rate, worst = min(known)
        a, b = worst.split("->")
        lede += (f" The biggest drop is <strong>{_e(_stage(a))} → {_e(_stage(b))}</strong>: "
                 f"only {fmt_percent(worst_rate)} continue.")
    out.append(f'<p class="lede">{lede}</p>')
    out.append(_figure(charts.funnel_chart([(_stage(s), int(stages.get(s, 0))) for s in MAIN_PATH], rates,
                                   title="Main path: leads per stage, share continuing to the next")))
    rows = [[_e(_stage(s)), fmt_int(stages.get(s, 0)), fmt_percent(_ratio(stages.get(s, 0), captured))]
            for s in DETOURS]
    out.append(_table([("Detour or exit", False), ("Leads", True), ("Share of captured", True)], rows))
    out.append(f'<p class="note">Counts are distinct leads: {_e(scope)}. Conversion a → b is '
               "reached(b) / reached(a).</p></section>")
    return "".join(out)


def _velocity_section(velocity: dict[str, Any]) -> str:
    group = velocity["groups"][0] if velocity["groups"] else {"time_in_stage": {}, "time_to_stage": {}}
    in_stage: dict[str, dict[str, Any]] = group["time_in_stage"]
    to_stage: dict[str, dict[str, Any]] = group["time_to_stage"]
    order = [s for s in OPEN_STAGES if in_stage.get(s, {}).get("count")]
    out = ['<section id="velocity"><h2>Time in stage: where leads wait</h2>']
    if not order:
        out.append('<p class="empty">No completed stays yet.</p></section>')
        return "".join(out)
    slowest = max(order, key=lambda s: in_stage[s].get("p50_s") or 0)
    st = in_stage[slowest]
    out.append(f'<p class="lede">Leads wait longest in <strong>{_e(_stage(slowest))}</strong>: half of them '
               f"move on within {fmt_duration(st.get('p50_s'))}, but one in ten stays longer than "
               f"{fmt_duration(st.get('p90_s'))}.</p>")
    out.append(_figure(charts.bar_chart(
        [_stage(s) for s in order],
        [Series("median (p50)", charts.BLUE, [in_stage[s].get("p50_s") for s in order]),
         Series("90th percentile (p90)", charts.VERMILLION, [in_stage[s].get("p90_s") for s in order])],
        title="Time in stage: p50 and p90 of completed stays",
        value_label=fmt_duration, axis_label="time in stage",
        ticks=charts.duration_ticks,
        annotations=[f"n = {fmt_int(in_stage[s].get('count'))}" for s in order],
    )))
    rows = []
    for s in ("mql", "sal", "sql", "won"):
        stat = to_stage.get(s) or {}
        rows.append([_e(_stage(s)), fmt_int(stat.get("count") or 0), fmt_duration(stat.get("p50_s")),
                     fmt_duration(stat.get("p90_s")), fmt_duration(stat.get("mean_s"))])
    out.append(_table([("From capture to", False), ("Leads", True), ("p50", True), ("p90", True),
                       ("Mean", True)], rows))
    out.append('<p class="note">A stay runs from entering a stage to the lead\'s next stage change; only '
               "completed stays count (n). Won, lost and disqualified are end states and not shown. "
               "Percentiles are exact nearest-rank.</p></section>")
    return "".join(out)


def _attribution_section(attribution: dict[str, Any], by_channel: dict[str, Any]) -> str:
    model, conversion = attribution["model"], attribution["conversion"]
    credited = {g["key"]: g for g in attribution["groups"]}
    sources = {g["key"]: g["stages"] for g in by_channel["groups"] if any(g["stages"].values())}
    with_revenue = conversion == "won"
    total_conv = sum(g.get("conversions") or 0 for g in credited.values())
    total_rev = sum(g.get("revenue") or 0 for g in credited.values()) if with_revenue else None
    metric = "revenue" if with_revenue else "conversions"
    keys = sorted(credited.keys() | sources.keys(), key=lambda k: (
        -((credited.get(k) or {}).get(metric) or 0), -(sources.get(k) or {}).get("captured", 0), str(k)))
    what = CONVERSION_NAMES.get(conversion, conversion)
    out = ['<section id="attribution"><h2>Attribution: where revenue comes from</h2>']
    if not keys:
        out.append('<p class="empty">No leads in this period.</p></section>')
        return "".join(out)
    charted = [k for k in keys if ((credited.get(k) or {}).get(metric) or 0) > 0]
    if charted:
        top = credited[charted[0]]
        if with_revenue:
            lede = (f"Under the <strong>{_e(model)}</strong> model, <strong>{_e(top['key'])}</strong> earns "
                    f"the most credit: {fmt_percent(_ratio(top.get('revenue'), total_rev))} of won revenue "
                    f"({fmt_money(top.get('revenue'))} of {fmt_money(total_rev)}).")
        else:
            lede = (f"Under the <strong>{_e(model)}</strong> model, <strong>{_e(top['key'])}</strong> earns "
                    f"the most credit: {fmt_percent(_ratio(top.get('conversions'), total_conv))} of "
                    f"{fmt_number(total_conv)} {_e(what)}.")
        out.append(f'<p class="lede">{lede}</p>')
        if with_revenue:
            out.append(_figure(charts.bar_chart(
                [str(k) for k in charted],
                [Series("attributed revenue", charts.GREEN, [credited[k].get("revenue") for k in charted])],
                title=f"Attributed revenue by channel ({model} model)", value_label=fmt_money,
                axis_label="deal amount × credit", ticks=lambda m: (charts.nice_ticks(m), fmt_money),
            )))
        else:
            out.append(_figure(charts.bar_chart(
                [str(k) for k in charted],
                [Series(f"attributed {what}", charts.GREEN, [credited[k].get("conversions") for k in charted])],
                title=f"Attributed {what} by channel ({model} model)",
                value_label=lambda v: fmt_number(v, 1), axis_label=f"{what} credited (fractional)",
            )))
    else:
        out.append(f'<p class="lede">No {_e(what)} yet: nothing to credit.</p>')
    headers = [("Channel", False), ("Captured", True), ("Won", True), ("Win rate", True),
               (f"{CONVERSION_NAMES_SHORT.get(conversion, conversion)} credit", True)]
    if with_revenue:
        headers += [("Revenue", True), ("Share", True)]
    rows = []
    for k in keys:
        st, cr = sources.get(k) or {}, credited.get(k) or {}
        row = [_e(k), fmt_int(st.get("captured")) if st else "–", fmt_int(st.get("won")) if st else "–",
               fmt_percent(_ratio(st.get("won"), st.get("captured"))) if st else "–",
               fmt_number(cr.get("conversions"), 1) if cr else "0"]
        if with_revenue:
            row += [fmt_money(cr.get("revenue")) if cr else "0", fmt_percent(_ratio(cr.get("revenue"), total_rev))]
        rows.append(row)
    out.append(_table(headers, rows))
    out.append(f'<p class="note">Captured, won and win rate count leads by their source (first touch). '
               f"Credit: {_e(MODEL_NAMES.get(model, model))}, over the touches since the lead's previous "
               "conversion; credits sum to the number of conversions. Revenue is deal amount × credit, "
               "summed as recorded (currencies are not converted).</p></section>")
    return "".join(out)


def _speed_section(speed: dict[str, Any], overall: dict[str, Any]) -> str:
    groups = [g for g in speed["groups"] if g.get("assignments")]
    groups.sort(key=lambda g: (-(_ratio(g.get("within_5m"), g.get("assignments")) or 0), str(g.get("key"))))
    out = ['<section id="speed"><h2>Speed to lead by owner</h2>']
    total = overall["groups"][0] if overall["groups"] else None
    if not groups or total is None:
        out.append('<p class="empty">No assignments in this period.</p></section>')
        return "".join(out)
    out.append(f'<p class="lede">Sales contacted {fmt_percent(_ratio(total["contacted"], total["assignments"]))} '
               f"of {fmt_int(total['assignments'])} assignments, "
               f"<strong>{fmt_percent(_ratio(total['within_5m'], total['assignments']))} within 5 minutes</strong>. "
               f"Median response {fmt_duration(total.get('p50_s'))}; one in ten waited longer than "
               f"{fmt_duration(total.get('p90_s'))}.</p>")
    out.append(_figure(charts.bar_chart(
        [str(g["key"]) for g in groups],
        [Series("contacted within 5 minutes", charts.BLUE,
                [_ratio(g.get("within_5m"), g.get("assignments")) for g in groups])],
        title="Share of assignments contacted within 5 minutes",
        value_label=lambda v: fmt_percent(v, 0), axis_label="share of the owner's assignments",
        ticks=charts.percent_ticks,
    )))

    def count_share(n: int, of: int) -> str:
        return f"{fmt_int(n)} <span class=share>({fmt_percent(_ratio(n, of), 0)})</span>"

    rows = [[_e(g["key"]), fmt_int(g["assignments"]), count_share(g["contacted"], g["assignments"]),
             count_share(g["within_5m"], g["assignments"]), fmt_duration(g.get("p50_s")),
             fmt_duration(g.get("p90_s"))] for g in groups]
    out.append(_table([("Owner", False), ("Assigned", True), ("Contacted", True), ("≤ 5 min", True),
                       ("p50", True), ("p90", True)], rows))
    out.append('<p class="note">Time from each assignment to the lead\'s first contact after it and before '
               "any reassignment; p50 and p90 over the contacted ones.</p></section>")
    return "".join(out)


# ---------------------------------------------------------------- the page


def render_report(analytics: Analytics, query: Query, *, generated_at: datetime | None = None) -> str:
    """The whole page for `query` (its period, as-of, known-at, funnel mode, attribution model
    and conversion; `by` is chosen per section)."""
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC)
    base = replace(query, by=None)
    funnel = analytics.funnel(base)
    by_channel = analytics.funnel(replace(query, by="channel"))
    velocity = analytics.velocity(base)
    attribution = analytics.attribution(replace(query, by="channel"))
    speed = analytics.speed(replace(query, by="owner"))
    speed_all = analytics.speed(base)

    stages = funnel["groups"][0]["stages"] if funnel["groups"] else {}
    captured, won = stages.get("captured", 0), stages.get("won", 0)
    to_won = (velocity["groups"][0]["time_to_stage"].get("won") or {}) if velocity["groups"] else {}
    sp = speed_all["groups"][0] if speed_all["groups"] else {}
    kpis = [_kpi(fmt_int(captured), "leads captured"),
            _kpi(fmt_int(won), f"won ({fmt_percent(_ratio(won, captured))} of captured)")]
    if query.conversion == "won":
        revenue = sum(g.get("revenue") or 0 for g in attribution["groups"])
        kpis.append(_kpi(fmt_money(revenue), "won revenue"))
    kpis.append(_kpi(fmt_duration(to_won.get("p50_s")), "median capture → won"))
    kpis.append(_kpi(fmt_percent(_ratio(sp.get("within_5m"), sp.get("assignments")), 0),
                     "of assignments contacted within 5 min"))

    as_of = _when(query.as_of, "latest data (every event stored)")
    params = [("As of", as_of)]
    if query.known_at is not None:
        params.append(("As known at", _when(query.known_at)))
    params += [
        ("Period", _period(query)),
        ("Funnel", f"{query.mode} mode" + (" (leads captured in the period)" if query.mode == "cohort"
                                           else " (stage entries in the period)")),
        ("Attribution", f"{MODEL_NAMES.get(query.model, query.model)}; conversion: "
                        f"{CONVERSION_NAMES.get(query.conversion, query.conversion)}"),
        ("Generated", generated.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    title = f"Lead lifecycle report — as of {as_of}"
    param_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in params)
    cli_args = [f"--as-of {_when(query.as_of)}" if query.as_of else "",
                f"--known-at {_when(query.known_at)}" if query.known_at else "",
                f"--from {_when(query.from_)}" if query.from_ else "",
                f"--to {_when(query.to)}" if query.to else "",
                f"--mode {query.mode}", f"--model {query.model}", f"--conversion {query.conversion}"]
    command = "leadledger report --html report.html " + " ".join(a for a in cli_args if a)
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        "<header><h1>Lead lifecycle report</h1>",
        '<p class="subtitle">Where our leads come from, where they get stuck, and how fast sales responds.</p>',
        f'<dl class="params">{param_html}</dl></header>',
        f'<div class="kpis">{"".join(kpis)}</div>',
        '<div class="grid">',
        _funnel_section(funnel, query.mode),
        _velocity_section(velocity),
        _attribution_section(attribution, by_channel),
        _speed_section(speed, speed_all),
        "</div>",
        "<footer><dl>",
        "<dt>How to read this</dt><dd>Times are when things happened (occurred at), in UTC. "
        "Only events that occurred at or before the as-of time count"
        + (", and only those recorded by the known-at time" if query.known_at else "")
        + ". Durations: s, min, h (hours), d (days).</dd>",
        f"<dt>Reproduce</dt><dd><code>{_e(command)}</code></dd>",
        f"<dt>Source</dt><dd>leadledger {_e(_leadledger_version())}: every number is a fold over the "
        "immutable, hash-chained event store (<code>leadledger verify</code> proves it unchanged).</dd>",
        "</dl></footer></main></body></html>\n",
    ])
