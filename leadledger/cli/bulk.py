"""Bulk writes: `ingest FILE` (exactly as the Kafka consumer applies messages) and `simulate`."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

import click
import orjson

from leadledger.cli.common import TIME, Context, emit_json, fail, json_option, pass_ctx
from lifecycle.inbound import InboundHandler, Result, Tally, raw_fields
from lifecycle.operations.policy import PolicyError
from lifecycle.policies import AlreadyPublished, PolicyStream
from lifecycle.simulate import DEFAULT_POLICY, generate
from lifecycle.simulate.routed import simulate_routed
from schemas.inbound import MAX_MESSAGE_BYTES

#: a UTF-8 byte order mark, which some exporters put before the first line
BOM = b"\xef\xbb\xbf"
#: the most of one oversized line kept in its dead letter (the rest is skipped unread into memory)
KEEP_OVERSIZED = 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Line:
    number: int
    raw: bytes
    #: the line's whole length in bytes when it was longer than a message may be (else None)
    oversized: int | None = None


def read_lines(fh: BinaryIO, limit: int = MAX_MESSAGE_BYTES, keep: int = KEEP_OVERSIZED) -> Iterator[Line]:
    """Every line of `fh` (blank ones too: the handler counts them as skipped), each read with a
    bound: a line longer than `limit` bytes is measured to its end without being read whole into
    memory (its first `keep` bytes are kept); a UTF-8 byte order mark before the first line is
    dropped."""
    bound = max(limit, keep)
    number = 0
    while True:
        line = fh.readline(bound + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        content = line.rstrip(b"\r\n")
        length = len(content)
        if len(line) > bound and not line.endswith(b"\n"):  # longer than one read: skip to its end
            length = len(line)
            while chunk := fh.readline(_CHUNK):
                if chunk.endswith(b"\n"):
                    length += len(chunk.rstrip(b"\r\n"))
                    break
                length += len(chunk)
        if length > limit:
            yield Line(number, content[:keep], length)
        else:
            yield Line(number, content)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _dead_letter_path(file: str, dead_letters: Path | None, source_stat: os.stat_result | None) -> Path:
    """Where the dead letters go, checked before anything is applied: not the input itself (a
    symlink or hard link to it included), not a folder, in a folder that exists."""
    dead_path = dead_letters or (Path("stdin.dead.jsonl") if file == "-" else Path(file + ".dead.jsonl"))
    try:
        dead_stat = dead_path.stat()
    except FileNotFoundError:
        dead_stat = None
    if dead_stat is not None and source_stat is not None and _same_file(dead_stat, source_stat):
        fail(f"--dead-letters {dead_path} is the input file itself; give another path (the input would be "
             "overwritten while it is read)", 2)
    if dead_path.is_dir():
        fail(f"--dead-letters {dead_path} is a folder; give the path of a file", 2)
    if not dead_path.parent.is_dir():
        fail(f"--dead-letters {dead_path}: the folder {dead_path.parent} does not exist; create it first", 2)
    return dead_path


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--dead-letters", type=click.Path(path_type=Path),
              help="Where rejected messages go, appended (never overwritten) [default: FILE.dead.jsonl; "
                   "stdin.dead.jsonl for -].")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Messages applied per transaction.")
@json_option
@pass_ctx
def ingest(ctx: Context, file: str, dead_letters: Path | None, batch_size: int, as_json: bool) -> None:
    """Apply a file of inbound messages (JSON lines; FILE - reads stdin) exactly as the Kafka
    consumer would.

    Each message that cannot be applied is appended to the dead letters (never overwritten) as
    one JSON line: {"line", "reason", "raw", "source"} (and "bytes" for an oversized line,
    whose "raw" holds its first MiB). A UTF-8 byte order mark is accepted; blank lines are
    skipped. The dead letters may not be the input itself."""
    stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115 - closed below
    try:
        try:
            source_stat: os.stat_result | None = os.fstat(stream.fileno())
        except (OSError, ValueError):  # a stdin without a file behind it (a test's buffer)
            source_stat = None
        dead_path = _dead_letter_path(file, dead_letters, source_stat)
        # a file on disk is decoded a batch ahead; a pipe's batch is applied as soon as it is complete
        ahead = source_stat is not None and stat.S_ISREG(source_stat.st_mode)
        tally, letters = _ingest(ctx, stream, "stdin" if file == "-" else file, dead_path, batch_size, ahead)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if as_json:
        emit_json(tally.as_json())
    else:
        skipped = getattr(tally, "skipped", 0)
        click.echo(f"applied {tally.applied}, duplicates ignored {tally.duplicates}, "
                   f"dead-lettered {tally.dead_lettered}" + (f", blank lines skipped {skipped}" if skipped else ""))
        if letters:
            click.echo(f"{letters} dead letters (with reasons) appended to: {dead_path}")


def _ingest(ctx: Context, stream: BinaryIO, source: str, dead_path: Path, batch_size: int,
            ahead: bool) -> tuple[Tally, int]:
    """Apply the stream in batches (`ahead`: each decoded in a helper process while the one before
    is applied); returns the tally and how many dead letters were appended."""
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=batch_size, decode_ahead=ahead)
    dead_out: BinaryIO | None = None
    letters = 0

    def dead(number: int, reason: str | None, raw: bytes, size: int | None = None) -> None:
        nonlocal dead_out, letters
        letters += 1
        if dead_out is None:
            dead_out = dead_path.open("ab")
        letter: dict[str, object] = {"line": number, "reason": reason, **raw_fields(raw), "source": source}
        if size is not None:
            letter["bytes"] = size
        dead_out.write(orjson.dumps(letter) + b"\n")

    def tally_up(done: Iterable[list[Result[int]]]) -> None:
        for results in done:
            for result in results:
                tally.add(result)
                reason = result.dead_letter_reason
                if reason is not None:
                    dead(result.position, reason, result.raw)

    batch: list[tuple[int, bytes]] = []
    try:
        with handler.pipeline() as pipe:
            for line in read_lines(stream):
                if line.oversized is None:
                    batch.append((line.number, line.raw))
                    if len(batch) >= batch_size:
                        tally_up(pipe.submit(batch))
                        batch = []
                    continue
                tally_up(pipe.submit(batch))  # the lines before it first: dead letters stay in line order
                tally_up(pipe.drain())
                batch = []
                tally.add(Result(line.number, "dead"))
                cut = " (raw holds its first MiB)" if line.oversized > len(line.raw) else ""
                dead(line.number, f"oversized message: {line.oversized} bytes (limit {MAX_MESSAGE_BYTES}): send "
                                  f"one lead event per message, without attachments{cut}", line.raw, line.oversized)
            tally_up(pipe.submit(batch))
            tally_up(pipe.drain())
    finally:
        if dead_out is not None:
            dead_out.close()
    return tally, letters


def with_start(messages: Iterator[dict[str, Any]], start: datetime) -> Iterator[dict[str, Any]]:
    """The simulator's messages with the start in their ids: `web-forms-s1-000000001` of a run
    starting 2026-01-05 becomes `web-forms-s1-000000001@20260105T000000Z`, so a run with another
    start is not taken for a re-delivery of this one."""
    tag = start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for message in messages:
        yield {**message, "id": f"{message['id']}@{tag}"}


@click.command()
@click.option("--leads", type=click.IntRange(1, 10_000_000), default=2000, show_default=True,
              help="How many leads to capture.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed and start: same traffic.")
@click.option("--start", type=TIME, default="2026-01-05", show_default=True, help="First capture day.")
@click.option("--days", type=click.IntRange(1, 3650), default=120, show_default=True,
              help="Captures spread over this many days from --start.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the inbound messages here instead of applying them.")
@click.option("--operate", "routed", is_flag=True,
              help="leadledger's router and SLA clocks assign the leads (no upstream assignments): publishes "
                   "the bundled demo policy when the store has none (or --policy), runs operate on the "
                   "simulated clock, and each lead's life goes on with the rep the router chose.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --operate: publish this policy file first (when it is not the latest version already).")
@json_option
@pass_ctx
def simulate(ctx: Context, leads: int, seed: int, start: datetime, days: int, out: Path | None,
             routed: bool, policy_file: Path | None, as_json: bool) -> None:
    """Deterministic realistic traffic through the write path (same path as ingest).

    The same --seed and --start give the same messages, so running it again changes nothing;
    a message's idempotency key names its seed and start, so a new --start adds new traffic.
    With --operate, the router's decisions shape the traffic, and the same seed, start and policy
    give the same decisions."""
    if routed:
        if out is not None:
            fail("--operate runs the router on the store while it simulates; it cannot write --out", 2)
        _simulate_routed(ctx, leads, seed, start, days, policy_file, as_json)
        return
    if policy_file is not None:
        fail("--policy goes with --operate", 2)
    # the lives qualify with the threshold the store's policy sets (else the configured one)
    threshold = ctx.settings.mql_threshold if out is not None else ctx.app.mql_threshold()
    messages = with_start(generate(leads=leads, seed=seed, start=start, days=days, mql_threshold=threshold), start)
    if out is not None:
        n = 0
        with out.open("wb") as fh:
            for message in messages:
                fh.write(orjson.dumps(message) + b"\n")
                n += 1
        click.echo(f"wrote {n} inbound messages for {leads} leads to {out}")
        return
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=1000, decode_ahead=True)
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


def _simulate_routed(ctx: Context, leads: int, seed: int, start: datetime, days: int, policy_file: Path | None,
                     as_json: bool) -> None:
    stream = PolicyStream(ctx.app.store)
    published = None
    if policy_file is not None or not stream.versions():
        path = policy_file or DEFAULT_POLICY
        try:
            published = stream.publish(path.read_text(encoding="utf-8"), actor=ctx.settings.actor,
                                       now=datetime.now(UTC))
        except PolicyError as exc:
            fail(f"{path}: the policy is not valid:\n" + "\n".join(f"  {p}" for p in exc.problems), 2)
        except AlreadyPublished:
            pass
    tag = start.astimezone(UTC).strftime("@%Y%m%dT%H%M%SZ")
    report = simulate_routed(ctx.app, leads=leads, seed=seed, start=start, days=days,
                             mql_threshold=ctx.app.mql_threshold(), until=datetime.now(UTC), id_tag=tag)
    tally, op = report.tally, report.operator
    if as_json:
        emit_json({"leads": leads, "seed": seed, **tally.as_json(),
                   "policy_version": published.version if published else stream.versions()[-1].version,
                   "operator": {"runs": report.runs, **op.as_json()}, "waiting_for_router": report.waiting,
                   "example_won_lead": str(report.example_won_lead) if report.example_won_lead else None})
    else:
        if published is not None:
            click.echo(f"published policy version {published.version} ({policy_file or 'the bundled demo policy'})")
        decided = ", ".join(f"{n} {kind}" for kind, n in sorted(op.decisions.items())) or "nothing"
        click.echo(f"simulated {leads} leads (seed {seed}) with leadledger's router: {tally.applied} events "
                   f"applied, {tally.duplicates} duplicates ignored, {tally.dead_lettered} refused; the operator "
                   f"ran {report.runs} times on the simulated clock and decided {decided}")
        if report.example_won_lead:
            click.echo(f"a lead that was won: {report.example_won_lead}  "
                       f"(try: leadledger history {report.example_won_lead})")
    for line in report.refused:
        click.echo(f"  refused: {line}", err=True)
