"""The consumer dies exactly between "stored + dead letters acknowledged" and "offset committed".

The random SIGKILL loop (tests/e2e) may or may not hit that instant; here it is hit on
purpose: the batch comes back, its applied records count as duplicates, and so do its records
the lifecycle refused (their outcome was stored with the batch: they stay refused, never
re-decided on the lead's later state); its undecodable records are dead-lettered again
(at-least-once), and the store is what a clean run gives. Lead ids are random, so stores are
compared lead by lead through each lead's e-mail.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
from kafka.consumer.fetcher import ConsumerRecord

from consumers.inbound import (
    HEADER_OFFSET,
    HEADER_PARTITION,
    InboundConsumer,
    make_consumer,
    make_dlq_producer,
    run_consumer,
)
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from leadledger.bootstrap import bootstrap
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from tests.support.kafka_inbound import (
    FAST_GROUP,
    TEST_SECRET,
    header,
    ingested,
    keyed,
    produce,
    read_topic,
    simulated,
)
from tests.support.snapshots import by_capture


class Crash(BaseException):
    """Stands for the process dying at this instant (nothing after it runs)."""


class DiesBeforeCommitting(InboundConsumer):
    """Stores the batch and acknowledges its dead letters, then dies instead of committing."""

    crash_on_batch = 3
    crashed: Sequence[ConsumerRecord] = ()

    def _commit(self, records: Sequence[ConsumerRecord]) -> None:
        if self.stats.batches + 1 == self.crash_on_batch:
            self.crashed = records
            raise Crash
        super()._commit(records)


def test_a_crash_between_store_and_offset_commit_redelivers_without_changing_anything(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    messages = simulated(leads=60, seed=31)
    records = keyed(messages)
    for i in range(len(records) - 5, 0, -9):  # garbage among them, dead-lettered
        records.insert(i, (records[i][0], b"garbage %d" % i))
    for i in range(len(records) - 3, 0, -7):  # and messages the lifecycle refuses (their key is kept)
        key = records[i][0]
        if key and b"@" in key:
            records.insert(i, (key, orjson.dumps({
                "specversion": "1.0", "id": f"too-early-{i}", "source": "crm", "time": "2026-01-05T00:00:00Z",
                "type": "leadledger.inbound.transition.v1", "data": {"email": key.decode(), "trigger": "win",
                                                                     "amount": 1.0, "currency": "EUR"}})))
    bad = sum(1 for _, v in records if v and v.startswith(b"garbage"))
    refused = sum(1 for _, v in records if v and b"too-early-" in v)
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    expected, clean = ingested(tmp_path / "clean", [v for _, v in records if v])
    assert clean.dead_lettered == bad + refused and refused > 5

    options = replace(FAST_GROUP, batch=100)
    store_settings = Settings(home=tmp_path / "store", secret=TEST_SECRET)
    app = bootstrap(store_settings)
    consumer = make_consumer(kafka_settings, options)
    dlq = make_dlq_producer(kafka_settings)
    dying = DiesBeforeCommitting(InboundHandler(app), consumer, dlq, kafka_settings, options)
    try:
        deadline = time.monotonic() + 60
        try:
            dying.run(lambda: time.monotonic() > deadline)
            raise AssertionError("the consumer should have died")
        except Crash:
            pass
        stored_at_crash = len(list(app.store.iter_raw()))
    finally:
        dlq.close(timeout=10)
        consumer.close(autocommit=False)
        app.store.close()
    applied_in_crashed_batch = stored_at_crash - dying.stats.applied
    assert applied_in_crashed_batch > 0
    crashed_values = [r.value for r in dying.crashed]
    crashed_bad = sum(1 for v in crashed_values if v.startswith(b"garbage"))
    crashed_refused = sum(1 for v in crashed_values if b"too-early-" in v)
    assert crashed_bad and crashed_refused and len(crashed_values) > crashed_bad + crashed_refused

    app = bootstrap(store_settings)
    try:
        deadline = time.monotonic() + 60
        again = run_consumer(InboundHandler(app), kafka_settings, options, lambda: time.monotonic() > deadline)
        assert by_capture(app.store) == expected
    finally:
        app.store.close()
    # Everything after the two committed batches came again: the crashed batch's stored
    # records are duplicates now, its garbage is dead-lettered again.
    assert again.records == len(records) - dying.stats.records
    assert again.applied == clean.applied - stored_at_crash
    assert again.duplicates >= applied_in_crashed_batch + crashed_refused  # refused ones stay refused
    # dead-lettered again: the crashed batch's garbage (no key to remember) and what came after it
    assert again.dead_lettered == bad + refused - dying.stats.dead_lettered - crashed_refused

    letters = read_topic(kafka_settings.bootstrap, kafka_settings.dlq_topic, at_least=bad + refused + crashed_bad)
    sources = {(header(r, HEADER_PARTITION), header(r, HEADER_OFFSET)) for r in letters}
    assert len(sources) == bad + refused  # every bad or refused record has its dead letter...
    assert len(letters) >= bad + refused + crashed_bad  # ...and the crashed batch's garbage was sent twice
