"""`leadledger status`: embedded positions without Kafka; relay, projector lag per partition and
the dead-letter count with a real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from consumers.kafka.settings import KafkaSettings
from leadledger.bootstrap import open_store
from lifecycle.settings import Settings
from tests.support.cli import cli_env
from tests.support.env import TEST_SECRET
from tests.support.kafka_projection import create_topic, kafka_env
from tests.support.reference import simulated_app


def leadledger(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=True)


def status_json(env: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(leadledger(env, "status", "--json").stdout)
    return result


def test_status_without_kafka_reports_embedded_positions(tmp_path: Path) -> None:
    simulated_app(Settings(home=tmp_path, secret=TEST_SECRET), leads=20, seed=4).store.close()
    env = cli_env(tmp_path)
    report = status_json(env)
    head = report["store"]["head"]
    assert head > 20
    assert report["embedded_projector"] == {"source": "store", "checkpoint": None, "lag": head}
    assert report["kafka"]["configured"] is False
    leadledger(env, "project", "--once")
    report = status_json(env)
    assert report["embedded_projector"] == {"source": "store", "checkpoint": head, "lag": 0}
    text = leadledger(env, "status").stdout
    assert "Kafka is not configured" in text
    assert f"checkpoint {head}, 0 behind" in text


def test_status_with_kafka_reports_relay_projector_lag_and_dead_letters(
        tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    kafka = kafka_settings
    s = Settings(home=tmp_path, secret=TEST_SECRET)
    simulated_app(s, leads=25, seed=6).store.close()
    env = kafka_env(s, kafka)
    report = status_json(env)
    head = report["store"]["head"]
    k = report["kafka"]
    assert k["configured"] and k["reachable"]
    assert k["relay"] == {"topic": kafka.events_topic, "position": 0, "store_head": head, "behind": head}
    assert k["projector"]["topic_exists"] is False and k["projector"]["lag"] == 0
    assert k["dlq"]["records"] == 0

    leadledger(env, "relay", "--once")
    report = status_json(env)["kafka"]
    assert report["relay"]["behind"] == 0 and report["relay"]["position"] == head
    parts = report["projector"]["partitions"]
    assert len(parts) == kafka.partitions
    assert all(p["checkpoint"] is None for p in parts)
    assert report["projector"]["lag"] == head == sum(p["end_offset"] for p in parts)

    leadledger(env, "project", "--source", "kafka", "--once")
    report = status_json(env)["kafka"]
    parts = report["projector"]["partitions"]
    assert report["projector"]["lag"] == 0
    assert all(p["lag"] == 0 and p["checkpoint"] == p["end_offset"] - 1 for p in parts if p["end_offset"])

    create_topic(kafka, kafka.dlq_topic)
    producer = KafkaProducer(**kafka.client_kwargs())
    for i in range(3):
        producer.send(kafka.dlq_topic, key=b"k", value=b"not json %d" % i)
    producer.flush()
    producer.close()
    report = status_json(env)["kafka"]
    assert report["dlq"]["records"] == 3
    text = leadledger(env, "status").stdout
    assert "dead letters in" in text and ": 3" in text
    assert f"position {head} of store head {head}, 0 behind" in text
    for p in parts:
        assert f"partition {p['partition']}: checkpoint {p['checkpoint']}, end {p['end_offset']}, lag 0" in text


def test_positions_are_read_in_the_order_the_data_flows(kafka_settings: KafkaSettings, tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    """Read in any other order, a role that moves between two reads can make an unfinished
    pipeline look caught up (seen: a store head read just before `consume` committed, paired
    with the committed offsets read just after). Each read is spied on, then done for real."""
    from consumers import status
    from lifecycle.store.repository import LeadStore
    from lifecycle.store.sqlite import SQLiteLeadRecorder

    create_topic(kafka_settings)
    create_topic(kafka_settings, kafka_settings.inbound_topic)
    create_topic(kafka_settings, kafka_settings.dlq_topic)
    settings = Settings(home=tmp_path, secret=TEST_SECRET)
    simulated_app(settings, leads=5, seed=4).store.close()
    reads: list[str] = []

    def spy(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def read(*args: Any, **kwargs: Any) -> Any:
            if label == "end offsets":
                topic = args[1]
                reads.append({kafka_settings.inbound_topic: "inbound ends", kafka_settings.dlq_topic: "dlq ends",
                              kafka_settings.events_topic: "lead-events ends"}[topic])
            else:
                reads.append(label)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, read)

    spy(status, "_group_offsets", "inbound committed")
    spy(LeadStore, "head_position", "store head")
    spy(SQLiteLeadRecorder, "relay_position", "relay position")
    spy(status, "_offsets", "end offsets")
    spy(status, "_read_checkpoints", "projector checkpoints")
    store = open_store(settings)
    try:
        report = status.collect(store, None, kafka_settings, "sqlite")
    finally:
        store.close()
    assert report["kafka"]["reachable"] is True
    assert reads == ["inbound ends", "inbound committed", "dlq ends", "store head", "relay position",
                     "lead-events ends", "projector checkpoints"]
