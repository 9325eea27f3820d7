"""Helpers for the Kafka projection tests: lead-events from a real store, dumps keyed by lead id.

`publish_events` writes what the relay writes (key = lead id, value = the stored state bytes,
headers ce_type / ce_sequence / ce_id), straight from `LeadStore.raw()` rows.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from consumers.kafka.log_ends import LogEnds
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import source_name
from leadledger.bootstrap import open_read_models
from leadledger.demo_kafka import stop_process
from lifecycle.settings import Settings
from lifecycle.store.repository import LeadStore
from projections.engine.runner import Runner
from tests.support.cli import SECRET_TEXT

RawRow = tuple[int, Any, int, bytes]

#: Fast rebalances on the bundled broker (a join waits for the rebalance timeout).
TUNING_ENV = {
    "LEADLEDGER_KAFKA_SESSION_TIMEOUT_MS": "3000",
    "LEADLEDGER_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "LEADLEDGER_KAFKA_MAX_POLL_INTERVAL_MS": "10000",
}


def create_topic(kafka: KafkaSettings, topic: str | None = None, partitions: int | None = None) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        admin.create_topics([NewTopic(topic or kafka.events_topic, partitions or kafka.partitions,
                                      kafka.replication)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def record_of(row: RawRow) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one stored row, as the relay publishes it."""
    _, lead_id, version, state = row
    envelope = orjson.loads(state)
    return (str(lead_id).encode(), state,
            [("ce_type", envelope["type"].encode()), ("ce_sequence", str(version).encode()),
             ("ce_id", str(envelope["id"]).encode())])


def publish_events(kafka: KafkaSettings, rows: Iterable[RawRow], producer: Any = None) -> int:
    """Publish stored rows to the lead-events topic in the given order; returns how many."""
    from kafka import KafkaProducer

    own = producer is None
    producer = producer or KafkaProducer(**kafka.client_kwargs(), linger_ms=20, batch_size=512 * 1024,
                                         max_request_size=8 * 1024 * 1024)
    n = 0
    try:
        for row in rows:
            key, value, headers = record_of(row)
            producer.send(kafka.events_topic, key=key, value=value, headers=headers)
            n += 1
        producer.flush()
    finally:
        if own:
            producer.close()
    return n


def all_rows(store: LeadStore) -> list[RawRow]:
    return list(store.iter_raw())


def by_lead_id(dump: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """A dump with lead numbers replaced by lead ids (numbers follow first appearance, which
    differs between a store's order and a topic's partitions), checkpoints left out."""
    ids = {row[0]: row[1] for row in dump["rm_timeline"]}
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table, rows in dump.items():
        if table == "rm_checkpoints":
            continue
        mapped = [(ids.get(r[0], r[0]), *r[1:]) if table not in ("rm_projections",) else r for r in rows]
        out[table] = sorted(mapped, key=repr)
    return out


def dump_of(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    db = open_read_models(settings)
    try:
        runner = Runner(db)
        runner.setup()
        return runner.dump()
    finally:
        db.close()


def checkpoints(settings: Settings, name: str) -> dict[int, int]:
    """rm_checkpoints of one source, read without the runner (works while a projector runs)."""
    if settings.postgres_dsn:
        import psycopg

        with psycopg.connect(settings.postgres_dsn) as conn:
            try:
                rows = conn.execute(f'SELECT partition_no, position_no FROM "{settings.postgres_schema}".rm_checkpoints '
                                    "WHERE source_name = %s", (name,)).fetchall()
            except psycopg.errors.UndefinedTable:
                return {}
            return {int(p): int(v) for p, v in rows}
    path = Path(settings.home) / "readmodels.sqlite"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            rows = conn.execute("SELECT partition_no, position_no FROM rm_checkpoints WHERE source_name = ?",
                                (name,)).fetchall()
            return {int(p): int(v) for p, v in rows}
    except sqlite3.OperationalError:
        return {}


def end_offsets(kafka: KafkaSettings, topic: str | None = None) -> dict[int, int]:
    ends = LogEnds(kafka)
    try:
        return {p: end for p, (_, end) in ends.offsets(topic or kafka.events_topic).items()}
    finally:
        ends.close()


def kafka_env(settings: Settings, kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """Environment of a `leadledger` role process: these stores, this broker, these topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(settings.home), LEADLEDGER_SECRET=SECRET_TEXT,
               LEADLEDGER_KAFKA_BOOTSTRAP=kafka.bootstrap,
               LEADLEDGER_KAFKA_TOPIC_INBOUND=kafka.inbound_topic, LEADLEDGER_KAFKA_TOPIC_DLQ=kafka.dlq_topic,
               LEADLEDGER_KAFKA_TOPIC_EVENTS=kafka.events_topic,
               LEADLEDGER_KAFKA_PARTITIONS=str(kafka.partitions),
               LEADLEDGER_KAFKA_GROUP_PREFIX=kafka.group_prefix, **TUNING_ENV)
    if settings.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=settings.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=settings.postgres_schema)
    env.update(extra)
    return env


def start_role(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`leadledger ARGS` as a process, its output appended to `log`."""
    out = log.open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "lifecycle", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    stop_process(proc, timeout)


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def caught_up(settings: Settings, kafka: KafkaSettings) -> bool:
    """Every partition's checkpoint is at its end offset (empty partitions need none)."""
    ends = end_offsets(kafka)
    marks = checkpoints(settings, source_name(kafka.events_topic))
    return bool(ends) and all(end == 0 or marks.get(p, -1) + 1 >= end for p, end in ends.items())


def chunks(rows: list[RawRow], size: int) -> Iterator[list[RawRow]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
