"""Bulk writes: `ingest FILE` (exactly as the Kafka consumer applies messages) and `simulate`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import click
import orjson

from leadledger.cli.common import TIME, Context, emit_json, json_option, pass_ctx
from lifecycle.inbound import InboundHandler, Tally
from lifecycle.simulate import generate


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield number, stripped


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dead-letters", type=click.Path(path_type=Path), help="Default: FILE.dead.jsonl")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@json_option
@pass_ctx
def ingest(ctx: Context, file: Path, dead_letters: Path | None, batch_size: int, as_json: bool) -> None:
    """Apply a file of inbound messages (JSON lines) exactly as the Kafka consumer would."""
    dead_path = dead_letters or file.with_name(file.name + ".dead.jsonl")
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=batch_size)
    dead_out = None
    try:
        for result in handler.handle_stream(_read_lines(file)):
            tally.add(result)
            if result.status == "dead":
                if dead_out is None:
                    dead_out = dead_path.open("wb")
                dead_out.write(orjson.dumps({
                    "line": result.position, "reason": result.reason,
                    "raw": result.raw.decode("utf-8", errors="replace"),
                }) + b"\n")
    finally:
        if dead_out is not None:
            dead_out.close()
    if as_json:
        emit_json(tally.as_json())
    else:
        click.echo(f"applied {tally.applied}, duplicates ignored {tally.duplicates}, "
                   f"dead-lettered {tally.dead_lettered}")
        if tally.dead_lettered:
            click.echo(f"dead letters (with reasons): {dead_path}")


@click.command()
@click.option("--leads", type=click.IntRange(1, 10_000_000), default=2000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--start", type=TIME, default="2026-01-05", show_default=True, help="First capture day.")
@click.option("--days", type=click.IntRange(1, 3650), default=120, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Write the inbound messages here instead of applying them.")
@json_option
@pass_ctx
def simulate(ctx: Context, leads: int, seed: int, start: datetime, days: int, out: Path | None,
             as_json: bool) -> None:
    """Deterministic realistic traffic through the write path (same path as ingest)."""
    messages = generate(leads=leads, seed=seed, start=start, days=days,
                        mql_threshold=ctx.settings.mql_threshold)
    if out is not None:
        n = 0
        with out.open("wb") as fh:
            for message in messages:
                fh.write(orjson.dumps(message) + b"\n")
                n += 1
        click.echo(f"wrote {n} inbound messages for {leads} leads to {out}")
        return
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=1000)
    stream = ((i, orjson.dumps(m)) for i, m in enumerate(messages, start=1))
    refused: list[str] = []
    example: UUID | None = None  # the first lead that was won: a story worth showing
    for result in handler.handle_stream(stream):
        tally.add(result)
        if result.status == "dead" and len(refused) < 5:
            refused.append(f"message {result.position}: {result.reason}")
        if example is None and result.event == "LeadWon":
            example = result.lead_id
    if as_json:
        emit_json({"leads": leads, "seed": seed, **tally.as_json(),
                   "example_won_lead": str(example) if example else None})
    else:
        click.echo(f"simulated {leads} leads (seed {seed}): {tally.applied} events applied, "
                   f"{tally.duplicates} duplicates ignored, {tally.dead_lettered} refused")
        if example:
            click.echo(f"a lead that was won: {example}  (try: leadledger history {example})")
    for line in refused:
        click.echo(f"  refused {line}", err=True)
