"""The auditor's commands: history of one lead, verify the hash chains, export every event.

`history` and `export` check every event as they read it: a broken chain ends the command
with one line naming the first bad event (exit 1). `verify` lists every broken lead; with
`--expect-root` it also fails when the store's root is not the published one, and `--file`
verifies an export without a store."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import click
import orjson

from leadledger.cli.common import (
    TIME,
    Context,
    emit_csv,
    emit_json,
    fail,
    json_option,
    lead_ref,
    output_format,
    output_options,
    pass_ctx,
)
from leadledger.cli.tables import history_table
from lifecycle.audit import VerifyReport, export_envelopes, verify_file
from lifecycle.audit import history as lead_history
from lifecycle.audit import verify as run_verify


def _resolve(ctx: Context, lead: str) -> UUID:
    return ctx.app.lead_id_for(lead_ref(lead))


@click.command()
@click.argument("lead")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time.")
@output_options
@pass_ctx
def history(ctx: Context, lead: str, as_of: datetime | None, known_at: datetime | None, as_json: bool,
            fmt: str | None) -> None:
    """Every event of LEAD and its stage at --as-of."""
    out = output_format(as_json, fmt)
    lead_id = _resolve(ctx, lead)
    result = lead_history(ctx.app.store, lead_id, as_of, known_at)
    if result is None:
        fail(f"unknown lead {lead}: no events stored for it")
    assert result is not None
    if out == "json":
        emit_json(result)
        return
    if out == "csv":
        emit_csv(result)
        return
    history_table(result)


def _digest(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise click.BadParameter(f"{value!r} is not a root digest (64 hex digits, as `verify` prints it)",
                                 param_hint="--expect-root")
    return digest


@click.command()
@click.argument("lead", required=False)
@click.option("--expect-root", "expected_root", metavar="DIGEST",
              help="Also fail unless the root is this one (a root published from an earlier verify).")
@click.option("--file", "export_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Verify an export (`leadledger export`, without --decrypt) instead of the store.")
@json_option
@pass_ctx
def verify(ctx: Context, lead: str | None, expected_root: str | None, export_file: Path | None,
           as_json: bool) -> None:
    """Check hash chains and versions (all leads, or LEAD); non-zero exit names the first bad event.

    The root printed covers every lead's last version and hash: publish it, and a later
    `verify --expect-root DIGEST` fails if the store (or an export, `--file EXPORT.jsonl`) no
    longer has exactly those chains (a dropped latest event, a rewritten chain)."""
    expected = _digest(expected_root)
    if export_file is not None:
        if lead:
            raise click.UsageError("give LEAD or --file, not both")
        result: VerifyReport = verify_file(export_file)
        what = f"{export_file}"
    else:
        lead_id = _resolve(ctx, lead) if lead else None
        result = run_verify(ctx.app.store, lead_id)
        if lead and result.leads == 0:
            fail(f"unknown lead {lead}: no events are stored for it (nothing to verify)")
        what = "the store"
    problems = result.problems or []
    root_ok = expected is None or result.root == expected
    if as_json:
        emit_json({"ok": result.ok and root_ok, "leads": result.leads, "events": result.events,
                   "root": result.root, **({"expected_root": expected} if expected else {}),
                   "problems": [{"lead_id": str(p.lead_id), "version": p.version, "reason": p.reason}
                                for p in problems],
                   "policy_versions": result.policy_versions, "policy_problems": result.policy_problems})
    elif result.ok:
        policies = f"; {result.policy_versions} policy version(s) intact" if result.policy_versions else ""
        click.echo(f"ok: {result.events} events of {result.leads} leads verified (hash chains and versions "
                   f"intact){policies}")
        if expected is None:
            click.echo(f"root {result.root}  (publish it: a later verify of the same store must match)")
        elif root_ok:
            click.echo(f"root {result.root}  (the expected root)")
    if result.ok and not root_ok:
        fail(f"the root of {what} is {result.root}, not the expected {expected}: events were added, dropped or "
             "rewritten since that root was published (each chain on its own is intact)")
    if result.policy_problems:
        for problem in result.policy_problems:
            click.echo(f"TAMPERED {problem}", err=True)
        if not problems:
            fail(f"verification failed: the policy stream is damaged; first: {result.policy_problems[0]}")
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
    """Every event in store order as CloudEvents JSON lines, each checked as it is read: a broken
    chain stops the export, naming the first bad event (with --output the file is not written)."""
    store = ctx.app.store
    if output is None:
        _write(sys.stdout.buffer, export_envelopes(store, decrypt=decrypt))
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("wb") as out:
            count = _write(out, export_envelopes(store, decrypt=decrypt))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    click.echo(f"exported {count} events to {output}", err=True)


def _write(out: Any, envelopes: Iterable[dict[str, Any]]) -> int:
    count = 0
    for envelope in envelopes:
        out.write(orjson.dumps(envelope) + b"\n")
        count += 1
    return count
