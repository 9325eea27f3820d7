"""Incremental catch-up rate: `python -m bench.catch_up_bench STORE_HOME [--batches 40] [--batch 5000]`.

Folds the first `--batches` batches of an existing store (e.g. one `bench.scale --keep` built) into
fresh read models with the runner `leadledger project` uses, and prints events/s. To compare two
versions of the code in one sitting, run it alternately with each checkout first on PYTHONPATH
(`PYTHONPATH=/path/to/other/checkout python -m bench.catch_up_bench ...`). Prints only; the
results quoted in bench/results.md name the command and the commits.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.settings import Settings
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path, help="LEADLEDGER_HOME of an existing store")
    parser.add_argument("--secret", default="leadledger-scale-bench-secret", help="the store's secret")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args(argv)
    secret = args.secret.encode()
    store = bootstrap(Settings(home=args.store, secret=secret)).store
    home = Path(tempfile.mkdtemp(prefix="leadledger-catch-up-"))
    source = EmbeddedSource(store, prefetch=True)
    runner = Runner(open_read_models(Settings(home=home, secret=secret)))
    try:
        runner.setup()
        events, started = 0, time.perf_counter()
        for _ in range(args.batches):
            events += runner.run_batch(source, args.batch).events
        seconds = time.perf_counter() - started
        print(f"{events:,} events in {seconds:.1f} s = {events / seconds:,.0f} events/s (batch {args.batch})")
    finally:
        source.close()
        runner.db.close()
        store.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
