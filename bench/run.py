"""Benchmarks for the lifecycle core (issue 2). `make bench` or `python -m bench.run`.

* ingest: inbound messages -> validated, encrypted, hash-chained events in SQLite
  (end to end through the same handler as `leadledger ingest`), vs. the peer:
  a bare `eventsourcing` Application saving equivalent events with no
  validation, encryption or chain, one aggregate per save and batched.
* history: latency of one lead's history in a store of ~1,000,000 events.

Results are appended to bench/results.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from leadledger.bootstrap import bootstrap
from lifecycle.audit import history
from lifecycle.inbound import InboundHandler, Tally
from lifecycle.settings import Settings
from lifecycle.simulate import generate

RESULTS = Path(__file__).with_name("results.md")
START = datetime(2026, 1, 5, tzinfo=UTC)


def messages(leads: int, seed: int) -> list[bytes]:
    return [orjson.dumps(m) for m in generate(leads=leads, seed=seed, start=START, days=120)]


# ---------------------------------------------------------------- ours


def ingest_ours(home: Path, raw: list[bytes], batch_size: int = 500) -> tuple[float, Tally]:
    app = bootstrap(Settings(home=home, secret=b"leadledger-bench-secret"))
    handler = InboundHandler(app, batch_size=batch_size)
    tally = Tally()
    t0 = time.perf_counter()
    for result in handler.handle_stream(enumerate(raw)):
        tally.add(result)
    elapsed = time.perf_counter() - t0
    app.store.close()
    return elapsed, tally


# ---------------------------------------------------------------- the peer


class BareLead(Aggregate):
    """The same facts with no stage machine, validation, encryption or hash chain."""

    @event("Captured")
    def __init__(self, data: dict[str, Any], occurred_at: str) -> None:
        self.data = data

    @event("Happened")
    def happen(self, kind: str, data: dict[str, Any], occurred_at: str) -> None:
        pass


class BareApp(Application[UUID]):
    pass


def _bare_stream(raw: list[bytes]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    for line in raw:
        m = orjson.loads(line)
        kind = m["type"].split(".")[2]
        ref = m.get("subject") or m["data"].get("email", "")
        yield kind, ref.lower(), m["data"], m.get("time", "")


def ingest_bare(home: Path, raw: list[bytes], batch: int) -> tuple[float, int]:
    """batch=1: save one aggregate per call; batch=N: save N commands' aggregates per call."""
    app = BareApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                       "SQLITE_DBNAME": str(home / "bare.sqlite")})
    leads: dict[str, BareLead] = {}
    events = 0
    pending: dict[str, BareLead] = {}
    t0 = time.perf_counter()
    for kind, ref, data, at in _bare_stream(raw):
        lead = leads.get(ref)
        if lead is None:
            lead = BareLead(data=data, occurred_at=at)
            leads[ref] = lead
        else:
            lead.happen(kind=kind, data=data, occurred_at=at)
        events += 1
        pending[ref] = lead
        if len(pending) >= batch:
            app.save(*pending.values())
            pending.clear()
    if pending:
        app.save(*pending.values())
    elapsed = time.perf_counter() - t0
    app.close()
    return elapsed, events


# ---------------------------------------------------------------- history latency


def history_latency(home: Path, samples: int, seed: int) -> dict[str, float]:
    app = bootstrap(Settings(home=home, secret=b"leadledger-bench-secret"))
    lead_ids = app.store.lead_ids()
    rng = random.Random(seed)
    picks = [rng.choice(lead_ids) for _ in range(samples)]
    for lead in picks[:50]:  # warm the page cache like a running server would be
        history(app.store, lead)
    times = []
    for lead in picks:
        t0 = time.perf_counter()
        result = history(app.store, lead)
        times.append(time.perf_counter() - t0)
        assert result is not None
    times.sort()
    events = app.store.head_position()
    app.store.close()

    def pct(p: float) -> float:
        return times[max(0, min(len(times) - 1, int(-(-p * len(times) // 1)) - 1))] * 1000

    return {"events": events, "leads": len(lead_ids), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(times) * 1000}


def build_big_store(home: Path, target_events: int, seed: int) -> tuple[float, int]:
    """Ingest simulated traffic until the store holds >= target_events events."""
    app = bootstrap(Settings(home=home, secret=b"leadledger-bench-secret"))
    handler = InboundHandler(app, batch_size=1000)
    applied = 0
    chunk = 0
    t0 = time.perf_counter()
    while applied < target_events:
        raw = messages(10_000, seed + chunk)
        # distinct people per chunk: make each chunk's e-mails unique
        raw = [line.replace(b"@example-", f"@c{chunk}-example-".encode()) for line in raw]
        for result in handler.handle_stream(enumerate(raw)):
            applied += result.status == "applied"
        chunk += 1
        print(f"  store: {applied:,} events after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    app.store.close()
    return elapsed, applied


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--leads", type=int, default=10_000, help="leads for the ingest benchmark")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--history-events", type=int, default=1_000_000,
                        help="size of the store for the history benchmark (0 to skip)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="keep/reuse the big store in this folder")
    args = parser.parse_args(argv)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    work = Path(tempfile.mkdtemp(prefix="leadledger-bench-"))
    lines = [f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — `{command}`",
             f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", ""]
    try:
        raw = messages(args.leads, args.seed)
        size = sum(map(len, raw))
        print(f"ingest: {len(raw):,} messages ({size / len(raw):.0f} B avg) for {args.leads:,} leads",
              file=sys.stderr)
        ours_s, tally = ingest_ours(work / "ours", raw)
        ours_rate = tally.applied / ours_s
        bare1_s, bare_events = ingest_bare(_fresh(work / "bare1"), raw, batch=1)
        bareN_s, _ = ingest_bare(_fresh(work / "bareN"), raw, batch=500)
        bare1_rate, bareN_rate = bare_events / bare1_s, bare_events / bareN_s
        lines += [
            "| ingest into SQLite (same messages) | events | seconds | events/s |",
            "|---|---|---|---|",
            f"| leadledger `ingest` path (validate + dedupe + stage machine + AES-GCM + hash chain), batches of 500 | {tally.applied:,} | {ours_s:.2f} | **{ours_rate:,.0f}** |",
            f"| peer: bare eventsourcing Application, 1 aggregate per save | {bare_events:,} | {bare1_s:.2f} | {bare1_rate:,.0f} |",
            f"| peer: bare eventsourcing Application, 500 aggregates per save | {bare_events:,} | {bareN_s:.2f} | {bareN_rate:,.0f} |",
            "",
            f"overhead ratio (peer ÷ ours): {bare1_rate / ours_rate:.2f}× vs one-at-a-time, "
            f"{bareN_rate / ours_rate:.2f}× vs batched; duplicates {tally.duplicates}, "
            f"dead-lettered {tally.dead_lettered}",
            "",
        ]
        if args.history_events:
            big = args.keep or (work / "big")
            if not (big / "events.sqlite").exists():
                build_s, built = build_big_store(big, args.history_events, args.seed + 1000)
                lines.append(f"built a store of {built:,} events by ingest in {build_s:.0f} s "
                             f"({built / build_s:,.0f} events/s)")
            lat = history_latency(big, args.samples, args.seed)
            lines += [
                "",
                f"| `history` of one random lead (in-process, {args.samples} samples) | store events | leads | p50 ms | p99 ms | mean ms |",
                "|---|---|---|---|---|---|",
                f"| lifecycle.audit.history (decode + decrypt + as-of stage) | {lat['events']:,} | {lat['leads']:,} | {lat['p50_ms']:.2f} | **{lat['p99_ms']:.2f}** | {lat['mean_ms']:.2f} |",
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a") as fh:
        fh.write(text)


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()

