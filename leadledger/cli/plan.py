"""`leadledger plan`: the deals, leads and stage entries a revenue target takes, from your own history."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from leadledger.answers import tidy
from leadledger.cli.common import (
    TIME,
    Context,
    emit_csv,
    emit_json,
    fail,
    output_format,
    output_options,
    pass_ctx,
)
from leadledger.cli.queries import PERIOD, _analytics, _when
from leadledger.cli.tables import literal, literal_table, show
from lifecycle.operations.policy import PolicyError, parse_policy
from projections.plan import DEFAULT_LOOKBACK, PlanQuery, parse_mix
from projections.query import LEAD_BYS, QueryError
from projections.report.charts import fmt_duration, fmt_percent


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else fmt_duration(value)


def render_plan(result: dict[str, Any]) -> None:
    cur = result["currency"]
    title = (f"plan: {_num(result['revenue'], 2)} {cur} in [{_when(result['period_from'], '')}, "
             f"{_when(result['period_to'], '')}), from the leads captured in [{_when(result['history_from'], '')}, "
             f"{_when(result['as_of'], '')}) (lookback {result['lookback']})")
    table = literal_table(literal(title))
    columns = ("captured", "won", "win rate (80 %)", f"per won ({cur})", "share", "deals", "leads (range)",
               "mql", "sal", "sql", "capture by")
    table.add_column(literal(result["by"] or "group"))
    for column in columns:
        table.add_column(literal(column), justify="right")
    for g in result["groups"]:
        rate = ("—" if g["win_rate"] is None else
                f"{fmt_percent(g['win_rate'])} ({fmt_percent(g['win_rate_low'])}–{fmt_percent(g['win_rate_high'])})")
        leads = ("—" if g["leads_needed"] is None else
                 f"{_num(g['leads_needed'])} ({_num(g['leads_needed_low'])}–{_num(g['leads_needed_high'])})")
        table.add_row(literal("all" if result["by"] is None else str(g["key"])), literal(_num(g["captured"])),
                      literal(_num(g["won"])), literal(rate), literal(_num(g["revenue_per_won"], 2)),
                      literal(fmt_percent(g["share"])), literal(_num(g["deals_needed"])), literal(leads),
                      literal(_num(g["mql_needed"])), literal(_num(g["sal_needed"])), literal(_num(g["sql_needed"])),
                      literal(_when(g["capture_by"], "—")))
    t = result["total"]
    if result["by"] is not None:
        table.add_row(literal("total"), literal(""), literal(""), literal(""), literal(""), literal(""),
                      literal(_num(t["deals_needed"])),
                      literal(f"{_num(t['leads_needed'])} ({_num(t['leads_needed_low'])}–{_num(t['leads_needed_high'])})"),
                      literal(_num(t["mql_needed"])), literal(_num(t["sal_needed"])), literal(_num(t["sql_needed"])),
                      literal(""))
    show(table)
    for g in result["groups"]:
        if g["why"]:
            click.echo(f"{'all' if result['by'] is None else g['key']}: not planned, {g['why']}")
    if t["target_unplanned"]:
        click.echo(f"{_num(t['target_unplanned'], 2)} {cur} of the target is on groups that cannot be planned")
    for code, amount in result["unconverted"].items():
        click.echo(f"not converted (no {code} rate on the won date): {_num(amount, 2)} {code}")
    c = result["capacity"]
    if c["why"] and c["sal_capacity"] is None and not result["reps"]:
        click.echo(f"capacity: {c['why']}")
        return
    line = (f"capacity (policy v{c['policy_version']}): " if c["policy_version"] else "capacity (policy file): ")
    line += (f"{_num(c['sal_needed'])} SALs needed over {_num(c['working_days'])} working days = "
             f"{_num(c['sal_per_working_day'], 1)} a day")
    if c["sal_capacity_per_working_day"] is not None:
        line += (f"; the reps take {_num(c['sal_capacity_per_working_day'], 1)} a day "
                 f"(leads stay open {_num(c['open_days'], 1)} days): "
                 f"{'fits' if c['fits'] else 'does NOT fit'} ({fmt_percent(c['utilization'])} used)")
    if c["why"]:
        line += f" ({c['why']})"
    click.echo(line)


@click.command()
@click.option("--revenue", type=float, required=True, help="The revenue target, in the reporting currency.")
@click.option("--period", type=PERIOD, required=True,
              help="The period the revenue is for, FROM..TO (dates = 00:00 UTC; TO exclusive).")
@click.option("--by", type=click.Choice(LEAD_BYS), help="Plan per capture channel or campaign (default: one group).")
@click.option("--lookback", default=DEFAULT_LOOKBACK, show_default=True,
              help="The history: leads captured this long before --as-of (Ns, Nm, Nh, Nd or Nw).")
@click.option("--as-of", type=TIME, help="Plan from the events that occurred at or before this time (default: now).")
@click.option("--mix", help="Share the target between groups yourself: group=share,... summing to 1 "
                            "(default: each group's share of the won revenue).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check the capacity against this policy file (default: the latest published policy).")
@output_options
@pass_ctx
def plan(ctx: Context, revenue: float, period: tuple[datetime, datetime], by: str | None, lookback: str,
         as_of: datetime | None, mix: str | None, policy_file: Path | None, as_json: bool, fmt: str | None) -> None:
    """Plan a revenue target from your own history: per group, the win rate of the leads captured in the
    lookback window (with its 80 % Wilson interval), revenue per won lead and revenue share, and from them
    the deals, leads (with a range) and MQL, SAL and SQL entries needed, and when the leads must be
    captured (the period's end minus the median time from capture to won). With a policy, the SALs needed
    per working day are checked against the reps' capacity. A group without wins cannot be planned and
    says why."""
    policy = None
    if policy_file is not None:
        try:
            policy = parse_policy(policy_file.read_text(encoding="utf-8"))
        except PolicyError as exc:
            fail(f"{policy_file}: {exc}", 2)
    try:
        q = PlanQuery(revenue=revenue, start=period[0], end=period[1], by=by, lookback=lookback, as_of=as_of,
                      mix=parse_mix(mix) if mix is not None else None)
        result = tidy(_analytics(ctx).plan(q, policy=policy))
    except QueryError as exc:
        fail(str(exc), 2)
    out = output_format(as_json, fmt)
    if out == "json":
        emit_json(result)
    elif out == "csv":
        emit_csv(result)
    else:
        render_plan(result)
