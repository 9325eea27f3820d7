"""The analyst's questions: `funnel`, `velocity`, `attribution`, `speed`, `sla`, `qualification`, `leads`,
`reasons` and the HTML `report`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.text import Text

from leadledger.answers import leads_answer, sla_answer, tidy, window_answer
from leadledger.bootstrap import open_analytics
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
from leadledger.cli.tables import literal, literal_table, show
from leadledger.csvout import long_rows
from lifecycle.domain.stages import FUNNEL_ORDER
from lifecycle.settings import SettingsError
from projections.plan import PlanQuery
from projections.query import (
    CONVERSIONS,
    INTERVALS,
    MODELS,
    MODES,
    REASON_BYS,
    REASON_STAGES,
    Query,
    QueryError,
)
from projections.report.charts import fmt_duration, fmt_percent
from projections.report.html import render_report

F = TypeVar("F", bound=Callable[..., Any])

WINDOW_HELP = (
    "cohort (default): the leads captured in [--from, --to); period: the measured event "
    "(stage entry, end of a stay, conversion, assignment) occurred in [--from, --to)."
)


def _analytics(ctx: Context) -> Any:
    try:
        analytics = open_analytics(ctx.check_store())
    except SettingsError as exc:
        fail(str(exc), 2)
    click.get_current_context().call_on_close(analytics.close)
    return analytics


def window_options(bys: tuple[str, ...]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option("--by", type=click.Choice(bys),
                         help="Group by this (default: no grouping, key null). Channel and campaign keys are "
                              "trimmed and lower-case: they are normalized at capture and on touches."),
            click.option("--from", "from_", type=TIME, help="Window start, inclusive (date = 00:00 UTC)."),
            click.option("--to", "to", type=TIME, help="Window end, exclusive."),
            click.option("--mode", type=click.Choice(MODES), default="cohort", show_default=True, help=WINDOW_HELP),
            click.option("--as-of", type=TIME, help="Only events that occurred at or before this time."),
            click.option("--known-at", type=TIME,
                         help="...and were recorded at or before this time (exact)."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _answer(ask: Callable[[], dict[str, Any]], out: str, render: Callable[[dict[str, Any]], None],
            shape: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    try:
        result = shape(ask())
    except QueryError as exc:
        fail(str(exc), 2)
    if out == "json":
        emit_json(result)
    elif out == "csv":
        emit_csv(result)
    else:
        render(result)


# ---------------------------------------------------------------- rendering


def _when(value: str | None, empty: str) -> str:
    """An answer's time for a title: the date alone at midnight, else to the second."""
    if value is None:
        return empty
    if value.endswith("T00:00:00.000000Z"):
        return value[:10]
    return value[:19].replace("T", " ") + ("Z" if value.endswith("Z") else "")


def _title(result: dict[str, Any], what: str) -> Text:
    """What the table shows and the window it covers; every value literal."""
    parts = [what]
    if result.get("mode"):
        parts.append(f"mode {result['mode']}")
    if result.get("from") or result.get("to"):
        parts.append(f"[{_when(result.get('from'), '-inf')}, {_when(result.get('to'), '+inf')})")
    parts.append(f"as of {_when(result['as_of'], 'now')}")
    if result.get("known_at"):
        parts.append(f"known at {_when(result['known_at'], '')}")
    return literal(", ".join(parts))


def _key(group: dict[str, Any]) -> Text:
    return literal("all" if group["key"] is None else group["key"])


def _print(table: Any) -> None:
    show(table)


def render_funnel(result: dict[str, Any]) -> None:
    table = literal_table(_title(result, "funnel (distinct leads)"))
    table.add_column(literal(result["by"] or ""))
    for s in FUNNEL_ORDER:
        table.add_column(s.value, justify="right")
    table.add_column("captured->won", justify="right")
    for g in result["groups"]:
        stages = g["stages"]
        overall = stages["won"] / stages["captured"] if stages["captured"] else None
        table.add_row(_key(g), *(literal(stages[s.value]) for s in FUNNEL_ORDER),
                      literal(fmt_percent(overall)))
    _print(table)
    what = ("conversion along the main path" if result.get("mode") != "period"
            else "period ratios: entered b / entered a (not the same leads)")
    conv = literal_table(literal(what))
    conv.add_column(literal(result["by"] or ""))
    names = ["captured->mql", "mql->sal", "sal->sql", "sql->won"]
    for n in names:
        conv.add_column(n, justify="right")
    for g in result["groups"]:
        conv.add_row(_key(g), *(literal(fmt_percent(g["conversion"][n])) for n in names))
    _print(conv)


def render_velocity(result: dict[str, Any]) -> None:
    for g in result["groups"]:
        label = f" — {result['by']} {g['key']}" if result["by"] else ""
        table = literal_table(_title(result, f"velocity{label}"))
        for col in ("", "stage", "count", "mean", "p50", "p90"):
            table.add_column(col, justify="left" if col in ("", "stage") else "right")
        for kind in ("time_in_stage", "time_to_stage"):
            for stage, st in g[kind].items():
                table.add_row(kind.replace("_", " "), literal(stage), literal(st["count"]),
                              literal(fmt_duration(st["mean_s"])), literal(fmt_duration(st["p50_s"])),
                              literal(fmt_duration(st["p90_s"])))
        _print(table)


def _amounts(amounts: dict[str, float] | None) -> str:
    """Amounts in their own currencies, side by side (never added): `USD 1,234.50 · SGD 99.00`."""
    return " · ".join(f"{currency} {amount:,.2f}" for currency, amount in (amounts or {}).items()) or "-"


def render_attribution(result: dict[str, Any]) -> None:
    title = _title(result, f"attribution of {result['conversion']} conversions, model {result['model']}")
    table = literal_table(title)
    table.add_column(literal(result["by"] or ""))
    table.add_column("conversions", justify="right")
    currency = result.get("currency") or ""
    table.add_column(literal(f"revenue ({currency})" if currency else "revenue"), justify="right")
    # amounts with no rate on their won date: per currency, never part of the revenue column
    unconverted = any(g.get("unconverted") for g in result["groups"])
    if unconverted:
        table.add_column("not converted (no rate)", justify="right")
    for g in result["groups"]:
        revenue = "-" if g["revenue"] is None else f"{g['revenue']:,.2f}"
        cells = [_key(g), literal(f"{g['conversions']:.2f}"), literal(revenue)]
        if unconverted:
            cells.append(literal(_amounts(g.get("unconverted"))))
        table.add_row(*cells)
    _print(table)


def render_speed(result: dict[str, Any]) -> None:
    table = literal_table(_title(result, "speed to lead"))
    for col in (result["by"] or "", "assignments", "contacted", "within 5m", "p50", "p90"):
        table.add_column(literal(col), justify="left" if col == (result["by"] or "") else "right")
    for g in result["groups"]:
        table.add_row(_key(g), literal(g["assignments"]), literal(g["contacted"]), literal(g["within_5m"]),
                      literal(fmt_duration(g["p50_s"])), literal(fmt_duration(g["p90_s"])))
    _print(table)
    split = literal_table(literal("system delay (capture or routing-stage entry -> assignment) and human delay "
                                  "(assignment -> contact)"))
    for col in (result["by"] or "", "waits", "system p50", "system p90", "contacted", "human p50", "human p90"):
        split.add_column(literal(col), justify="left" if col == (result["by"] or "") else "right")
    for g in result["groups"]:
        system, human = g["system_delay"], g["human_delay"]
        split.add_row(_key(g), literal(system["count"]), literal(fmt_duration(system["p50_s"])),
                      literal(fmt_duration(system["p90_s"])), literal(human["count"]),
                      literal(fmt_duration(human["p50_s"])), literal(fmt_duration(human["p90_s"])))
    _print(split)


def render_sla(result: dict[str, Any]) -> None:
    if result.get("note"):
        click.echo(result["note"])
        return
    by_owner = result["by"] == "owner"
    title = _title(result, f"SLA clocks started in the window, by {result['by']}")
    title.append(literal(f", judged at {_when(result['evaluated_at'], 'now')}"))
    table = literal_table(title)
    columns = ["sla", *(["owner"] if by_owner else []), "started", "met", "breached", "restarted", "open",
               "at risk", "compliance", "p50", "p90"]
    for col in columns:
        table.add_column(literal(col), justify="left" if col in ("sla", "owner") else "right")
    for row in result["rules"]:
        owner = [literal("-" if row["group"] is None else row["group"])] if by_owner else []
        table.add_row(literal(row["sla"]), *owner, *(literal(row[k]) for k in (
            "started", "met", "breached", "restarted", "open", "at_risk")),
            literal(fmt_percent(row["compliance"])), literal(fmt_duration(row["p50_seconds"])),
            literal(fmt_duration(row["p90_seconds"])))
    _print(table)


def render_qualification(result: dict[str, Any]) -> None:
    table = literal_table(_title(result, "MQL entries in the window by source"))
    for col in ("source", "entries", "leads", "won after", "mql -> won"):
        table.add_column(literal(col), justify="left" if col == "source" else "right")
    for row in [*result["sources"], result["total"]]:
        table.add_row(literal(row["source"]), *(literal(row[k]) for k in ("entries", "leads", "won")),
                      literal(fmt_percent(row["rate"])))
    _print(table)


def _leads_renderer(filters: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def render(result: dict[str, Any]) -> None:
        when = f"as of {_when(result['as_of'], 'now')}" + (
            f", known at {_when(result['known_at'], '')}" if result.get("known_at") else "")
        if not result["leads"]:
            given = ", ".join(f"{k} {v!r}" for k, v in filters.items() if v is not None)
            click.echo(f"no leads{' with ' + given if given else ''} {when}")
            return
        table = literal_table(f"leads, newest first, {when}")
        for col in ("lead", "stage", "owner", "score", "channel", "campaign", "captured (UTC)", "last change (UTC)"):
            table.add_column(col, overflow="fold")
        for item in result["leads"]:
            table.add_row(*(literal(v) for v in (
                item["lead_id"], item["stage"] or "-", item["owner"] or "-",
                "-" if item["score"] is None else item["score"], item["channel"] or "-", item["campaign"] or "-",
                (item["captured_at"] or "")[:19].replace("T", " "),
                (item["last_change_at"] or "")[:19].replace("T", " "))))
        _print(table)

    return render


#: what each `reasons --stage` counts, for the table's title
REASONS_OF = {"lost": "leads lost", "disqualified": "leads disqualified",
              "recycled": "leads recycled (rejections by sales included)", "rejected": "leads rejected by sales"}


def render_reasons(result: dict[str, Any]) -> None:
    """One row per group and reason: its count and its share of the group's events."""
    title = _title(result, f"reasons: {REASONS_OF[result['stage']]}, {result['events']} events")
    if not result["groups"]:
        click.echo(title.plain)
        click.echo("no events in the window")
        return
    table = literal_table(title)
    by = result["by"]
    columns = [*([by] if by else []), "reason", "count", "share"]
    for col in columns:
        table.add_column(literal(col), justify="right" if col in ("count", "share") else "left")
    for g in result["groups"]:
        name = "(no owner)" if g["key"] is None else g["key"]  # only an owner can be missing
        for i, r in enumerate(g["reasons"]):
            key = [literal(f"{name} ({g['events']})" if i == 0 else "")] if by else []
            table.add_row(*key, literal(r["reason"]), literal(r["count"]), literal(fmt_percent(r["share"])))
    _print(table)


def render_drill(result: dict[str, Any]) -> None:
    """A page of a funnel cell's leads, and how to ask for the next page."""
    group = f", {result['by']} {result['key']}" if result.get("by") else ""
    title = _title(result, f"leads counted in the funnel's {result['reached']}{group}, by the entry that counted")
    if not result["leads"]:
        click.echo(title.plain.replace("leads counted", "no leads", 1))
        return
    table = literal_table(title)
    for col in ("lead", "entered (UTC)", "stage", "owner", "score", "channel", "campaign", "captured (UTC)"):
        table.add_column(col, overflow="fold")
    for item in result["leads"]:
        table.add_row(*(literal(v) for v in (
            item["lead_id"], (item["entered_at"] or "")[:19].replace("T", " "), item["stage"] or "-",
            item["owner"] or "-", "-" if item["score"] is None else item["score"], item["channel"] or "-",
            item["campaign"] or "-", (item["captured_at"] or "")[:19].replace("T", " "))))
    _print(table)
    if result["next"]:
        click.echo(f"more: the next page with --after {result['next']}")


# ---------------------------------------------------------------- trends and comparisons


class PeriodParam(click.ParamType):
    """FROM..TO: two dates or times, as --from/--to take them."""

    name = "FROM..TO"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value)
        if ".." not in text:
            self.fail(f"{text!r}: give the period as FROM..TO (e.g. 2026-07-01..2026-10-01)", param, ctx)
        start, _, end = text.partition("..")
        return TIME.convert(start.strip(), param, ctx), TIME.convert(end.strip(), param, ctx)


PERIOD = PeriodParam()


class CompareParam(click.ParamType):
    """`previous`, or the other window as FROM..TO (dates or times, as --from/--to)."""

    name = "previous|FROM..TO"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple) or value == "previous":
            return value
        text = str(value)
        if text.strip().lower() == "previous":
            return "previous"
        if ".." not in text:
            self.fail(f"{text!r}: give previous, or the other window as FROM..TO (e.g. 2026-01-01..2026-04-01)",
                      param, ctx)
        return PERIOD.convert(text, param, ctx)


COMPARE = CompareParam()




def compare_option(func: F) -> F:
    return click.option(
        "--compare-to", "compare_to", type=COMPARE,
        help="Also answer for another window and show the differences (this window minus that one): "
             "previous = the window of the same length just before --from (whole calendar months when --from and "
             "--to are the 1st of a month, so a quarter compares with the previous quarter), or FROM..TO.")(func)


def _signed(value: Any, fmt: Callable[[float | None], str]) -> str:
    if value is None:
        return "–"
    return ("+" if value > 0 else "-" if value < 0 else "±") + fmt(abs(value))


def _figure_format(figure: str) -> Callable[[float | None], str]:
    if figure.endswith("_s"):
        return fmt_duration
    if figure.startswith("conversion.") or figure.endswith(("rate", "share", "compliance")):
        return fmt_percent
    return lambda v: "–" if v is None else f"{v:,.2f}".rstrip("0").rstrip(".")


def render_comparison(result: dict[str, Any], render: Callable[[dict[str, Any]], None]) -> None:
    """Both windows with their own tables, then every figure side by side with the difference."""
    current = {k: v for k, v in result.items() if k not in ("compare", "difference")}
    render(current)
    render({**current, **result["compare"]})
    _, rows = long_rows({"by": result.get("by"), "groups": current["groups"]})
    _, theirs = long_rows({"by": result.get("by"), "groups": result["compare"]["groups"]})
    _, diffs = long_rows({"by": result.get("by"), "groups": result["difference"]["groups"]})
    other = {(r.get("key"), r["figure"]): r["value"] for r in theirs}
    mine = {(r.get("key"), r["figure"]): r["value"] for r in rows}
    window = f"[{_when(result['compare']['from'], '-inf')}, {_when(result['compare']['to'], '+inf')})"
    table = literal_table(literal(f"this window minus {window}"))
    for col in (result["by"] or "", "figure", "this window", "that window", "difference"):
        table.add_column(literal(col), justify="left" if col in (result["by"] or "", "figure") else "right")
    for r in diffs:
        if not isinstance(r["value"], int | float | None) or isinstance(r["value"], bool):
            continue
        key = (r.get("key"), r["figure"])
        fmt = _figure_format(r["figure"])
        table.add_row(literal("all" if r.get("key") is None else r["key"]), literal(r["figure"]),
                      literal(fmt(mine.get(key))), literal(fmt(other.get(key))), literal(_signed(r["value"], fmt)))
    _print(table)


def render_trend(result: dict[str, Any]) -> None:
    """One row per interval (and group): the leads per stage."""
    kind = "ISO week" if result["interval"] == "week" else "UTC month"
    what = "captured in the interval" if result.get("mode") != "period" else "entering in the interval"
    table = literal_table(literal(f"trend per {kind} (distinct leads {what})"))
    table.add_column(literal(result["interval"]))
    if result["by"]:
        table.add_column(literal(result["by"]))
    for s in FUNNEL_ORDER:
        table.add_column(s.value, justify="right")
    for iv in result["intervals"]:
        for g in iv["groups"]:
            cells = [literal(iv["label"])] + ([_key(g)] if result["by"] else [])
            table.add_row(*cells, *(literal(g["stages"][s.value]) for s in FUNNEL_ORDER))
    _print(table)


def _with_extras(render: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def show_all(result: dict[str, Any]) -> None:
        if "compare" in result:
            render_comparison(result, render)
            return
        render(result)
        if "intervals" in result:
            render_trend(result)

    return show_all


# ---------------------------------------------------------------- queries


@click.command()
@window_options(("channel", "campaign", "owner"))
@click.option("--interval", type=click.Choice(INTERVALS),
              help="Also one funnel per ISO week (Monday 00:00 UTC) or UTC calendar month of the window: leads "
                   "captured in it (cohort) or entering a stage in it (period). Without --from/--to the window "
                   "runs from the first to the last interval with data.")
@compare_option
@output_options
@pass_ctx
def funnel(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
           as_of: datetime | None, known_at: datetime | None, interval: str | None, compare_to: Any,
           as_json: bool, fmt: str | None) -> None:
    """Distinct leads that entered each stage, and conversion along captured->mql->sal->sql->won.

    --by owner counts each stage entry under the owner the lead had when it entered the stage (the
    accepting owner for sal; none for a capture or an entry before any assignment), so a lead can
    count under different owners at different stages."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, interval=interval,
              compare_to=compare_to)
    _answer(lambda: _analytics(ctx).funnel(q), output_format(as_json, fmt), _with_extras(render_funnel),
            lambda r: window_answer(r, q))


@click.command()
@window_options(("channel", "campaign"))
@compare_option
@output_options
@pass_ctx
def velocity(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
             as_of: datetime | None, known_at: datetime | None, compare_to: Any, as_json: bool,
             fmt: str | None) -> None:
    """Time in each stage (completed stays) and time from capture to first mql/sal/sql/won.

    Each reports count, mean, p50, p90 (exact nearest-rank) in seconds."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, compare_to=compare_to)
    _answer(lambda: _analytics(ctx).velocity(q), output_format(as_json, fmt), _with_extras(render_velocity),
            lambda r: window_answer(r, q))


@click.command()
@window_options(("channel", "campaign"))
@click.option("--model", type=click.Choice(MODELS), default="linear", show_default=True,
              help="How a conversion's credit is split over its touches.")
@click.option("--conversion", type=click.Choice(CONVERSIONS), default="won", show_default=True,
              help="The stage whose every entry is a conversion (revenue only for won).")
@compare_option
@output_options
@pass_ctx
def attribution(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
                as_of: datetime | None, known_at: datetime | None, model: str, conversion: str,
                compare_to: Any, as_json: bool, fmt: str | None) -> None:
    """Conversions (and won revenue) credited to the touches' channels or campaigns.

    A conversion's touches are the capture and touches after the lead's previous
    entry into that stage; with none, its latest earlier touch. Revenue sums won
    amounts times credit in the reporting currency (LEADLEDGER_REPORTING_CURRENCY,
    default EUR), each converted at the rate in effect on its won date (the [fx]
    table of LEADLEDGER_FX_FILE). An amount whose currency has no rate then is
    never added in: it is listed per currency as not converted ("unconverted" in
    --json). Channel and campaign keys are trimmed and lower-case (normalized at
    capture and on touches)."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, model=model,
              conversion=conversion, compare_to=compare_to)
    _answer(lambda: _analytics(ctx).attribution(q), output_format(as_json, fmt), _with_extras(render_attribution),
            lambda r: window_answer(r, q))


@click.command()
@window_options(("owner", "channel", "campaign"))
@compare_option
@output_options
@pass_ctx
def speed(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
          as_of: datetime | None, known_at: datetime | None, compare_to: Any, as_json: bool,
          fmt: str | None) -> None:
    """Speed to lead: assignments, contacted, within 5 minutes (<= 300 s), p50/p90 response.

    A reassignment before any contact leaves the earlier assignment uncontacted.
    Use --by owner for the table per sales rep. A second table splits the system
    delay (an ownerless lead's capture, or its entry into a routing stage while a
    policy with [routing] is in force, -> its assignment) from the human delay
    (assignment -> first contact)."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, compare_to=compare_to)
    _answer(lambda: _analytics(ctx).speed(q), output_format(as_json, fmt), _with_extras(render_speed),
            lambda r: window_answer(r, q))


@click.command()
@click.option("--by", type=click.Choice(("rule", "owner")), default="rule", show_default=True,
              help="One row per rule, or per rule and owner (the owner at the deadline when breached, "
                   "else at the clock's end).")
@click.option("--from", "from_", type=TIME, help="Clocks started at or after this (date = 00:00 UTC).")
@click.option("--to", "to", type=TIME, help="...and before this.")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time; clocks judged then.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time (and the policy "
                                            "versions published by then).")
@output_options
@pass_ctx
def sla(ctx: Context, by: str, from_: datetime | None, to: datetime | None, as_of: datetime | None,
        known_at: datetime | None, as_json: bool, fmt: str | None) -> None:
    """SLA compliance of the clocks started in [--from, --to): started, met, breached, restarted, open,
    at risk (open and past the warning), compliance = met / (met + breached), and p50/p90 (nearest
    rank) of the time a clock counted until its stop.

    Each clock is judged with the policy version in force when its start was recorded, as of --as-of
    (default: now); a business clock counts only working hours of its calendar."""
    q = Query(by=by, from_=from_, to=to, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).sla(q), output_format(as_json, fmt), render_sla, lambda r: sla_answer(r, q))


@click.command()
@click.option("--from", "from_", type=TIME, help="MQL entries that occurred at or after this (date = 00:00 UTC).")
@click.option("--to", "to", type=TIME, help="...and before this.")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time (exact).")
@output_options
@pass_ctx
def qualification(ctx: Context, from_: datetime | None, to: datetime | None, as_of: datetime | None,
                  known_at: datetime | None, as_json: bool, fmt: str | None) -> None:
    """MQLs by source and the MQL -> won rate of each: per source, the MQL entries in [--from, --to),
    the distinct leads they qualified, how many of those were won at or after one of them, and
    won / leads.

    Sources: scorer (leadledger's scorer qualified the lead), override (a person, with a reason),
    external (the guard passed on a score from upstream). A row `all` counts each lead once."""
    q = Query(from_=from_, to=to, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).qualification(q), output_format(as_json, fmt), render_qualification, tidy)


@click.command(name="leads")
@click.option("--stage", type=click.Choice([s.value for s in FUNNEL_ORDER], case_sensitive=False),
              help="Only leads in this stage (any case).")
@click.option("--channel", help="Only leads captured on this channel (any case: channels are stored "
                                "trimmed and lower-case).")
@click.option("--owner", help="Only leads owned by this owner.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many leads.")
@click.option("--as-of", type=TIME, help="The list as it was at this time.")
@click.option("--known-at", type=TIME, help="...counting only events recorded by then.")
@click.option("--reached", type=click.Choice([s.value for s in FUNNEL_ORDER], case_sensitive=False),
              help="Drill down: exactly the leads the funnel counts in this stage (any case), of its window "
                   "(--mode, --from, --to, --as-of, --known-at) and group (--by, --key), ordered by the entry "
                   "that counted, then lead id; page with --limit and --after.")
@click.option("--mode", type=click.Choice(MODES), help="With --reached: the funnel's mode (default cohort). "
                                                       + WINDOW_HELP)
@click.option("--from", "from_", type=TIME, help="With --reached: the funnel's window start, inclusive.")
@click.option("--to", "to", type=TIME, help="With --reached: the funnel's window end, exclusive.")
@click.option("--by", type=click.Choice(("channel", "campaign", "owner")),
              help="With --reached and --key: the cell of one group of `funnel --by` (default: every lead).")
@click.option("--key", help="With --by: the group's key as the funnel shows it (channel and campaign in any case, "
                            "an owner exactly); (none) is the leads captured without a campaign, or the entries "
                            "without an owner.")
@click.option("--after", help="With --reached: the page after the one whose `next` this is (printed under the "
                              "table).")
@output_options
@pass_ctx
def leads_command(ctx: Context, stage: str | None, channel: str | None, owner: str | None, limit: int,
                  as_of: datetime | None, known_at: datetime | None, reached: str | None, mode: str | None,
                  from_: datetime | None, to: datetime | None, by: str | None, key: str | None, after: str | None,
                  as_json: bool, fmt: str | None) -> None:
    """Lead list, newest capture first: stage, owner, latest score, source channel and campaign.

    With --reached STAGE, the leads one funnel cell counts instead (`funnel` with the same --mode,
    --from, --to, --as-of, --known-at; --by and --key for one group's cell), each with the time of
    the entry that counted and its stage and owner (as of --as-of): as many as the funnel says."""
    stage = stage.lower() if stage else None
    q = Query(stage=stage, channel=channel, owner=owner, limit=limit, as_of=as_of, known_at=known_at,
              reached=reached.lower() if reached else None, mode=mode or "cohort", from_=from_, to=to, by=by,
              key=key, after=after)
    plain = _leads_renderer({"stage": stage, "channel": channel, "owner": owner})
    _answer(lambda: _analytics(ctx).leads(q), output_format(as_json, fmt),
            lambda r: render_drill(r) if "reached" in r else plain(r),
            lambda r: window_answer(r, q) if "reached" in r else leads_answer(r, q))


@click.command()
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the page to this file ('-' for stdout).")
@click.option("--from", "from_", type=TIME, help="Period start (inclusive).")
@click.option("--to", type=TIME, help="Period end (exclusive).")
@click.option("--mode", type=click.Choice(MODES), default="cohort", show_default=True,
              help="Funnel mode: leads captured in the period, or stage entries in the period.")
@click.option("--model", type=click.Choice(MODELS), default="linear", show_default=True,
              help="Attribution model.")
@click.option("--conversion", type=click.Choice(CONVERSIONS), default="won", show_default=True,
              help="The stage whose entries attribution credits.")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time.")
@click.option("--plan-revenue", type=float, help="Add a plan section: what this revenue target (reporting currency) "
                                                 "takes per channel, next to the period before (needs --plan-period).")
@click.option("--plan-period", type=PERIOD, help="The period the plan's revenue is for, FROM..TO.")
@pass_ctx
def report(ctx: Context, html_path: Path, from_: datetime | None, to: datetime | None, mode: str, model: str,
           conversion: str, as_of: datetime | None, known_at: datetime | None, plan_revenue: float | None,
           plan_period: tuple[datetime, datetime] | None) -> None:
    """One self-contained HTML page (inline charts, no scripts) with the funnel and its trend per week or
    month, time in stage, attribution by channel, speed to lead by owner, qualification and SLAs; with
    --plan-revenue and --plan-period also the plan per channel."""
    query = Query(from_=from_, to=to, mode=mode, model=model, conversion=conversion, as_of=as_of,
                  known_at=known_at)
    if (plan_revenue is None) != (plan_period is None):
        fail("--plan-revenue and --plan-period go together: give both for a plan section, or neither", 2)
    plan = None if plan_revenue is None or plan_period is None else PlanQuery(
        revenue=plan_revenue, start=plan_period[0], end=plan_period[1])
    try:
        analytics = open_analytics(ctx.check_store(), auto_refresh=False)  # one refresh: one snapshot
    except SettingsError as exc:
        fail(str(exc), 2)
    try:
        analytics.refresh()
        page = render_report(analytics, query, plan=plan)
    except QueryError as exc:
        fail(str(exc), 2)
    finally:
        analytics.close()
    if str(html_path) == "-":
        sys.stdout.write(page)
        return
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    click.echo(f"report written to {html_path.resolve()}")


@click.command()
@click.option("--stage", required=True, type=click.Choice(REASON_STAGES, case_sensitive=False),
              help="Whose reasons: lost (LeadLost), disqualified (LeadDisqualified), recycled (every event entering "
                   "recycled: LeadRecycled and LeadRejectedBySales) or rejected (LeadRejectedBySales alone: sales "
                   "handed the lead back, which enters recycled). Any case.")
@click.option("--by", type=click.Choice(REASON_BYS),
              help="Group by the channel or campaign of the lead's capture, or the owner the lead had at the event "
                   "(before a rejection or a recycle cleared it; no owner: key null). Default: one group, key null.")
@click.option("--from", "from_", type=TIME, help="Events that occurred at or after this (date = 00:00 UTC).")
@click.option("--to", "to", type=TIME, help="...and before this.")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time (and leads captured by "
                                         "then).")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time (exact).")
@output_options
@pass_ctx
def reasons(ctx: Context, stage: str, by: str | None, from_: datetime | None, to: datetime | None,
            as_of: datetime | None, known_at: datetime | None, as_json: bool, fmt: str | None) -> None:
    """Why leads were lost, disqualified, recycled or rejected: the reasons given by the events entering
    the stage that occurred in [--from, --to), one per event, counted exactly as stored, most frequent
    first (then by reason), each with its share of the group's events.

    recycled counts every event entering recycled: LeadRecycled and LeadRejectedBySales (sales handed
    the lead back); rejected counts LeadRejectedBySales alone."""
    q = Query(stage=stage.lower(), by=by, from_=from_, to=to, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).reasons(q), output_format(as_json, fmt), render_reasons, tidy)
