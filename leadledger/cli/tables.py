"""Human-readable output (rich tables): the console, literal cells, and the audit's history table.

Text from upstream (channels, campaigns, names, reasons, owners) is never markup: every cell and
title goes in as a `rich.text.Text`, so `[/bold]` or `[emea] q2` print as they are."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.codec import parse_event_type

_SKIP = {"from_stage", "to_stage", "personal"}


def _summary(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in _SKIP or value is None:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:,.2f}"
        parts.append(f"{key}={value}")
    return "  ".join(parts)


def literal(value: object, style: str = "") -> Text:
    """`value` as text shown exactly as it is (no markup, no emoji codes, no highlighting)."""
    return Text("" if value is None else str(value), style=style)


def literal_table(title: str | Text, **options: Any) -> Table:
    """A table headed by a literal title (printed on its own line by `show`, never wrapped to the
    table's width: a title names the window and the times it covers, whole)."""
    table = Table(**options)
    table.leadledger_title = title if isinstance(title, Text) else literal(title)  # type: ignore[attr-defined]
    return table


def show(table: Table, out: Console | None = None) -> None:
    """Print the table's title line, then the table."""
    out = out or console()
    title = getattr(table, "leadledger_title", None)
    if title is not None:
        out.print(title, soft_wrap=True, highlight=False)
    out.print(table)


def console() -> Console:
    """A terminal console; piped output gets a wide page (COLUMNS, else 160) instead of 80 columns."""
    probe = Console()
    if probe.is_terminal:
        return probe if probe.width >= 120 else Console(width=120)  # wide tables scroll, not squash
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() and int(columns) >= 40 else 160)


def history_table(result: dict[str, Any]) -> None:
    out = console()
    as_of = result["as_of"] or "now"
    title = Text.assemble(f"lead {result['lead_id']}: stage ", literal(result["stage"] or "(none)", "bold"),
                          f" as of {as_of}")
    if result.get("known_at"):
        title.append(f", known at {result['known_at']}")
    table = literal_table(title)
    table.add_column("v", justify="right")
    table.add_column("occurred at (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("details", overflow="fold")
    table.add_column("actor", no_wrap=True)
    for env in result["events"]:
        data = env["data"]
        stage = ""
        if data.get("to_stage"):
            stage = f"{data.get('from_stage') or '-'} -> {data['to_stage']}"
        event_name, _ = parse_event_type(env["type"])
        details = env.get("why") or _summary(data)  # a decision's reasons, in one line (lifecycle.explain)
        table.add_row(literal(env["sequence"]), literal(env["time"].replace("T", " ")[:19]), literal(event_name),
                      literal(stage), literal(details), literal(env.get("actor", "")))
    show(table, out)
