"""Kafka projection catch-up vs the raw consume rate of the same topic (issue "Kafka pipeline").

1. a store of ~N events (simulated traffic through the ingest path; `--keep` reuses it);
2. the bundled broker; the relay (`consumers.relay.run_relay`) publishes the whole store to
   lead-events (3 partitions);
3. peer / limit: raw kafka-python consume of the topic, manual assignment, every partition
   from the beginning, records counted and dropped;
4. the fold's ceiling: the same runner fed from the store (embedded, no Kafka) at the batch
   size a Kafka catch-up grows to;
5. ours: `project_from_kafka` (what `leadledger project --source kafka --once` runs) into fresh
   SQLite read models, timed from the group assignment to the last batch (the group join is
   reported apart); with the fetch process (default) and with the fetch inline.

Target: ours >= 50 % of raw. Appends to bench/results.md with the command line.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.projections_bench import SECRET, build_store
from bench.record import Lines, append_results
from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.projector import CATCH_UP_FACTOR, project_from_kafka
from leadledger.bootstrap import bootstrap, open_read_models
from leadledger.demo_kafka import start_broker, stop_process
from lifecycle.settings import Settings
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource

TUNING = ConsumerTuning(session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=10000)


def raw_consume(kafka: KafkaSettings, expected: int) -> tuple[int, float]:
    """Every record of the topic with a bare consumer (manual assignment): (records, seconds)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_kwargs(), enable_auto_commit=False, max_poll_records=5000,
                             max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    try:
        tps = [TopicPartition(kafka.events_topic, p) for p in sorted(consumer.partitions_for_topic(kafka.events_topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = 0
        started = time.perf_counter()
        idle_since = None
        while n < expected:
            batches = consumer.poll(timeout_ms=500)
            got = sum(len(records) for records in batches.values())
            n += got
            if got:
                idle_since = None
            elif idle_since is None:
                idle_since = time.perf_counter()
            elif time.perf_counter() - idle_since > 10:
                break
        return n, time.perf_counter() - started
    finally:
        consumer.close()


def ours(kafka: KafkaSettings, home: Path, fetch_process: bool, batch: int,
         helpers: int = 0) -> tuple[int, float, float]:
    """(events, seconds from assignment to the last batch, seconds of the group join)."""
    started = time.monotonic()
    tuning = TUNING.model_copy(update={"fetch_processes": helpers})
    db = open_read_models(Settings(home=home, secret=SECRET))
    try:
        progress = project_from_kafka(db, kafka, batch_size=batch, once=True, fetch_process=fetch_process,
                                      tuning=tuning, log_every=3600, echo=lambda _: None)
    finally:
        db.close()
    assert progress.assigned_at is not None and progress.last_batch_at is not None
    return progress.events, progress.last_batch_at - progress.assigned_at, progress.assigned_at - started


def embedded_ceiling(store_home: Path, home: Path, batch: int) -> tuple[int, float]:
    """The same runner fed from the store (no Kafka) at the catch-up batch size: (events, seconds)."""
    store = bootstrap(Settings(home=store_home, secret=SECRET)).store
    source = EmbeddedSource(store, prefetch=True)
    runner = Runner(open_read_models(Settings(home=home, secret=SECRET)))
    try:
        runner.setup()
        started = time.perf_counter()
        n = runner.catch_up(source, batch)
        return n, time.perf_counter() - started
    finally:
        source.close()
        runner.db.close()
        store.close()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="approximate store size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the built store here and reuse it if it exists")
    parser.add_argument("--batch", type=int, default=5000, help="projector batch size")
    parser.add_argument("--no-inline", action="store_true", help="skip the run with the fetch inline")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded (no Kafka) reference run")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/results.md")
    parser.add_argument("--fetch-processes", type=int, nargs="+", default=[0], metavar="N",
                        help="fetch helper processes of the default run, one run per value (0: the default)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat raw consume + our runs this many times")
    args = parser.parse_args(argv)

    lines = Lines()
    say = lines.say

    work = Path(tempfile.mkdtemp(prefix="ll-kafka-bench-"))
    store_home = args.keep or work / "store"
    broker = None
    try:
        if not (store_home / "events.sqlite").exists():
            store_home.mkdir(parents=True, exist_ok=True)
            seconds = build_store(store_home, args.events, args.seed)
            say(f"- store: built by ingesting simulated traffic in {seconds:.1f}s")
        else:
            say(f"- store: reusing {store_home}")
        broker, bootstrap_servers = start_broker(work)
        kafka = KafkaSettings(bootstrap=bootstrap_servers, partitions=3, group_prefix="bench")
        from consumers.relay import run_relay

        store = bootstrap(Settings(home=store_home, secret=SECRET)).store
        try:
            head = store.head_position()
            started = time.perf_counter()
            stats = run_relay(store, kafka, from_start=True, once=True, batch=20_000, log_every_s=3600)
            relay_s = time.perf_counter() - started
        finally:
            store.close()
        events = stats.published
        say(f"- topic {kafka.events_topic} (3 partitions) loaded by the relay: {events:,} events "
            f"(store head {head:,}) in {relay_s:.1f}s = {events / relay_s:,.0f} events/s")
        if not args.no_embedded:
            n, seconds = embedded_ceiling(store_home, work / "rm-embedded", args.batch * CATCH_UP_FACTOR)
            say(f"- the runner alone (the fold's ceiling): embedded catch-up of the same store, batch "
                f"{args.batch * CATCH_UP_FACTOR:,}, decode in a helper process: {n:,} events in {seconds:.2f}s = "
                f"{n / seconds:,.0f} events/s")
        runs = [("fetch processes (default)" if n == 0 else f"{n} fetch process{'es' if n > 1 else ''}", True, n)
                for n in args.fetch_processes] + ([] if args.no_inline else [("fetch inline", False, 0)])
        for round_no in range(args.rounds):
            raw_n, raw_s = raw_consume(kafka, events)
            raw_rate = raw_n / raw_s
            say(f"- {'' if args.rounds == 1 else f'round {round_no + 1}: '}peer (limit): raw kafka-python consume, "
                f"manual assignment: {raw_n:,} records in {raw_s:.2f}s = **{raw_rate:,.0f} records/s**")
            for i, (label, fetch_process, helpers) in enumerate(runs):
                ours_kafka = KafkaSettings(bootstrap=bootstrap_servers, partitions=3,
                                           group_prefix=f"bench{round_no}-{i}")
                home = work / f"rm-{round_no}-{i}"
                n, seconds, join = ours(ours_kafka, home, fetch_process, args.batch, helpers)
                size = sum(f.stat().st_size for f in home.glob("readmodels.sqlite*")) / 1e6
                say(f"- ours, `project --source kafka` catch-up into SQLite, {label}, batch {args.batch:,}: "
                    f"{n:,} events in {seconds:.2f}s = **{n / seconds:,.0f} events/s** = "
                    f"**{n / seconds / raw_rate:.0%} of raw** (group join {join:.1f}s apart; read models {size:.0f} MB)")
                shutil.rmtree(home, ignore_errors=True)
    finally:
        if broker is not None:
            stop_process(broker)
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_results:
        append_results("Kafka projection (issue \"Kafka pipeline\")", "bench.kafka_projection_bench", argv, lines)


if __name__ == "__main__":
    main()
