"""Human-readable output (rich tables) for the audit commands."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

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


def console() -> Console:
    """A terminal console; piped output gets a wide page instead of 80 columns."""
    probe = Console()
    if probe.is_terminal:
        return probe if probe.width >= 120 else Console(width=120)  # wide tables scroll, not squash
    return Console(width=160)


def history_table(result: dict[str, Any]) -> None:
    out = console()
    as_of = result["as_of"] or "now"
    title = f"lead {result['lead_id']}: stage [bold]{result['stage']}[/bold] as of {as_of}"
    table = Table(title=title, title_justify="left")
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
        table.add_row(str(env["sequence"]), env["time"].replace("T", " ")[:19], event_name, stage,
                      _summary(data), env.get("actor", ""))
    out.print(table)
