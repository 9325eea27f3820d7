"""Ingest of simulated traffic into a new SQLite store, with and without decoding ahead.

`python -m bench.ingest_bench [--leads 121951] [--days 365] [--rounds 1]` builds a store per arm
(`decode_ahead` off, then on, alternating per round) through the inbound handler in batches of 2,000,
the traffic made in a process of its own (`bench.scale`'s generator), and prints per arm the rate
over the whole build and per 200,000 messages, and this process's CPU seconds (what applying costs
once decoding is done elsewhere). Prints only (copy the lines into bench/results.md with the command).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from pathlib import Path

from bench.scale import generated
from leadledger.bootstrap import bootstrap
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings

BATCH = 2000


def build(home: Path, leads: int, days: int, ahead: bool) -> str:
    app = bootstrap(Settings(home=home, secret=b"leadledger-ingest-bench-secret"))
    handler = InboundHandler(app, batch_size=BATCH, decode_ahead=ahead)
    started, cpu = time.perf_counter(), time.process_time()
    marks, n = [], 0
    try:
        for n, _ in enumerate(handler.handle_stream(enumerate(generated(leads, 1, days), start=1)), start=1):
            if n % 200_000 == 0:
                marks.append(time.perf_counter())
    finally:
        app.store.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    edges = [started, *marks]
    rates = [f"{200_000 / (b - a):,.0f}" for a, b in itertools.pairwise(edges)]
    return (f"decode ahead {'on ' if ahead else 'off'}: {n:,} messages in {wall:.0f} s = **{n / wall:,.0f} events/s**; "
            f"per 200k: {', '.join(rates)}; this process {cpu:.0f} CPU s ({cpu / n * 1e6:.0f} µs a message)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=121_951, help="leads to simulate (8.2 events each)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        for _ in range(args.rounds):
            for ahead in (False, True):
                home = work / ("ahead" if ahead else "inline")
                print(build(home, args.leads, args.days, ahead), flush=True)
                shutil.rmtree(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
