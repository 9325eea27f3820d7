"""The analyst's questions: `funnel`, `velocity`, `attribution`, `speed`, `leads` and the HTML `report`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from leadledger.bootstrap import open_analytics
from leadledger.cli.common import TIME, Context, emit_json, fail, json_option, pass_ctx
from leadledger.cli.tables import console
from lifecycle.domain.stages import FUNNEL_ORDER
from lifecycle.settings import SettingsError
from projections.query import CONVERSIONS, MODELS, MODES, Query, QueryError
from projections.report.html import render_report

F = TypeVar("F", bound=Callable[..., Any])

WINDOW_HELP = (
    "cohort (default): the leads captured in [--from, --to); period: the measured event "
    "(stage entry, end of a stay, conversion, assignment) occurred in [--from, --to)."
)


def _analytics(ctx: Context) -> Any:
    try:
        analytics = open_analytics(ctx.settings)
    except SettingsError as exc:
        fail(str(exc), 2)
    click.get_current_context().call_on_close(analytics.close)
    return analytics


def window_options(bys: tuple[str, ...]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option("--by", type=click.Choice(bys), help="Group by this (default: no grouping, key null)."),
            click.option("--from", "from_", type=TIME, help="Window start, inclusive (date = 00:00 UTC)."),
            click.option("--to", "to", type=TIME, help="Window end, exclusive."),
            click.option("--mode", type=click.Choice(MODES), default="cohort", show_default=True, help=WINDOW_HELP),
            click.option("--as-of", type=TIME, help="Only events that occurred at or before this time."),
            click.option("--known-at", type=TIME,
                         help="...and were recorded at or before this time (exact, slower)."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _answer(ask: Callable[[], dict[str, Any]], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    try:
        result = ask()
    except QueryError as exc:
        fail(str(exc), 2)
        return
    if as_json:
        emit_json(result)
    else:
        render(result)


# ---------------------------------------------------------------- rendering


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    if value < 172800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def _title(result: dict[str, Any], what: str) -> str:
    parts = [what]
    if result.get("mode"):
        parts.append(f"mode {result['mode']}")
    if result.get("from") or result.get("to"):
        parts.append(f"[{result.get('from') or '-inf'}, {result.get('to') or '+inf'})")
    parts.append(f"as of {result['as_of'] or 'now'}")
    return ", ".join(parts)


def _print(table: Any) -> None:
    console().print(table)


def render_funnel(result: dict[str, Any]) -> None:
    table = Table(title=_title(result, "funnel (distinct leads)"), title_justify="left")
    table.add_column(result["by"] or "")
    for s in FUNNEL_ORDER:
        table.add_column(s.value, justify="right")
    table.add_column("captured->won", justify="right")
    for g in result["groups"]:
        stages = g["stages"]
        overall = stages["won"] / stages["captured"] if stages["captured"] else None
        table.add_row(g["key"] or "all", *(str(stages[s.value]) for s in FUNNEL_ORDER),
                      "-" if overall is None else f"{overall:.1%}")
    _print(table)
    conv = Table(title="conversion along the main path", title_justify="left")
    conv.add_column(result["by"] or "")
    names = ["captured->mql", "mql->sal", "sal->sql", "sql->won"]
    for n in names:
        conv.add_column(n, justify="right")
    for g in result["groups"]:
        conv.add_row(g["key"] or "all", *("-" if g["conversion"][n] is None else f"{g['conversion'][n]:.1%}"
                                          for n in names))
    _print(conv)


def render_velocity(result: dict[str, Any]) -> None:
    for g in result["groups"]:
        label = f" — {result['by']} {g['key']}" if result["by"] else ""
        table = Table(title=_title(result, f"velocity{label}"), title_justify="left")
        for col in ("", "stage", "count", "mean", "p50", "p90"):
            table.add_column(col, justify="left" if col in ("", "stage") else "right")
        for kind in ("time_in_stage", "time_to_stage"):
            for stage, st in g[kind].items():
                table.add_row(kind.replace("_", " "), stage, str(st["count"]), _fmt_s(st["mean_s"]),
                              _fmt_s(st["p50_s"]), _fmt_s(st["p90_s"]))
        _print(table)


def render_attribution(result: dict[str, Any]) -> None:
    title = _title(result, f"attribution of {result['conversion']} conversions, model {result['model']}")
    table = Table(title=title, title_justify="left")
    table.add_column(result["by"] or "")
    table.add_column("conversions", justify="right")
    table.add_column("revenue", justify="right")
    for g in result["groups"]:
        revenue = "-" if g["revenue"] is None else f"{g['revenue']:,.2f}"
        table.add_row(g["key"] or "all", f"{g['conversions']:.2f}", revenue)
    _print(table)


def render_speed(result: dict[str, Any]) -> None:
    table = Table(title=_title(result, "speed to lead"), title_justify="left")
    for col in (result["by"] or "", "assignments", "contacted", "within 5m", "p50", "p90"):
        table.add_column(col, justify="left" if col == (result["by"] or "") else "right")
    for g in result["groups"]:
        table.add_row(g["key"] or "all", str(g["assignments"]), str(g["contacted"]), str(g["within_5m"]),
                      _fmt_s(g["p50_s"]), _fmt_s(g["p90_s"]))
    _print(table)


def render_leads(result: dict[str, Any]) -> None:
    table = Table(title=f"leads, newest first, as of {result['as_of'] or 'now'}", title_justify="left")
    for col in ("lead", "stage", "owner", "score", "channel", "campaign", "captured (UTC)", "last change (UTC)"):
        table.add_column(col, overflow="fold")
    for item in result["leads"]:
        table.add_row(item["lead_id"], item["stage"] or "-", item["owner"] or "-",
                      "-" if item["score"] is None else str(item["score"]), item["channel"] or "-",
                      item["campaign"] or "-", (item["captured_at"] or "")[:19].replace("T", " "),
                      (item["last_change_at"] or "")[:19].replace("T", " "))
    _print(table)


# ---------------------------------------------------------------- queries


@click.command()
@window_options(("channel", "campaign"))
@json_option
@pass_ctx
def funnel(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
           as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Distinct leads that entered each stage, and conversion along captured->mql->sal->sql->won."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).funnel(q), as_json, render_funnel)


@click.command()
@window_options(("channel", "campaign"))
@json_option
@pass_ctx
def velocity(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
             as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Time in each stage (completed stays) and time from capture to first mql/sal/sql/won.

    Each reports count, mean, p50, p90 (exact nearest-rank) in seconds."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).velocity(q), as_json, render_velocity)


@click.command()
@window_options(("channel", "campaign"))
@click.option("--model", type=click.Choice(MODELS), default="linear", show_default=True,
              help="How a conversion's credit is split over its touches.")
@click.option("--conversion", type=click.Choice(CONVERSIONS), default="won", show_default=True,
              help="The stage whose every entry is a conversion (revenue only for won).")
@json_option
@pass_ctx
def attribution(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
                as_of: datetime | None, known_at: datetime | None, model: str, conversion: str,
                as_json: bool) -> None:
    """Conversions (and won revenue) credited to the touches' channels or campaigns.

    A conversion's touches are the capture and touches after the lead's previous
    entry into that stage; with none, its latest earlier touch. Revenue sums won
    amounts times credit, whatever their currency."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, model=model,
              conversion=conversion)
    _answer(lambda: _analytics(ctx).attribution(q), as_json, render_attribution)


@click.command()
@window_options(("owner", "channel", "campaign"))
@json_option
@pass_ctx
def speed(ctx: Context, by: str | None, from_: datetime | None, to: datetime | None, mode: str,
          as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Speed to lead: assignments, contacted, within 5 minutes (<= 300 s), p50/p90 response.

    A reassignment before any contact leaves the earlier assignment uncontacted.
    Use --by owner for the table per sales rep."""
    q = Query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).speed(q), as_json, render_speed)


@click.command(name="leads")
@click.option("--stage", help="Only leads in this stage.")
@click.option("--channel", help="Only leads captured on this channel.")
@click.option("--owner", help="Only leads owned by this owner.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many leads.")
@click.option("--as-of", type=TIME, help="The list as it was at this time.")
@click.option("--known-at", type=TIME, help="...counting only events recorded by then.")
@json_option
@pass_ctx
def leads_command(ctx: Context, stage: str | None, channel: str | None, owner: str | None, limit: int,
                  as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Lead list, newest capture first: stage, owner, latest score, source channel and campaign."""
    q = Query(stage=stage, channel=channel, owner=owner, limit=limit, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).leads(q), as_json, render_leads)


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
@pass_ctx
def report(ctx: Context, html_path: Path, from_: datetime | None, to: datetime | None, mode: str, model: str,
           conversion: str, as_of: datetime | None, known_at: datetime | None) -> None:
    """One self-contained HTML page (inline charts, no scripts) with the funnel, time in stage,
    attribution by channel and speed to lead by owner."""
    query = Query(from_=from_, to=to, mode=mode, model=model, conversion=conversion, as_of=as_of,
                  known_at=known_at)
    try:
        analytics = open_analytics(ctx.settings, auto_refresh=False)  # one refresh: one snapshot
    except SettingsError as exc:
        fail(str(exc), 2)
    try:
        analytics.refresh()
        page = render_report(analytics, query)
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
