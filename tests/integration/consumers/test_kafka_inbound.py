"""`leadledger consume` end to end on a real broker: the store equals `ingest` of the same messages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.inbound import run_consumer
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from leadledger.bootstrap import bootstrap
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from tests.support.cli import cli_env
from tests.support.kafka_inbound import (
    FAST_GROUP,
    ingested,
    kafka_env,
    keyed,
    produce,
    read_topic,
    simulated,
    snapshot,
    with_group,
)

LEADLEDGER = shutil.which("leadledger") or str(Path(sys.executable).with_name("leadledger"))


def test_consumed_stream_equals_ingest_of_the_same_messages(
    kafka_settings: KafkaSettings, backend_settings: Settings, tmp_path: Path
) -> None:
    messages = simulated(leads=150, seed=21)
    records = keyed(messages)
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    expected, tally = ingested(tmp_path / "reference", [value for _, value in records if value])
    assert tally.duplicates > 0 and tally.dead_lettered == 0  # simulate re-delivers ~0.5 %

    app = bootstrap(backend_settings)
    try:
        deadline = time.monotonic() + 60
        stats = run_consumer(InboundHandler(app), kafka_settings, FAST_GROUP,
                             should_stop=lambda: time.monotonic() > deadline)
        assert snapshot(app.store) == expected
    finally:
        app.store.close()
    assert (stats.records, stats.applied, stats.duplicates, stats.dead_lettered) == (
        len(records), tally.applied, tally.duplicates, 0)
    assert stats.commit_failures == 0

    # Offsets were committed: the same group, started again, has nothing left to apply.
    app = bootstrap(backend_settings)
    try:
        again = run_consumer(InboundHandler(app), kafka_settings, FAST_GROUP,
                             should_stop=lambda: time.monotonic() > deadline + 30)
    finally:
        app.store.close()
    assert again.records == 0


def test_the_consume_command_catches_up_and_applies_like_ingest(kafka_settings: KafkaSettings,
                                                                 tmp_path: Path) -> None:
    messages = simulated(leads=120, seed=8)
    records = keyed(messages)
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    expected, tally = ingested(tmp_path / "reference", [value for _, value in records if value])

    home = tmp_path / "consumer"
    settings = with_group(kafka_settings, kafka_settings.group_prefix + "-cli")
    env = cli_env(home, **{**kafka_env(settings), "LEADLEDGER_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    done = subprocess.run(  # --bootstrap wins over the environment
        [LEADLEDGER, "consume", "--bootstrap", settings.bootstrap, "--once", "--batch", "300",
         "--session-timeout-ms", "3000", "--max-poll-interval-ms", "10000", "--log-every", "1"],
        env=env, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert f"consumed {len(records)}: applied {tally.applied}, duplicates {tally.duplicates}, " \
           "dead-lettered 0" in done.stderr
    assert "lag p0=" in done.stderr  # the progress lines name the lag of every partition

    app = bootstrap(Settings(home=home, secret=b"leadledger-test-secret"))
    try:
        assert snapshot(app.store) == expected
    finally:
        app.store.close()
    assert read_topic(settings.bootstrap, settings.dlq_topic) == []


def test_consume_without_a_bootstrap_says_what_to_set(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    done = subprocess.run([LEADLEDGER, "consume", "--once"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "LEADLEDGER_KAFKA_BOOTSTRAP is not set" in done.stderr
    done = subprocess.run([LEADLEDGER, "relay", "--once"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "LEADLEDGER_KAFKA_BOOTSTRAP is not set" in done.stderr


@pytest.mark.parametrize("batch", [1, 7])
def test_tiny_batches_apply_the_same(kafka_settings: KafkaSettings, tmp_path: Path, batch: int) -> None:
    """Batch boundaries (one poll = one transaction) change nothing."""
    records = keyed(simulated(leads=15, seed=batch))
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    expected, _ = ingested(tmp_path / "reference", [value for _, value in records if value])
    app = bootstrap(Settings(home=tmp_path / "store", secret=b"leadledger-test-secret"))
    try:
        deadline = time.monotonic() + 60
        from dataclasses import replace

        run_consumer(InboundHandler(app), kafka_settings, replace(FAST_GROUP, batch=batch),
                     should_stop=lambda: time.monotonic() > deadline)
        assert snapshot(app.store) == expected
    finally:
        app.store.close()
