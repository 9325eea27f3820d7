"""Replay memory benchmark: `python -m bench.replay_memory_bench [--events N ...] [--keep DIR]`.

For each store size: simulated traffic ingested through the inbound handler (as
`bench.projections_bench` builds it), then `leadledger replay`'s bulk path run in a fresh
process into an empty SQLite read-model file, reporting its seconds and the peak resident
memory of the writer and of its forked workers (the largest one), read from `getrusage`.
A replay whose memory does not grow with the store shows the same peaks at every size.

Results are appended to bench/results.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.projections_bench import SECRET, build_store
from bench.record import Lines, append_results


def _replay_in_child(store_home: str, models_home: str, workers: int, out: multiprocessing.Queue) -> None:
    """One replay into an empty read-model file; puts (events, seconds, writer KiB, worker KiB)."""
    from leadledger.bootstrap import bootstrap, open_read_models
    from lifecycle.settings import Settings
    from projections.engine.runner import Runner
    from projections.engine.sources import EmbeddedSource

    store = bootstrap(Settings(home=Path(store_home), secret=SECRET)).store
    db = open_read_models(Settings(home=Path(models_home), secret=SECRET))
    try:
        runner = Runner(db)
        runner.setup()
        started = time.perf_counter()
        events = runner.replay(EmbeddedSource(store), workers=workers).events
        seconds = time.perf_counter() - started
    finally:
        db.close()
        store.close()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out.put((events, seconds, own, kids))


def measure(store_home: Path, workers: int) -> tuple[int, float, int, int]:
    """A replay of the store at `store_home` in a fresh spawned process (not daemonic: it forks)."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="ll-replay-mem-") as models:
        proc = ctx.Process(target=_replay_in_child, args=(str(store_home), models, workers, out))
        proc.start()
        result = out.get()
        proc.join()
    return result  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--keep", type=Path, default=None,
                        help="build (or reuse) the stores under this directory: DIR/<events>")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to results.md")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="ll-replay-stores-"))
    lines = Lines()
    try:
        for events in args.events:
            home = root / str(events)
            if not (home / "events.sqlite").exists():
                home.mkdir(parents=True, exist_ok=True)
                build_store(home, events, seed=7)
            for workers in args.workers:
                n, seconds, own, kids = measure(home, workers)
                lines.say(f"- replay of {n:,} events, {workers} worker(s): {seconds:.1f}s, peak RSS writer "
                          f"{own / 1024:,.0f} MiB, largest worker {kids / 1024:,.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if not args.no_record:
        append_results("Replay memory", "bench.replay_memory_bench", argv, lines)


if __name__ == "__main__":
    main()
