"""The auditor's commands: history of one lead, verify the hash chains, export every event."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from uuid import UUID

import click
import orjson

from leadledger.cli.common import TIME, Context, emit_json, fail, json_option, lead_ref, pass_ctx
from leadledger.cli.tables import history_table
from lifecycle.audit import export_envelopes
from lifecycle.audit import history as lead_history
from lifecycle.audit import verify as run_verify


def _resolve(ctx: Context, lead: str) -> UUID:
    return ctx.app.lead_id_for(lead_ref(lead))


@click.command()
@click.argument("lead")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time.")
@json_option
@pass_ctx
def history(ctx: Context, lead: str, as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Every event of LEAD and its stage at --as-of."""
    lead_id = _resolve(ctx, lead)
    result = lead_history(ctx.app.store, lead_id, as_of, known_at)
    if result is None:
        fail(f"unknown lead {lead}: no events stored for it")
    assert result is not None
    if as_json:
        emit_json(result)
        return
    history_table(result)


@click.command()
@click.argument("lead", required=False)
@json_option
@pass_ctx
def verify(ctx: Context, lead: str | None, as_json: bool) -> None:
    """Check hash chains and versions (all leads, or LEAD); non-zero exit names the first bad event."""
    result = run_verify(ctx.app.store, _resolve(ctx, lead) if lead else None)
    problems = result.problems or []
    if as_json:
        emit_json({"ok": result.ok, "leads": result.leads, "events": result.events, "root": result.root,
                   "problems": [{"lead_id": str(p.lead_id), "version": p.version, "reason": p.reason}
                                for p in problems]})
    elif result.ok:
        click.echo(f"ok: {result.events} events of {result.leads} leads verified (hash chains and versions intact)")
        click.echo(f"root {result.root}  (publish it: a later verify of the same store must match)")
    if not result.ok:
        for p in problems[:20]:
            click.echo(f"TAMPERED {p}", err=True)
        if len(problems) > 20:
            click.echo(f"... and {len(problems) - 20} more leads", err=True)
        fail(f"verification failed for {len(problems)} lead(s); first: {problems[0]}")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="File to write (default stdout).")
@click.option("--decrypt", is_flag=True, help="Open personal data (default: it stays sealed).")
@pass_ctx
def export(ctx: Context, fmt: str, output: Path | None, decrypt: bool) -> None:
    """Every event in store order as CloudEvents JSON lines."""
    out = output.open("wb") if output else sys.stdout.buffer
    count = 0
    try:
        for envelope in export_envelopes(ctx.app.store, decrypt=decrypt):
            out.write(orjson.dumps(envelope) + b"\n")
            count += 1
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"exported {count} events to {output}", err=True)
