"""The report's trend and plan sections: the funnel per week or month, and what a revenue target asks
of each channel next to what the channel did in the period before."""

from __future__ import annotations

from typing import Any

from projections.report import charts
from projections.report.charts import Series, fmt_int, fmt_money, fmt_percent
from projections.report.markup import esc, figure, ratio, table

#: the stages the trend chart draws, with their colours
TREND_STAGES = (("captured", charts.BLUE), ("mql", charts.VERMILLION), ("sal", charts.GREEN),
                ("won", charts.PURPLE))
PLAN_STAGES = (("leads", "leads_needed", "captured"), ("MQL", "mql_needed", "mql"), ("SAL", "sal_needed", "sal"),
               ("SQL", "sql_needed", "sql"), ("deals", "deals_needed", "won"))


def trend_interval(start: int | None, end: int | None) -> str:
    """Weeks for a window up to about four months, else months (and months without a window)."""
    if start is None or end is None:
        return "month"
    return "week" if end - start <= 18 * 7 * 86_400_000_000 else "month"


def trend_section(trend: dict[str, Any], mode: str) -> str:
    intervals = trend.get("intervals") or []
    kind = trend.get("interval", "month")
    what = "captured in the" if mode == "cohort" else "entering each stage in the"
    out = [f'<section id="trend"><h2>Trend: leads per {esc(kind)}</h2>',
           f'<p class="note">Distinct leads {what} {esc(kind)} ({"ISO weeks" if kind == "week" else "UTC months"}, '
           f'{"cohort" if mode == "cohort" else "period"} mode): <code>leadledger funnel --interval {esc(kind)}'
           f'{" --mode period" if mode == "period" else ""}</code>.</p>']
    if trend.get("too_long"):
        out.append(f'<p class="empty">No trend: {esc(trend["too_long"])}.</p></section>')
        return "".join(out)
    if not intervals:
        out.append('<p class="empty">No leads in the period.</p></section>')
        return "".join(out)
    labels = [iv["label"] for iv in intervals]
    counts = {stage: [float(iv["groups"][0]["stages"][stage]) if iv["groups"] else 0.0 for iv in intervals]
              for stage, _ in TREND_STAGES}
    series = [Series(stage.upper() if stage != "captured" else "captured", colour, counts[stage])
              for stage, colour in TREND_STAGES]
    out.append(figure(charts.line_chart(labels, series, title=f"Leads per {kind}", value_label=fmt_int,
                                        axis_label=kind)))
    rows = [[esc(iv["label"]), *(fmt_int(counts[s][i]) for s, _ in TREND_STAGES),
             fmt_percent(ratio(counts["won"][i], counts["captured"][i]))] for i, iv in enumerate(intervals)]
    out.append(table([(kind, False), ("captured", True), ("MQL", True), ("SAL", True), ("won", True),
                      ("won / captured", True)], rows))
    out.append("</section>")
    return "".join(out)


def plan_section(plan: dict[str, Any], actual: dict[str, Any]) -> str:
    """Needed per channel next to the actual stage entries of the period before (`actual`: a period-mode
    funnel by channel over the window of the same length before the plan period)."""
    cur = esc(plan["currency"])
    out = ['<section id="plan"><h2>Plan: what the target takes</h2>',
           f'<p class="note">{esc(fmt_money(plan["revenue"]))} {cur} in [{esc(plan["period_from"][:10])}, '
           f'{esc(plan["period_to"][:10])}), planned from the leads captured in [{esc(plan["history_from"][:10])}, '
           f'{esc(plan["as_of"][:10])}) (win rates with their 80 % interval, revenue per won lead and each '
           f"channel's share of the won revenue), next to what each channel did in "
           f'[{esc(actual["from"][:10])}, {esc(actual["to"][:10])}) (stage entries in that period).</p>']
    done = {g["key"]: g["stages"] for g in actual["groups"]}
    rows = []
    for g in plan["groups"]:
        had = done.get(g["key"], {})
        cells = [esc(g["key"]), fmt_percent(g["win_rate"]), esc(fmt_money(g["revenue_per_won"]))]
        for _, need, stage in PLAN_STAGES:
            if g[need] is None:
                cells.append("—")
                continue
            last = had.get(stage, 0)
            change = ratio(g[need], last)
            cells.append(f"{fmt_int(g[need])} <span class=\"muted\">vs {fmt_int(last)}"
                         + (f" (×{change:.1f})" if change is not None else "") + "</span>")
        rows.append(cells)
    out.append(table([("channel", False), ("win rate", True), (f"per won ({cur})", True),
                      *((f"{name} needed vs last", True) for name, _, _ in PLAN_STAGES)], rows))
    why = [f"{esc(g['key'])}: {esc(g['why'])}" for g in plan["groups"] if g["why"]]
    if why:
        out.append('<p class="note">Not planned — ' + "; ".join(why) + ".</p>")
    c = plan["capacity"]
    if c["sal_capacity"] is not None:
        out.append(f'<p class="note">Capacity: {fmt_int(c["sal_needed"])} SALs needed, '
                   f'{charts.fmt_number(c["sal_per_working_day"], 1)} a working day; the reps take '
                   f'{charts.fmt_number(c["sal_capacity_per_working_day"], 1)} a day '
                   f'({"fits" if c["fits"] else "does not fit"}, {fmt_percent(c["utilization"])} used).</p>')
    elif c["why"]:
        out.append(f'<p class="note">Capacity: {esc(c["why"])}.</p>')
    out.append("</section>")
    return "".join(out)
