"""The Kafka source of the projection runner on a real broker: equal to the embedded fold,
duplicates change nothing, a SIGKILLed `project --source kafka` resumes exactly, a broker
restarted empty is re-read and converges, two projectors in one group equal one."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.kafka.topics import source_name
from consumers.projector import project_from_kafka
from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from lifecycle.store.repository import LeadStore
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from tests.support.env import POSTGRES_DSN, SKIP_NO_POSTGRES, TEST_SECRET
from tests.support.kafka_projection import (
    all_rows,
    by_lead_id,
    caught_up,
    checkpoints,
    create_topic,
    dump_of,
    kafka_env,
    publish_events,
    start_role,
    stop,
    wait_for,
)
from tests.support.reference import simulated_app

FAST = ConsumerTuning(session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=10000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LeadStore, dict[str, list[tuple[Any, ...]]]]]:
    """A store filled through the inbound handler, and the embedded read models of it."""
    home = tmp_path_factory.mktemp("store")
    app = simulated_app(Settings(home=home, secret=TEST_SECRET), leads=150, seed=11)
    embedded = Settings(home=tmp_path_factory.mktemp("embedded"), secret=TEST_SECRET)
    runner = Runner(open_read_models(embedded))
    runner.setup()
    runner.catch_up(EmbeddedSource(app.store))
    expected = by_lead_id(runner.dump())
    runner.db.close()
    yield app.store, expected
    app.store.close()


def project_once(settings: Settings, kafka: KafkaSettings, **kwargs: Any) -> int:
    db = open_read_models(settings)
    try:
        return project_from_kafka(db, kafka, once=True, tuning=FAST, log_every=60, echo=lambda _: None,
                                  **kwargs).events
    finally:
        db.close()


@pytest.mark.parametrize("fetch_process", [True, False], ids=["fetch-process", "fetch-inline"])
def test_equals_the_embedded_fold_and_duplicates_change_nothing(
        world: tuple[LeadStore, dict[str, list[tuple[Any, ...]]]], kafka_settings: KafkaSettings,
        tmp_path: Path, fetch_process: bool) -> None:
    store, expected = world
    kafka = kafka_settings
    create_topic(kafka)
    rows = all_rows(store)
    publish_events(kafka, rows)
    s = Settings(home=tmp_path, secret=TEST_SECRET)
    assert project_once(s, kafka, fetch_process=fetch_process, batch_size=333) == len(rows)
    assert by_lead_id(dump_of(s)) == expected
    marks = checkpoints(s, source_name(kafka.events_topic))
    assert sum(v + 1 for v in marks.values()) == len(rows)
    # an at-least-once relay re-sending, and duplicates injected at random
    rng = random.Random(7)
    again = [r for r in rows if rng.random() < 0.3]
    publish_events(kafka, again)
    publish_events(kafka, rng.sample(rows, 40))
    assert project_once(s, kafka, fetch_process=fetch_process) == len(again) + 40
    assert by_lead_id(dump_of(s)) == expected


def test_sigkill_mid_stream_then_restart_equals_a_clean_run(
        world: tuple[LeadStore, dict[str, list[tuple[Any, ...]]]], kafka_settings: KafkaSettings,
        tmp_path: Path) -> None:
    """Each round leaves the projector a backlog, freezes it (SIGSTOP) a random moment after its
    first checkpoint moved, publishes more, then SIGKILLs it. Freezing first makes "killed while
    behind" a fact read off the checkpoints, not a timing hope: a round in which the projector
    had already caught up is simply not counted, and rounds go on until two kills landed
    mid-stream."""
    store, expected = world
    kafka = kafka_settings
    create_topic(kafka)
    rows = all_rows(store)
    rng = random.Random(2026)
    s = Settings(home=tmp_path / "rm", secret=TEST_SECRET)
    name = source_name(kafka.events_topic)
    chunk = len(rows) // 12
    published = 0
    killed_mid_way = 0
    round_no = 0
    while killed_mid_way < 2 and published + 2 * chunk <= len(rows):
        published += publish_events(kafka, rows[published:published + chunk])
        proc = start_role(kafka_env(s, kafka), "project", "--source", "kafka", "--batch-size", str(rng.randint(1, 5)),
                          "--log-every", "1", log=tmp_path / f"project-{round_no}.log")
        try:
            before = sum(checkpoints(s, name).values())
            wait_for(lambda before=before: sum(checkpoints(s, name).values()) > before, 60, "the projector to start",
                     interval=0.002)
            time.sleep(rng.uniform(0.0, 0.03))
            proc.send_signal(signal.SIGSTOP)
            done = sum(v + 1 for v in checkpoints(s, name).values())
            # events still arriving while it is down
            published += publish_events(kafka, rows[published:published + chunk])
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert done <= published
        killed_mid_way += 0 < done < published - chunk  # part of its backlog was still unapplied
        round_no += 1
    assert killed_mid_way, f"no projector was killed while behind in {round_no} rounds"
    publish_events(kafka, rows[published:])
    proc = start_role(kafka_env(s, kafka), "project", "--source", "kafka", "--once", "--batch-size", "500",
                      log=tmp_path / "project-final.log")
    assert proc.wait(timeout=120) == 0, (tmp_path / "project-final.log").read_text()
    assert by_lead_id(dump_of(s)) == expected
    assert sum(v + 1 for v in checkpoints(s, name).values()) == len(rows)


def test_broker_restarted_empty_is_reread_and_converges(
        world: tuple[LeadStore, dict[str, list[tuple[Any, ...]]]], own_broker: Any, tmp_path: Path) -> None:
    """After a restart the topic's offsets start at 0 again while the stored checkpoints are
    higher: the projector notices (checkpoint past the end, or the group's offsets gone) and
    re-reads those partitions from the beginning; `relay --from-start` republishes the store
    and lead+version de-duplication keeps the tables."""
    store, expected = world
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, inbound_topic="reset.inbound", dlq_topic="reset.dlq",
                          events_topic="reset.lead-events", partitions=3, group_prefix="reset")
    rows = all_rows(store)
    rng = random.Random(99)
    s = Settings(home=tmp_path / "rm", secret=TEST_SECRET)
    store_home = Path(store.recorder.datastore.pool.db_name).parent  # type: ignore[attr-defined]
    relay_env = kafka_env(Settings(home=store_home, secret=TEST_SECRET), kafka)
    create_topic(kafka)
    # the old log held duplicates (an at-least-once relay): its offsets differ from the new one's
    publish_events(kafka, rows[: len(rows) // 2])
    publish_events(kafka, rows[: len(rows) // 3])
    log = tmp_path / "project.log"
    proc = start_role(kafka_env(s, kafka), "project", "--source", "kafka", "--log-every", "1", log=log)
    try:
        wait_for(lambda: caught_up(s, kafka), 60, "the first catch-up")
        for attempt in range(2):
            own_broker.restart_empty()
            time.sleep(rng.uniform(0.0, 2.0))
            relay = start_role(relay_env, "relay", "--from-start", "--once", log=tmp_path / f"relay-{attempt}.log")
            assert relay.wait(timeout=120) == 0, (tmp_path / f"relay-{attempt}.log").read_text()
            try:
                wait_for(lambda: caught_up(s, kafka), 90, f"catch-up after restart {attempt}", interval=0.3)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; checkpoints {checkpoints(s, source_name(kafka.events_topic))}; "
                                     f"projector log:\n{log.read_text()[-4000:]}") from None
            assert by_lead_id(dump_of(s)) == expected
    finally:
        stop(proc)
    assert "re-reading it from the beginning" in log.read_text()


@pytest.mark.postgres
@SKIP_NO_POSTGRES
def test_two_projectors_in_one_group_equal_one(
        world: tuple[LeadStore, dict[str, list[tuple[Any, ...]]]], kafka_settings: KafkaSettings,
        postgres_schema: str, tmp_path: Path) -> None:
    store, expected = world
    kafka = kafka_settings
    create_topic(kafka)
    rows = all_rows(store)
    s = Settings(home=tmp_path, postgres_dsn=POSTGRES_DSN, postgres_schema=postgres_schema, secret=TEST_SECRET)
    rng = random.Random(5)
    publish_events(kafka, rows[: len(rows) // 3])
    env = kafka_env(s, kafka)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = start_role(env, "project", "--source", "kafka", "--batch-size", "40", "--log-every", "1", log=logs[0])
    second = None
    try:
        name = source_name(kafka.events_topic)
        wait_for(lambda: checkpoints(s, name), 60, "the first projector to start")
        time.sleep(rng.uniform(0.0, 0.5))
        # the second joins mid-stream: partitions move between them while events arrive
        second = start_role(env, "project", "--source", "kafka", "--batch-size", "40", "--log-every", "1",
                            log=logs[1])
        rest = rows[len(rows) // 3:]
        for part in range(4):
            time.sleep(rng.uniform(0.2, 1.0))
            publish_events(kafka, rest[len(rest) * part // 4: len(rest) * (part + 1) // 4])
        publish_events(kafka, rows[len(rows) // 3: len(rows) // 2])  # again: duplicates too
        wait_for(lambda: caught_up(s, kafka) and all("assigned" in p.read_text() for p in logs), 120,
                 "both projectors to share the partitions and catch up", interval=0.3)
        time.sleep(0.5)
        assert by_lead_id(dump_of(s)) == expected
    finally:
        stop(first)
        if second is not None:
            stop(second)
    owned: list[set[str]] = [set() for _ in logs]
    for i, path in enumerate(logs):
        for line in path.read_text().splitlines():
            if " assigned:" in line:
                owned[i].add(line.split("partition ")[1].split()[0])
    assert owned[0] and owned[1], f"both must have held partitions: {owned}"
