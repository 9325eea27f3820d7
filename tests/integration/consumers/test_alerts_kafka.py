"""SLA breach alerts onto a real broker (the bundled Tansu, or LEADLEDGER_KAFKA_BOOTSTRAP): one record
per alert, keyed by lead id, the CloudEvent as value; a broker that is down keeps the position."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from consumers.alerts import ALERT_TYPE, AlertDispatcher, KafkaSink, WebhookSink
from consumers.kafka.settings import KafkaSettings
from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.policies import PolicyStream
from lifecycle.store.repository import Changes
from tests.support.cli import T0
from tests.support.env import sqlite_settings
from tests.support.kafka_broker import TansuBroker
from tests.support.kafka_inbound import read_topic

POLICY = """
[calendars.x]
timezone = "UTC"
hours = { mon = "08:00-18:00", tue = "08:00-18:00" }
[reps.a]
calendar = "x"

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "5m"
clock = "calendar"
on_breach = ["alert", "reassign"]

[[sla]]
id = "quiet"
start = "assigned"
stop = ["contacted"]
target = "1h"
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LeadLedger]:
    ledger = bootstrap(sqlite_settings(tmp_path))
    yield ledger
    ledger.store.close()


def breach(app: LeadLedger, n: int, sla: str = "first-contact") -> tuple[UUID, str]:
    """A captured, assigned lead with a LeadSLABreached of `sla`: (lead id, breach event id)."""
    outcome = app.execute(cmd.Capture(T0, "test", None, email=f"k{n}@alerts.test", channel="webinar", name="Kay"))
    lead_id = UUID(str(outcome.lead_id))
    app.execute(cmd.Assign(T0 + timedelta(minutes=1), "test", None, lead=cmd.LeadRef(lead_id=lead_id), owner="a"))
    loaded = app.store.load(lead_id)
    assert loaded is not None
    started = T0 + timedelta(minutes=1)
    loaded.lead.sla_timer(breached=True, sla=sla, started_at=started, deadline=started + timedelta(minutes=5),
                          owner="a", policy_version=1, occurred_at=started + timedelta(minutes=5))
    app.store.commit(Changes(leads=[loaded]))
    return lead_id, app.store.records(lead_id)[-1].event_id


def fill(app: LeadLedger, leads: int, quiet: int = 0) -> dict[str, UUID]:
    """Alerting breaches of `leads` leads (and `quiet` of the rule without alert): breach id -> lead id."""
    PolicyStream(app.store).publish(POLICY, actor="test", now=T0)
    found = {}
    for i in range(leads):
        lead_id, event_id = breach(app, i)
        found[event_id] = lead_id
    for i in range(quiet):
        breach(app, 1000 + i, sla="quiet")
    return found


def alert_topic() -> str:
    return f"t{uuid.uuid4().hex[:10]}.alerts"


def records_of(bootstrap_servers: str, topic: str, at_least: int) -> list[Any]:
    return read_topic(bootstrap_servers, topic, at_least=at_least, timeout_s=20.0)


def test_alerts_are_published_keyed_by_lead_with_the_cloud_event_as_value(
    app: LeadLedger, kafka_settings: KafkaSettings
) -> None:
    expected = fill(app, leads=12, quiet=3)
    topic = alert_topic()
    dispatcher = AlertDispatcher(app.store, [KafkaSink(kafka_settings, topic, chunk_size=5)])
    try:
        counts = dispatcher.run_once()["kafka"]
        assert (counts.sent, counts.failed, counts.pending) == (12, 0, 0)
        assert app.store.relay_position("alerts:kafka") == app.store.head_position()
        records = records_of(kafka_settings.bootstrap, topic, at_least=12)
        assert len(records) == 12
        seen = {}
        for record in records:
            event = orjson.loads(record.value)
            headers = dict(record.headers)
            assert headers["ce_id"].decode() == event["id"]
            assert headers["content-type"] == b"application/cloudevents+json"
            assert record.key.decode() == event["subject"] == event["data"]["lead_id"]
            assert event["type"] == ALERT_TYPE and event["specversion"] == "1.0" and event["source"] == "leadledger"
            assert event["data"]["sla"] == "first-contact" and event["data"]["policy_version"] == 1
            assert b"@alerts.test" not in record.value and b"Kay" not in record.value
            seen[event["id"]] = UUID(record.key.decode())
        assert seen == expected

        # Caught up: nothing more. A new breach: one more record.
        assert dispatcher.run_once()["kafka"].sent == 0
        _, new = breach(app, 500)
        assert dispatcher.run_once()["kafka"].sent == 1
        again = records_of(kafka_settings.bootstrap, topic, at_least=13)
        assert len(again) == 13 and {orjson.loads(r.value)["id"] for r in again} == {*expected, new}
    finally:
        dispatcher.close()


def test_a_broker_that_is_down_keeps_the_position_and_the_alerts_go_out_later(
    app: LeadLedger, own_broker: TansuBroker
) -> None:
    expected = fill(app, leads=4)
    settings = KafkaSettings(bootstrap=own_broker.bootstrap, partitions=2)
    topic = alert_topic()
    own_broker.stop()
    dispatcher = AlertDispatcher(app.store, [KafkaSink(settings, topic, max_block_ms=2000, flush_timeout_s=5)])
    try:
        counts = dispatcher.run_once()["kafka"]
        assert (counts.sent, counts.failed, counts.pending) == (0, 1, 4)
        assert counts.error and "Kafka" in counts.error
        assert app.store.relay_position("alerts:kafka") < app.store.head_position()

        own_broker.start()  # empty: the sink creates the topic again
        counts = dispatcher.run_once()["kafka"]
        assert (counts.sent, counts.failed, counts.pending) == (4, 0, 0)
        records = records_of(settings.bootstrap, topic, at_least=4)
        assert {orjson.loads(r.value)["id"] for r in records} == set(expected)
    finally:
        dispatcher.close()


def test_a_crash_before_the_position_is_stored_republishes_that_chunk_only(
    app: LeadLedger, kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = fill(app, leads=12)
    topic = alert_topic()
    store = app.store
    original = store.set_relay_position
    calls = {"n": 0}

    def crash_on_second(name: str, position: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("crash: the chunk was acknowledged, its position not stored")
        original(name, position)

    monkeypatch.setattr(store, "set_relay_position", crash_on_second)
    first = AlertDispatcher(store, [KafkaSink(kafka_settings, topic, chunk_size=5)])
    try:
        with pytest.raises(KeyboardInterrupt):
            first.run_once()
    finally:
        first.close()
    monkeypatch.setattr(store, "set_relay_position", original)

    restarted = AlertDispatcher(store, [KafkaSink(kafka_settings, topic, chunk_size=5)])
    try:
        assert restarted.run_once()["kafka"].sent == 7  # the second chunk again, then the last two
    finally:
        restarted.close()
    records = records_of(kafka_settings.bootstrap, topic, at_least=17)
    ids = [orjson.loads(r.value)["id"] for r in records]
    assert len(ids) == 17 and set(ids) == set(expected)  # 5 + 5 + 5 again + 2: de-duplicated by id


def test_a_down_webhook_does_not_hold_back_kafka(app: LeadLedger, kafka_settings: KafkaSettings,
                                                 tmp_path: Path) -> None:
    expected = fill(app, leads=3)
    topic = alert_topic()
    down = WebhookSink("http://127.0.0.1:9/", dead_letters=tmp_path / "alerts.dead.jsonl", attempts=2,
                       backoff_s=0.01, timeout_s=1.0)
    dispatcher = AlertDispatcher(app.store, [down, KafkaSink(kafka_settings, topic)])
    try:
        counts = dispatcher.run_once()
    finally:
        dispatcher.close()
    assert (counts["webhook"].failed, counts["webhook"].pending) == (1, 3)
    assert (counts["kafka"].sent, counts["kafka"].pending) == (3, 0)
    records = records_of(kafka_settings.bootstrap, topic, at_least=3)
    assert {orjson.loads(r.value)["id"] for r in records} == set(expected)
