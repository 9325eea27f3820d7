"""The HTML report: one self-contained page (inline CSS and SVG, no scripts or external
references) with the funnel, time in stage, attribution, speed to lead, qualification (MQLs by
source and their MQL → won rate) and, with a policy that has SLA rules, SLA compliance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from projections import windows
from projections.plan import PlanQuery
from projections.query import Query, QueryError, check
from projections.report.charts import fmt_duration, fmt_int, fmt_money, fmt_percent
from projections.report.markup import CONVERSION_NAMES, MODEL_NAMES, esc, kpi, period, ratio, when
from projections.report.planning import plan_section, trend_interval, trend_section
from projections.report.sections import (
    attribution_section,
    fmt_amounts,
    funnel_section,
    qualification_section,
    sla_section,
    speed_section,
    unconverted_total,
    velocity_section,
)
from schemas.codec import format_time

if TYPE_CHECKING:
    from projections.service import Analytics


def leadledger_version() -> str:
    """The installed leadledger's version (the report's footer, the API's OpenAPI document)."""
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
.caution { color: #8A4B00; font-size: 13px; }
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


def drill_link(query: Query) -> Callable[[str], str]:
    """The API's drill-down (`/leads?reached=STAGE&...`, relative to the server) of a stage of the
    report's funnel: the report's own window, as-of and known-at time."""
    params = {"mode": query.mode, "from": query.from_, "to": query.to, "as_of": query.as_of,
              "known_at": query.known_at}
    window = {k: v if isinstance(v, str) else format_time(v) for k, v in params.items() if v is not None}

    def link(stage: str) -> str:
        return "/leads?" + urlencode({"reached": stage, **window})

    return link


def render_report(analytics: Analytics, query: Query, *, generated_at: datetime | None = None,
                  plan: PlanQuery | None = None) -> str:
    """The whole page for `query` (its period, as-of, known-at, funnel mode, attribution model
    and conversion; `by` is chosen per section); with `plan`, a plan section per channel (the plan's as-of
    defaults to the report's, else the generation time)."""
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC)
    base = replace(query, by=None)
    funnel = analytics.funnel(base)
    window = check(base)
    kind = trend_interval(window.start, window.end)
    try:
        trend: dict[str, Any] = analytics.funnel(replace(base, interval=kind))
    except QueryError as exc:  # a window of more than 1,000 months: no chart, the page still answers
        trend = {"interval": kind, "intervals": [], "too_long": str(exc)}
    planned = ""
    if plan is not None:
        plan = replace(plan, by="channel", as_of=plan.as_of or query.as_of)
        answer = analytics.plan(plan, now=generated.replace(microsecond=0))
        before = windows.previous_window(plan.start, plan.end)
        actual = analytics.funnel(Query(by="channel", mode="period", from_=before[0], to=before[1],
                                        as_of=query.as_of, known_at=query.known_at))
        planned = plan_section(answer, actual)
    by_channel = analytics.funnel(replace(query, by="channel"))
    velocity = analytics.velocity(base)
    attribution = analytics.attribution(replace(query, by="channel"))
    speed = analytics.speed(replace(query, by="owner"))
    speed_all = analytics.speed(base)
    qualification = analytics.qualification(replace(base, mode="cohort"))  # always on the MQL entry
    sla = analytics.sla(replace(query, by="rule", mode="cohort"))

    stages = funnel["groups"][0]["stages"] if funnel["groups"] else {}
    captured, won = stages.get("captured", 0), stages.get("won", 0)
    to_won = (velocity["groups"][0]["time_to_stage"].get("won") or {}) if velocity["groups"] else {}
    sp = speed_all["groups"][0] if speed_all["groups"] else {}
    kpis = [kpi(fmt_int(captured), "leads captured"),
            kpi(fmt_int(won), f"won ({fmt_percent(ratio(won, captured))} of captured)" if query.mode == "cohort"
                else f"won in the period (ratio to captured {fmt_percent(ratio(won, captured))})")]
    if query.conversion == "won":
        # in the reporting currency; amounts without a rate are named apart, never added in
        currency = str(attribution.get("currency") or "")
        revenue = sum(g.get("revenue") or 0 for g in attribution["groups"])
        unconverted = unconverted_total(attribution)
        label = f"won revenue ({currency})" + (f"; not converted: {fmt_amounts(unconverted)}" if unconverted else "")
        kpis.append(kpi(esc(f"{fmt_money(revenue)} {currency}"), label))
    kpis.append(kpi(fmt_duration(to_won.get("p50_s")), "median capture → won"))
    kpis.append(kpi(fmt_percent(ratio(sp.get("within_5m"), sp.get("assignments")), 0),
                     "of assignments contacted within 5 min"))

    as_of = when(query.as_of, "latest data (every event stored)")
    params = [("As of", as_of)]
    if query.known_at is not None:
        params.append(("As known at", when(query.known_at)))
    params += [
        ("Period", period(query)),
        ("Funnel", f"{query.mode} mode" + (" (leads captured in the period)" if query.mode == "cohort"
                                           else " (stage entries in the period)")),
        ("Attribution", f"{MODEL_NAMES.get(query.model, query.model)}; conversion: "
                        f"{CONVERSION_NAMES.get(query.conversion, query.conversion)}"),
        ("Generated", generated.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    title = f"Lead lifecycle report — as of {as_of}"
    param_html = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in params)
    cli_args = [f"--as-of {when(query.as_of)}" if query.as_of else "",
                f"--known-at {when(query.known_at)}" if query.known_at else "",
                f"--from {when(query.from_)}" if query.from_ else "",
                f"--to {when(query.to)}" if query.to else "",
                f"--mode {query.mode}", f"--model {query.model}", f"--conversion {query.conversion}"]
    command = "leadledger report --html report.html " + " ".join(a for a in cli_args if a)
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        "<header><h1>Lead lifecycle report</h1>",
        '<p class="subtitle">Where our leads come from, where they get stuck, and how fast sales responds.</p>',
        f'<dl class="params">{param_html}</dl></header>',
        f'<div class="kpis">{"".join(kpis)}</div>',
        '<div class="grid">',
        funnel_section(funnel, query.mode, drill_link(query)),
        trend_section(trend, query.mode),
        planned,
        velocity_section(velocity),
        attribution_section(attribution, by_channel),
        speed_section(speed, speed_all),
        qualification_section(qualification),
        sla_section(sla),
        "</div>",
        "<footer><dl>",
        "<dt>How to read this</dt><dd>Times are when things happened (occurred at), in UTC. "
        "Only events that occurred at or before the as-of time count"
        + (", and only those recorded by the known-at time" if query.known_at else "")
        + ". Durations: s, min, h (hours), d (days).</dd>",
        f"<dt>Reproduce</dt><dd><code>{esc(command)}</code></dd>",
        f"<dt>Source</dt><dd>leadledger {esc(leadledger_version())}: every number is a fold over the "
        "immutable, hash-chained event store (<code>leadledger verify</code> proves it unchanged).</dd>",
        "</dl></footer></main></body></html>\n",
    ])
