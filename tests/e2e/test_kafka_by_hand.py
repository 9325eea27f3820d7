"""What a user tries first with a Kafka tool of their own (issue 4's acceptance with `kcat`).

kcat is built on librdkafka, a different Kafka client from the kafka-python that leadledger
uses. This drives the same steps with confluent-kafka, the Python binding of librdkafka:
a SPEC §7 capture produced by hand becomes a lead that `leadledger leads` shows, and
`not json` becomes a dead letter with its original bytes and a reason that says what to do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from tests.support.cli import cli_env
from tests.support.kafka_inbound import kafka_env

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka is a dev dependency: "
                                      "pip install -e '.[dev]'")

LEADLEDGER = shutil.which("leadledger") or str(Path(sys.executable).with_name("leadledger"))

CAPTURE = {"specversion": "1.0", "id": "form-7731-0001", "source": "web-forms",
           "type": "leadledger.inbound.capture.v1", "time": "2026-03-02T09:15:00Z",
           "data": {"email": "Ada@Example.com", "name": "Ada L.", "company": "Example AG",
                    "channel": "webinar", "campaign": "q1-cloud", "consent": True}}


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([LEADLEDGER, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_capture_and_garbage_produced_with_librdkafka(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    ensure_topics(kafka_settings)
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_settings.bootstrap})
    producer.produce(kafka_settings.inbound_topic, json.dumps(CAPTURE).encode())  # no key, as `kcat -P` sends
    delivered: list[tuple[int, int]] = []
    producer.produce(kafka_settings.inbound_topic, b"not json",
                     on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset())))
    assert producer.flush(30) == 0, "librdkafka could not deliver to the broker"

    env = cli_env(tmp_path, **kafka_env(kafka_settings))
    run(env, "consume", "--once", "--session-timeout-ms", "3000", "--max-poll-interval-ms", "10000")
    leads = json.loads(run(env, "leads", "--json"))["leads"]
    assert [(lead["stage"], lead["channel"], lead["campaign"]) for lead in leads] == [("captured", "webinar",
                                                                                       "q1-cloud")]
    history = json.loads(run(env, "history", leads[0]["lead_id"], "--json"))
    assert [e["type"] for e in history["events"]] == ["leadledger.lead.LeadCaptured.v3"]

    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka_settings.bootstrap, "group.id": "by-hand",
                                         "enable.auto.commit": False})
    try:
        consumer.assign([confluent_kafka.TopicPartition(kafka_settings.dlq_topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(kafka_settings.partitions)])
        dead = [m for m in consumer.consume(num_messages=10, timeout=10) if m.error() is None]
    finally:
        consumer.close()
    assert [m.value() for m in dead] == [b"not json"]
    headers = {k: v.decode() for k, v in dead[0].headers()}
    assert headers["leadledger.reason"].startswith("not JSON: ")
    assert "send one CloudEvents 1.0 JSON object" in headers["leadledger.reason"]
    assert headers["leadledger.source.topic"] == kafka_settings.inbound_topic
    assert [(int(headers["leadledger.source.partition"]), int(headers["leadledger.source.offset"]))] == delivered
