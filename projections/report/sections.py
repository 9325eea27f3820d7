"""The report's sections (funnel, time in stage, attribution, speed to lead, qualification, SLA
compliance): each turns the service's answer into a headline, a chart and a table."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from lifecycle.domain.stages import FUNNEL_ORDER, Stage
from lifecycle.domain.stages import MAIN_PATH as DOMAIN_MAIN_PATH
from projections.report import charts
from projections.report.charts import Series, fmt_duration, fmt_int, fmt_money, fmt_number, fmt_percent
from projections.report.markup import CONVERSION_NAMES, MODEL_NAMES, esc, figure, ratio, stage_name, table

MAIN_PATH = tuple(s.value for s in DOMAIN_MAIN_PATH)
DETOURS = tuple(s.value for s in FUNNEL_ORDER if s not in DOMAIN_MAIN_PATH)
CONVERSION_NAMES_SHORT = {"mql": "MQL", "sql": "SQL", "won": "Deal"}
#: stages a lead waits in on its way (won, lost, disqualified are end states)
TERMINAL_STAGES = (Stage.WON, Stage.LOST, Stage.DISQUALIFIED)
OPEN_STAGES = tuple(s.value for s in FUNNEL_ORDER if s not in TERMINAL_STAGES)


#: below this many leads a share is shown with a caution: one lead more or less moves it a lot
SMALL_SAMPLE = 20


def caution(n: float | None, what: str = "leads") -> str:
    """A muted warning for a figure that rests on fewer than SMALL_SAMPLE leads (or assignments)."""
    if n is None or n <= 0 or n >= SMALL_SAMPLE:
        return ""
    return f' <span class="caution">(only {fmt_int(n)} {esc(what)}: read with care)</span>'


def stage_link(count: int, stage: str, drill: Callable[[str], str] | None) -> str:
    """A stage's count, linked to the list of exactly those leads when the page knows the link."""
    if drill is None:
        return fmt_int(count)
    return f'<a href="{esc(drill(stage))}">{fmt_int(count)}</a>'


def funnel_section(funnel: dict[str, Any], mode: str, drill: Callable[[str], str] | None = None) -> str:
    group = funnel["groups"][0] if funnel["groups"] else {"stages": {}, "conversion": {}}
    stages: dict[str, int] = group["stages"]
    conversion: dict[str, float | None] = group["conversion"]
    captured = stages.get("captured", 0)
    period = mode == "period"
    scope = ("of the leads captured in the period, how many ever reached each stage" if not period
             else "distinct leads entering each stage during the period")
    out = ['<section id="funnel"><h2>Funnel: where leads get stuck</h2>']
    if not captured and not any(stages.values()):
        out.append('<p class="empty">No leads in this period.</p></section>')
        return "".join(out)
    steps = [f"{a}->{b}" for a, b in pairwise(MAIN_PATH)]
    rates = [conversion.get(step) for step in steps]
    known = [(r, s) for r, s in zip(rates, steps, strict=True) if r is not None]
    won = stages.get("won", 0)
    if not period:
        lede = (f"{fmt_int(captured)} leads captured, {fmt_int(won)} won "
                f"({fmt_percent(ratio(won, captured))} end to end).{caution(captured)}")
        if known:
            worst_rate, worst = min(known)
            a, b = worst.split("->")
            lede += (f" The biggest drop is <strong>{esc(stage_name(a))} → {esc(stage_name(b))}</strong>: "
                     f"of the {fmt_int(stages.get(a, 0))} leads that reached {esc(stage_name(a))}, "
                     f"{fmt_percent(worst_rate)} went on to {esc(stage_name(b))}.{caution(stages.get(a, 0))}")
    else:
        lede = (f"During the period {fmt_int(captured)} leads were captured and {fmt_int(won)} won. Each count "
                "is the distinct leads that entered that stage in the period, so a ratio between two stages "
                "compares different groups of leads (a deal won now may have been captured months ago), not "
                "the share of one group that moved on.")
        if known:
            worst_rate, worst = min(known)
            a, b = worst.split("->")
            lede += (f" The lowest ratio is <strong>{esc(stage_name(b))} to {esc(stage_name(a))}</strong>: "
                     f"{fmt_int(stages.get(b, 0))} entered {esc(stage_name(b))} against "
                     f"{fmt_int(stages.get(a, 0))} entering {esc(stage_name(a))} "
                     f"({fmt_percent(worst_rate)}).{caution(stages.get(a, 0))}")
    out.append(f'<p class="lede">{lede}</p>')
    title = ("Main path: leads per stage, share continuing to the next" if not period else
             "Main path: leads entering each stage in the period, ratio to the stage before")
    out.append(figure(charts.funnel_chart([(stage_name(s), int(stages.get(s, 0))) for s in MAIN_PATH], rates,
                                          title=title, rate_word="ratio" if period else "continue")))
    if drill is not None:
        links = " · ".join(f"{esc(stage_name(s))} {stage_link(int(stages.get(s, 0)), s, drill)}" for s in MAIN_PATH)
        out.append(f'<p class="note">The leads behind each count (the API\'s lead list): {links}.</p>')
    rows = [[esc(stage_name(s)), stage_link(int(stages.get(s, 0)), s, drill),
             fmt_percent(ratio(stages.get(s, 0), captured))] for s in DETOURS]
    share = "Ratio to captured" if period else "Share of captured"
    out.append(table([("Detour or exit", False), ("Leads", True), (share, True)], rows))
    formula = ("Ratio a → b is entered(b) / entered(a) within the period." if period else
               "Conversion a → b is reached(b) / reached(a).")
    out.append(f'<p class="note">Counts are distinct leads: {esc(scope)}. {formula}</p></section>')
    return "".join(out)


def velocity_section(velocity: dict[str, Any]) -> str:
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
    out.append(f'<p class="lede">Leads wait longest in <strong>{esc(stage_name(slowest))}</strong>: half of them '
               f"move on within {fmt_duration(st.get('p50_s'))}, but one in ten stays longer than "
               f"{fmt_duration(st.get('p90_s'))}.{caution(st.get('count'), 'completed stays')}</p>")
    out.append(figure(charts.bar_chart(
        [stage_name(s) for s in order],
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
        rows.append([esc(stage_name(s)), fmt_int(stat.get("count") or 0), fmt_duration(stat.get("p50_s")),
                     fmt_duration(stat.get("p90_s")), fmt_duration(stat.get("mean_s"))])
    out.append(table([("From capture to", False), ("Leads", True), ("p50", True), ("p90", True),
                       ("Mean", True)], rows))
    out.append('<p class="note">A stay runs from entering a stage to the lead\'s next stage change; only '
               "completed stays count (n). Won, lost and disqualified are end states and not shown. "
               "Percentiles are exact nearest-rank.</p></section>")
    return "".join(out)


def unconverted_total(attribution: dict[str, Any]) -> dict[str, float]:
    """Per currency, the credited amounts of all groups that had no rate (never added to revenue)."""
    total: dict[str, float] = {}
    for g in attribution["groups"]:
        for currency, amount in (g.get("unconverted") or {}).items():
            total[currency] = total.get(currency, 0.0) + amount
    return dict(sorted(total.items()))


def fmt_amounts(amounts: dict[str, float]) -> str:
    """`USD 12 k · SGD 900`: amounts in their own currencies, never added together."""
    return " · ".join(f"{currency} {fmt_money(amount)}" for currency, amount in amounts.items()) or "–"


def attribution_section(attribution: dict[str, Any], by_channel: dict[str, Any]) -> str:
    model, conversion = attribution["model"], attribution["conversion"]
    currency = str(attribution.get("currency") or "")
    credited = {g["key"]: g for g in attribution["groups"]}
    sources = {g["key"]: g["stages"] for g in by_channel["groups"] if any(g["stages"].values())}
    with_revenue = conversion == "won"
    total_conv = sum(g.get("conversions") or 0 for g in credited.values())
    total_rev = sum(g.get("revenue") or 0 for g in credited.values()) if with_revenue else None
    unconverted = unconverted_total(attribution) if with_revenue else {}
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
            lede = (f"Under the <strong>{esc(model)}</strong> model, <strong>{esc(top['key'])}</strong> earns "
                    f"the most credit: {fmt_percent(ratio(top.get('revenue'), total_rev))} of won revenue "
                    f"({fmt_money(top.get('revenue'))} of {fmt_money(total_rev)} {esc(currency)}).")
        else:
            lede = (f"Under the <strong>{esc(model)}</strong> model, <strong>{esc(top['key'])}</strong> earns "
                    f"the most credit: {fmt_percent(ratio(top.get('conversions'), total_conv))} of "
                    f"{fmt_number(total_conv)} {esc(what)}.")
        out.append(f'<p class="lede">{lede}{caution(total_conv, what)}</p>')
        if with_revenue:
            out.append(figure(charts.bar_chart(
                [str(k) for k in charted],
                [Series("attributed revenue", charts.GREEN, [credited[k].get("revenue") for k in charted])],
                title=f"Attributed revenue by channel ({model} model, {currency})", value_label=fmt_money,
                axis_label=f"deal amount × credit, {currency}", ticks=lambda m: (charts.nice_ticks(m), fmt_money),
            )))
        else:
            out.append(figure(charts.bar_chart(
                [str(k) for k in charted],
                [Series(f"attributed {what}", charts.GREEN, [credited[k].get("conversions") for k in charted])],
                title=f"Attributed {what} by channel ({model} model)",
                value_label=lambda v: fmt_number(v, 1), axis_label=f"{what} credited (fractional)",
            )))
    else:
        out.append(f'<p class="lede">No {esc(what)} yet: nothing to credit.</p>')
    if unconverted:
        out.append(f'<p class="lede">Not converted (no {esc(currency)} rate on the won date): '
                   f"<strong>{esc(fmt_amounts(unconverted))}</strong>, not in the revenue above.</p>")
    headers = [("Channel", False), ("Captured", True), ("Won", True), ("Win rate", True),
               (f"{CONVERSION_NAMES_SHORT.get(conversion, conversion)} credit", True)]
    if with_revenue:
        headers += [(f"Revenue ({currency})", True), ("Share", True)]
    if unconverted:
        headers += [("Not converted", True)]
    rows = []
    for k in keys:
        st, cr = sources.get(k) or {}, credited.get(k) or {}
        row = [esc(k), fmt_int(st.get("captured")) if st else "–", fmt_int(st.get("won")) if st else "–",
               fmt_percent(ratio(st.get("won"), st.get("captured"))) if st else "–",
               fmt_number(cr.get("conversions"), 1) if cr else "0"]
        if with_revenue:
            row += [fmt_money(cr.get("revenue")) if cr else "0", fmt_percent(ratio(cr.get("revenue"), total_rev))]
        if unconverted:
            row += [esc(fmt_amounts(cr.get("unconverted") or {}))]
        rows.append(row)
    out.append(table(headers, rows))
    out.append(f'<p class="note">Captured, won and win rate count leads by their source (first touch). '
               f"Credit: {esc(MODEL_NAMES.get(model, model))}, over the touches since the lead's previous "
               "conversion; credits sum to the number of conversions. "
               + (f"Revenue is deal amount × credit in {esc(currency)}, each amount converted at the rate "
                  "in effect on its won date; an amount in a currency with no rate then is listed as not "
                  "converted, in its own currency, and never added." if with_revenue else "")
               + "</p></section>")
    return "".join(out)


def speed_section(speed: dict[str, Any], overall: dict[str, Any]) -> str:
    groups = [g for g in speed["groups"] if g.get("assignments")]
    groups.sort(key=lambda g: (-(ratio(g.get("within_5m"), g.get("assignments")) or 0), str(g.get("key"))))
    out = ['<section id="speed"><h2>Speed to lead by owner</h2>']
    total = overall["groups"][0] if overall["groups"] else None
    if not groups or total is None:
        out.append('<p class="empty">No assignments in this period.</p></section>')
        return "".join(out)
    out.append(f'<p class="lede">Sales contacted {fmt_percent(ratio(total["contacted"], total["assignments"]))} '
               f"of {fmt_int(total['assignments'])} assignments, "
               f"<strong>{fmt_percent(ratio(total['within_5m'], total['assignments']))} within 5 minutes</strong>. "
               f"Median response {fmt_duration(total.get('p50_s'))}; one in ten waited longer than "
               f"{fmt_duration(total.get('p90_s'))}.{caution(total['assignments'], 'assignments')}</p>")
    out.append(figure(charts.bar_chart(
        [str(g["key"]) for g in groups],
        [Series("contacted within 5 minutes", charts.BLUE,
                [ratio(g.get("within_5m"), g.get("assignments")) for g in groups])],
        title="Share of assignments contacted within 5 minutes",
        value_label=lambda v: fmt_percent(v, 0), axis_label="share of the owner's assignments",
        ticks=charts.percent_ticks,
    )))

    def count_share(n: int, of: int) -> str:
        return f"{fmt_int(n)} <span class=share>({fmt_percent(ratio(n, of), 0)})</span>"

    rows = [[esc(g["key"]), fmt_int(g["assignments"]), count_share(g["contacted"], g["assignments"]),
             count_share(g["within_5m"], g["assignments"]), fmt_duration(g.get("p50_s")),
             fmt_duration(g.get("p90_s"))] for g in groups]
    out.append(table([("Owner", False), ("Assigned", True), ("Contacted", True), ("≤ 5 min", True),
                       ("p50", True), ("p90", True)], rows))
    out.append('<p class="note">Time from each assignment to the lead\'s first contact after it and before '
               "any reassignment; p50 and p90 over the contacted ones.</p></section>")
    return "".join(out)


#: who qualified an MQL, as the report names them: in a table, and after "qualified"
SOURCE_NAMES = {"scorer": "Scorer (automatic)", "external": "Upstream score", "override": "Override"}
QUALIFIED_HOW = {"scorer": "by the scorer", "external": "on an upstream score", "override": "by override"}


def qualification_section(qualification: dict[str, Any]) -> str:
    """Per MQL source (scorer, upstream score, override): the MQL entries in the period, the leads
    they qualified, how many of those were won after, and that rate."""
    rows: list[dict[str, Any]] = qualification["sources"]
    total: dict[str, Any] = qualification["total"]
    out = ['<section id="qualification"><h2>Qualification: where MQLs come from</h2>']
    if not total["entries"]:
        out.append('<p class="empty">No MQLs in this period.</p></section>')
        return "".join(out)
    name = {r["source"]: SOURCE_NAMES.get(r["source"], r["source"]) for r in rows}
    how = {r["source"]: QUALIFIED_HOW.get(r["source"], r["source"]) for r in rows}
    shares = ", ".join(f"{fmt_percent(ratio(r['entries'], total['entries']), 0)} {esc(how[r['source']])}"
                       for r in rows if r["entries"])
    lede = (f"{fmt_int(total['entries'])} MQL entries qualified {fmt_int(total['leads'])} leads ({shares}); "
            f"{fmt_percent(total['rate'])} of those leads were won after.")
    rated = [r for r in rows if r["leads"]]
    if len(rated) > 1:
        best = max(rated, key=lambda r: (r["rate"], r["leads"]))
        lede += (f" Leads qualified <strong>{esc(how[best['source']])}</strong> were won most often: "
                 f"{fmt_percent(best['rate'])} of {fmt_int(best['leads'])}.{caution(best['leads'])}")
    out.append(f'<p class="lede">{lede}</p>')
    out.append(figure(charts.bar_chart(
        [name[r["source"]] for r in rated],
        [Series("MQL → won", charts.GREEN, [r["rate"] for r in rated])],
        title="MQL → won rate by source", value_label=lambda v: fmt_percent(v, 0),
        axis_label="share of the qualified leads won after", ticks=charts.percent_ticks,
        annotations=[f"n = {fmt_int(r['leads'])} leads" for r in rated],
    )))
    table_rows = [[esc(label), fmt_int(r["entries"]), fmt_int(r["leads"]), fmt_int(r["won"]), fmt_percent(r["rate"])]
                  for label, r in [*((name[r["source"]], r) for r in rows if r["entries"]), ("All sources", total)]]
    out.append(table([("Source", False), ("MQL entries", True), ("Leads", True), ("Won after", True),
                      ("MQL → won", True)], table_rows))
    out.append('<p class="note">MQL entries that occurred in the period, whatever the funnel mode; a lead '
               "qualified again later counts once more as an entry and once per source as a lead. "
               "Scorer: leadledger's scorer qualified the lead itself; upstream score: the lead's latest score, "
               "from upstream, reached the threshold; override: a person qualified it with a reason. Won after: "
               "the lead was won at or after one of those entries (by the as-of time), so a win may count for "
               "two sources. All sources counts each lead once.</p></section>")
    return "".join(out)


def sla_section(sla: dict[str, Any]) -> str:
    """Per SLA rule: started, met, breached, open, at risk, compliance, p50/p90 of the counted time to
    stop; nothing at all without a policy that has SLA rules."""
    if sla.get("note") or not sla["rules"]:
        return ""
    rows = sla["rules"]
    out = ['<section id="sla"><h2>SLA compliance by rule</h2>']
    judged = [r for r in rows if r["met"] + r["breached"]]
    if judged:
        worst = min(judged, key=lambda r: (r["compliance"], r["sla"]))
        lede = (f"The rule with the lowest compliance is <strong>{esc(worst['sla'])}</strong>: "
                f"{fmt_percent(worst['compliance'])} of its {fmt_int(worst['met'] + worst['breached'])} decided "
                f"clocks met the target.{caution(worst['met'] + worst['breached'], 'decided clocks')}")
    else:
        lede = "No clock has met or breached its target yet."
    at_risk = sum(r["at_risk"] for r in rows)
    if at_risk:
        lede += f" {fmt_int(at_risk)} open clock{'s are' if at_risk != 1 else ' is'} past the warning."
    out.append(f'<p class="lede">{lede}</p>')
    table_rows = [[esc(r["sla"]), fmt_int(r["started"]), fmt_int(r["met"]), fmt_int(r["breached"]),
                   fmt_int(r["open"]), fmt_int(r["at_risk"]), fmt_percent(r["compliance"]),
                   fmt_duration(r["p50_seconds"]), fmt_duration(r["p90_seconds"])] for r in rows]
    out.append(table([("Rule", False), ("Started", True), ("Met", True), ("Breached", True), ("Open", True),
                      ("At risk", True), ("Compliance", True), ("p50", True), ("p90", True)], table_rows))
    out.append('<p class="note">Clocks started in the period, judged at '
               f"{esc((sla.get('evaluated_at') or '')[:16].replace('T', ' '))} UTC with the policy version in force "
               "when each started. Compliance is met / (met + breached); a clock restarted before its deadline "
               "counts as started only. p50 and p90 are the counted time (working hours for a business clock) "
               "of the clocks that stopped.</p></section>")
    return "".join(out)
