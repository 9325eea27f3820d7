"""`leadledger pipeline`: the open pipeline at an instant, per owner, channel or campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from leadledger.answers import tidy
from leadledger.cli.common import TIME, Context, output_format, output_options, pass_ctx
from leadledger.cli.queries import _amounts, _analytics, _answer, _print, _title
from leadledger.cli.tables import literal, literal_table
from projections.pipeline import DEFAULT_BY, OPEN_STAGES, PIPELINE_BYS
from projections.query import Query


def _group_label(result: dict[str, Any], key: str | None) -> str:
    """A group's key as a table shows it (a lead without an owner is `unowned`)."""
    if key is None:
        return "unowned" if result["by"] == "owner" else "-"
    return key


def render_pipeline(result: dict[str, Any]) -> None:
    """The open leads per stage, the SQLs with and without an expected amount, and their value."""
    table = literal_table(_title(result, f"open pipeline by {result['by']}"))
    table.add_column(literal(result["by"]))
    for stage in OPEN_STAGES:
        table.add_column(literal(stage), justify="right")
    table.add_column("sql with amount", justify="right")
    table.add_column("sql without", justify="right")
    table.add_column(literal(f"value ({result['currency']})"), justify="right")
    unconverted = bool(result["total"]["unconverted"])
    if unconverted:
        table.add_column("not converted (no rate)", justify="right")
    rows = [(_group_label(result, g["key"]), g) for g in result["groups"]] + [("total", result["total"])]
    for label, figures in rows:
        cells = [literal(label), *(literal(figures["open"][s]) for s in OPEN_STAGES),
                 literal(figures["with_amount"]), literal(figures["without_amount"]),
                 literal(f"{figures['value']:,.2f}")]
        if unconverted:
            cells.append(literal(_amounts(figures["unconverted"])))
        table.add_row(*cells)
    _print(table)


@click.command()
@click.option("--by", type=click.Choice(PIPELINE_BYS), default=DEFAULT_BY, show_default=True,
              help="Group by the lead's owner at the as-of time (unowned: null), or the channel or campaign of "
                   "its capture.")
@click.option("--as-of", type=TIME, help="The pipeline as it was at this time: only events that occurred at or "
                                         "before it (default: everything stored).")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time (exact).")
@output_options
@pass_ctx
def pipeline(ctx: Context, by: str, as_of: datetime | None, known_at: datetime | None, as_json: bool,
             fmt: str | None) -> None:
    """The open pipeline: per group, the leads in mql, sal and sql at the as-of time, and the value of
    those in sql.

    The value sums the expected amounts the leads' SQL entries stated (the entry of their current
    stay in sql), in the reporting currency (LEADLEDGER_REPORTING_CURRENCY, default EUR), each at
    the rate in effect on the SQL entry's date (the [fx] table of LEADLEDGER_FX_FILE). An amount
    whose currency has no rate then is never added in: it is listed per currency as not converted
    ("unconverted" in --json). Won, lost, recycled and disqualified leads are not open."""
    q = Query(by=by, as_of=as_of, known_at=known_at)
    _answer(lambda: _analytics(ctx).pipeline(q), output_format(as_json, fmt), render_pipeline, tidy)
