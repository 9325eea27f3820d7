"""The outbox relay on a real broker, from a SQLite and a PostgreSQL store."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from kafka import KafkaProducer

from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from consumers.relay import Relay, make_producer, partition_for, run_relay
from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.settings import Settings
from tests.support.kafka_inbound import check_topic, fill, read_topic, stored


def test_relay_publishes_the_store_in_order_and_resumes_where_it_stopped(
    app: LeadLedger, kafka_settings: KafkaSettings
) -> None:
    fill(app, leads=120, seed=4)
    first = run_relay(app.store, kafka_settings, once=True, batch=300)
    head = app.store.head_position()
    assert first.published == len(stored(app.store)) and first.position == head
    assert app.store.recorder.relay_position(kafka_settings.events_topic) == head

    records = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic, at_least=first.published)
    assert check_topic(records, app.store, kafka_settings.partitions) == 0
    assert len(records) == first.published

    # Nothing new: nothing sent. New events: only they are sent, after the old ones.
    assert run_relay(app.store, kafka_settings, once=True).published == 0
    fill(app, leads=30, seed=99)
    more = run_relay(app.store, kafka_settings, once=True, batch=50)
    assert more.published == app.store.head_position() - head
    records = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic,
                         at_least=first.published + more.published)
    assert check_topic(records, app.store, kafka_settings.partitions) == 0


def test_relay_positions_are_kept_per_topic_and_from_start_republishes(
    app: LeadLedger, kafka_settings: KafkaSettings
) -> None:
    fill(app, leads=20, seed=2)
    recorder = app.store.recorder
    assert recorder.relay_position(kafka_settings.events_topic) == 0
    total = run_relay(app.store, kafka_settings, once=True).published
    assert recorder.relay_position("another-topic") == 0
    again = run_relay(app.store, kafka_settings, once=True, from_start=True)
    assert again.published == total
    records = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic, at_least=2 * total)
    assert check_topic(records, app.store, kafka_settings.partitions) == total  # each event twice


def test_our_partitions_agree_with_kafka_pythons_default_partitioner(kafka_settings: KafkaSettings,
                                                                   tmp_path: Path) -> None:
    """Other producers keyed by lead id (default partitioner) land on the same partitions."""
    ensure_topics(kafka_settings)
    keys = [str(UUID(int=i * 7919 + 13)).encode() for i in range(300)]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap, acks="all")
    try:
        futures = [producer.send(kafka_settings.events_topic, key=k, value=b"x") for k in keys]
        producer.flush(timeout=30)
        chosen = [f.get(timeout=10).partition for f in futures]
    finally:
        producer.close(timeout=10)
    assert chosen == [partition_for(k, kafka_settings.partitions) for k in keys]
    assert len(set(chosen)) == kafka_settings.partitions


def test_a_relay_reads_the_partition_count_of_the_topic_it_finds(
    app: LeadLedger, kafka_settings: KafkaSettings
) -> None:
    """A topic made elsewhere with another partition count: the relay partitions for that count."""

    ensure_topics(kafka_settings.model_copy(update={"partitions": 5}))
    fill(app, leads=25, seed=6)
    producer = make_producer(kafka_settings)
    try:
        relay = Relay(app.store, producer, kafka_settings.events_topic)
        while relay.publish_batch(100):
            pass
    finally:
        producer.close(timeout=10)
    records: list[Any] = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic,
                                    at_least=relay.stats.published)
    assert check_topic(records, app.store, 5) == 0


def test_a_following_relay_publishes_events_stored_after_it_caught_up(
    backend_settings: Settings, kafka_settings: KafkaSettings
) -> None:
    """Follow mode polls the store: a writer elsewhere appends, the running relay publishes."""
    import threading
    import time

    writer = bootstrap(backend_settings)
    relay_app = bootstrap(backend_settings)
    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        try:
            run_relay(relay_app.store, kafka_settings, poll_interval_s=0.05, should_stop=stop.is_set)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    thread = threading.Thread(target=follow)
    try:
        fill(writer, leads=10, seed=1)
        thread.start()
        for seed in (2, 3):
            time.sleep(0.3)
            fill(writer, leads=10, seed=seed)
        head = writer.store.head_position()
        deadline = time.monotonic() + 30
        while writer.store.recorder.relay_position(kafka_settings.events_topic) < head:
            assert time.monotonic() < deadline and not failures, failures
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
        relay_app.store.close()
    try:
        assert not failures
        records = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic, at_least=head)
        assert check_topic(records, writer.store, kafka_settings.partitions) == 0
    finally:
        writer.store.close()
