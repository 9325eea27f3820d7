"""Helpers for the Kafka inbound/relay tests: real producers and readers, store snapshots.

No tests here; the Kafka test modules import these (`tests.support.kafka_inbound`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.inbound import ConsumeOptions
from consumers.kafka.settings import KafkaSettings
from consumers.relay import partition_for
from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.inbound import InboundHandler, Tally
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from lifecycle.store.repository import LeadStore
from tests.support.snapshots import by_capture

START = datetime(2026, 1, 5, tzinfo=UTC)
TEST_SECRET = b"leadledger-test-secret"  # tests/conftest.py, so lead ids agree across stores

#: group timings that keep the bundled broker's joins short (FACTS: join waits on the timeouts)
FAST_GROUP = ConsumeOptions(batch=500, poll_timeout_ms=200, log_every_s=2.0, once=True,
                            session_timeout_ms=3000, heartbeat_interval_ms=1000, max_poll_interval_ms=10_000)

Record = tuple[bytes | None, bytes | None]  # (key, value)
#: envelope fields that differ between two stores holding the same history



def simulated(leads: int, seed: int, days: int = 30) -> list[dict[str, Any]]:
    return list(generate(leads=leads, seed=seed, start=START, days=days))


def inbound_key(message: dict[str, Any]) -> bytes | None:
    """How upstream should key an inbound record: the lead's e-mail, else its id (subject)."""
    data = message.get("data")
    email = data.get("email") if isinstance(data, dict) else None
    subject = message.get("subject")
    text = email or subject
    return text.encode() if isinstance(text, str) else None


def keyed(messages: Iterable[dict[str, Any]]) -> list[Record]:
    return [(inbound_key(m), orjson.dumps(m)) for m in messages]


def produce(bootstrap_servers: str, topic: str, records: Sequence[Record],
            headers: Sequence[list[tuple[str, bytes]]] | None = None) -> None:
    """Produce with a real producer (acks=all) and wait until every record is acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5,
                             max_request_size=4 * 1024 * 1024)
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=list(headers[i]) if headers else None)
            for i, (key, value) in enumerate(records)
        ]
        producer.flush(timeout=60)
        failed = [f.exception for f in futures if not f.succeeded()]
        assert not failed, f"{len(failed)} records not produced: {failed[0]!r}"
    finally:
        producer.close(timeout=10)


def read_topic(bootstrap_servers: str, topic: str, *, at_least: int = 0, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning to its current end (manual assignment, no group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest", group_id=None)
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            consumer.topics()  # refresh metadata
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend(batch)
            ends = [consumer.highwater(tp) for tp in tps]
            if (len(out) >= at_least and all(e is not None for e in ends)
                    and all(consumer.position(tp) >= (e or 0) for tp, e in zip(tps, ends, strict=True))):
                return out
        raise AssertionError(f"read only {len(out)} records of {topic} within {timeout_s}s")
    finally:
        consumer.close()


def snapshot(store: LeadStore) -> dict[str, list[dict[str, Any]]]:
    """Each lead's events (personal data opened), keyed by its e-mail (lead ids are random), minus
    what differs between stores: ids, subjects, record times, hashes."""
    return by_capture(store)


def ingested(home: Path, values: Iterable[bytes]) -> tuple[dict[str, list[dict[str, Any]]], Tally]:
    """What `ingest` makes of the same messages, in a separate embedded store."""
    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        tally = Tally()
        for result in InboundHandler(app).handle_stream(enumerate(values, start=1)):
            tally.add(result)
        return snapshot(app.store), tally
    finally:
        app.store.close()


def kafka_env(settings: KafkaSettings) -> dict[str, str]:
    """The environment that makes a `leadledger` subprocess use these Kafka settings."""
    return {
        "LEADLEDGER_KAFKA_BOOTSTRAP": settings.bootstrap,
        "LEADLEDGER_KAFKA_TOPIC_INBOUND": settings.inbound_topic,
        "LEADLEDGER_KAFKA_TOPIC_DLQ": settings.dlq_topic,
        "LEADLEDGER_KAFKA_TOPIC_EVENTS": settings.events_topic,
        "LEADLEDGER_KAFKA_PARTITIONS": str(settings.partitions),
        "LEADLEDGER_KAFKA_GROUP_PREFIX": settings.group_prefix,
    }


def with_group(settings: KafkaSettings, prefix: str) -> KafkaSettings:
    return settings.model_copy(update={"group_prefix": prefix})


def header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or []:
        if key == name:
            return bytes(value)
    return None


def stored(store: LeadStore) -> list[tuple[int, UUID, int, bytes]]:
    return list(store.iter_raw())


def check_topic(records: Iterable[ConsumerRecord], store: LeadStore, partitions: int) -> int:
    """Every stored event is on the topic, byte for byte, keyed and partitioned by lead,
    each lead's versions in order within its partition. Returns the number of duplicates."""
    rows = {(str(lead), version): state for _, lead, version, state in stored(store)}
    last: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        lead = record.key.decode()
        version = int(header(record, "ce_sequence") or b"0")
        assert record.partition == partition_for(record.key, partitions)
        assert record.value == rows[(lead, version)], "the stored bytes, unchanged"
        envelope = orjson.loads(record.value)
        assert header(record, "ce_type") == envelope["type"].encode()
        assert header(record, "ce_id") == envelope["id"].encode()
        assert envelope["subject"] == lead and envelope["sequence"] == version
        if version <= last[lead]:
            duplicates += 1  # an at-least-once repeat: consumers skip it by (lead, version)
            continue
        assert version == last[lead] + 1, f"lead {lead}: version {version} before {last[lead] + 1}"
        last[lead] = version
        seen.add((lead, version))
    assert seen == set(rows)
    return duplicates


def fill(app: LeadLedger, leads: int, seed: int) -> None:
    for result in InboundHandler(app, batch_size=1000).handle_stream(
        (i, orjson.dumps(m)) for i, m in enumerate(simulated(leads, seed), start=1)
    ):
        assert result.status != "dead", result.reason
