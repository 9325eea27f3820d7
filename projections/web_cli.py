"""The `serve` (HTTP JSON API) and `report` (HTML page) commands; `register(cli)` adds them."""

from __future__ import annotations

import ipaddress
import os
import sys
from datetime import datetime
from pathlib import Path

import click

from lifecycle.cli import TIME, Context, fail, pass_ctx
from projections.query import CONVERSIONS, MODELS, MODES

TOKEN_ENV = "LEADLEDGER_API_TOKEN"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the API to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@click.option("--query-threads", type=click.IntRange(1, 64), default=None,
              help="Requests answered in parallel, each thread with its own database connections "
                   "[default: one per CPU core, at most 4].")
@pass_ctx
def serve(ctx: Context, host: str, port: int, log_level: str, query_threads: int | None) -> None:
    """Read-only HTTP JSON API (and the HTML report at /report).

    \b
    GET /funnel /velocity /attribution /speed /leads /leads/{id}/history /report
    with the query flags in snake_case (by, from, to, mode, model, conversion, as_of,
    known_at; stage, channel, owner, limit for /leads); bodies are the --json output.
    GET /openapi.json describes it all; GET /healthz answers {"status": "ok"}.

    With LEADLEDGER_API_TOKEN set, every endpoint but /healthz and /openapi.json needs
    "Authorization: Bearer <token>" (401 otherwise). Every request sees the events stored
    up to that moment.
    """
    import uvicorn

    from projections.http import DEFAULT_QUERY_THREADS, create_app

    token = os.environ.get(TOKEN_ENV) or None
    if not _is_loopback(host) and token is None:
        click.echo(f"warning: serving on {host} without authentication; set {TOKEN_ENV} to require a "
                   "bearer token", err=True)
    app = create_app(ctx.settings, token, query_threads=query_threads or DEFAULT_QUERY_THREADS)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"leadledger API on http://{shown}:{port}/ (OpenAPI: /openapi.json, report: /report, "
               f"auth: {'bearer token' if token else 'none'})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)


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
    from lifecycle.settings import SettingsError
    from projections.query import Query, QueryError
    from projections.report import render_report
    from projections.service import open_analytics

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


def register(group: click.Group) -> None:
    """Add `serve` and `report` to the CLI group (idempotent)."""
    for command in (serve, report):
        if command.name not in group.commands:
            group.add_command(command)
