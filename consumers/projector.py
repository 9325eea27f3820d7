"""`project --source kafka`'s run loop: fill the Kafka source, fold a batch, commit, log progress.

The source (`consumers.lead_events.KafkaSource`) keeps the positions and repairs them; this
module only drives it with the runner and reports how far it got.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.kafka.topics import group_id
from consumers.lead_events import KafkaSource
from projections.engine.db import ReadModelDB
from projections.engine.runner import BatchResult, Runner

log = logging.getLogger("leadledger.projections.kafka")


@dataclass
class Progress:
    events: int = 0
    duplicates: int = 0
    batches: int = 0
    assigned_at: float | None = None  # monotonic time the first partitions were owned (after the join)
    last_batch_at: float | None = None  # monotonic time the last batch committed


#: While behind, batches grow up to this many times --batch-size (a 1M-event catch-up on SQLite
#: runs 2.4 times as fast with 100,000-event transactions as with 5,000).
CATCH_UP_FACTOR = 20


def project_from_kafka(db: ReadModelDB, kafka: KafkaSettings, *, batch_size: int = 5000,
                       poll_interval: float = 0.2, log_every: float = 10.0, once: bool = False,
                       fetch_process: bool = True, tuning: ConsumerTuning | None = None,
                       should_stop: Callable[[], bool] = lambda: False,
                       echo: Callable[[str], None] = print) -> Progress:
    """The `project --source kafka` loop into `db` (the caller's, left open): fill, fold a batch,
    commit the group offsets, log.

    `once`: stop when every owned partition is caught up with its end offset."""
    progress = Progress()
    runner = Runner(db)
    stale = runner.setup()
    if stale:
        echo(f"rebuilt read models whose definition changed: {', '.join(stale)}")
    source = KafkaSource(kafka, db, tuning=tuning or ConsumerTuning.from_env(), fetch_process=fetch_process)
    try:
        echo(f"projecting from {source.name} in group {group_id(kafka)} ({kafka.bootstrap})")
        _loop(runner, source, progress, batch_size=batch_size, poll_ms=int(poll_interval * 1000),
              log_every=log_every, once=once, should_stop=should_stop, echo=echo)
    finally:
        source.close()
    return progress


def _loop(runner: Runner, source: KafkaSource, progress: Progress, *, batch_size: int, poll_ms: int,
          log_every: float, once: bool, should_stop: Callable[[], bool], echo: Callable[[str], None]) -> None:
    started = mark = time.monotonic()
    window = 0
    while not should_stop():
        # catching up: bigger transactions (up to CATCH_UP_FACTOR x --batch-size) cost far less
        # per event; caught up: --batch-size, and only what is there
        behind = source.behind()
        limit = min(behind, batch_size * CATCH_UP_FACTOR) if behind > batch_size else batch_size
        source.fill(timeout_ms=poll_ms, want=limit, patient=limit > batch_size)
        if progress.assigned_at is None and source.partitions:
            progress.assigned_at = mark = time.monotonic()  # rates from here: a join is not projecting
        result: BatchResult = runner.run_batch(source, limit) if source.buffered() else BatchResult(0, 0, 0)
        if result.events:
            source.committed_batch()
            progress.events += result.events
            progress.duplicates += result.duplicates
            progress.batches += 1
            window += result.events
            progress.last_batch_at = time.monotonic()
        now = time.monotonic()
        idle = result.events == 0
        if now - mark >= log_every or (idle and window):
            echo(_progress_line("caught up" if idle else "projecting", progress, window, now - mark, source))
            window, mark = 0, now
        if once and idle and source.caught_up():
            break
    elapsed = time.monotonic() - started
    echo(f"stopped: {progress.events} events ({progress.duplicates} duplicates skipped) in {elapsed:.1f}s, "
         f"partitions {source.partitions}")


def _progress_line(state: str, progress: Progress, window: int, seconds: float, source: KafkaSource) -> str:
    lag = source.lag()
    parts = ", ".join(f"p{p} at {v['checkpoint']} lag {v['lag']}" for p, v in lag.items()) or "none assigned"
    return (f"{state}: {progress.events} events ({window / max(seconds, 1e-6):,.0f} events/s), "
            f"{progress.duplicates} duplicates skipped; partitions: {parts}")
