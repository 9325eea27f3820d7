"""Crash anywhere, same result: SIGKILL `leadledger consume` and `leadledger relay` mid-stream.

Kill points are random (seeded): after the store or the relay position has moved past a
random mark, plus a random delay, so kills land inside transactions, between the store
commit and the offset commit, between the flush and the position write, during a group
join. The final state must equal a clean run: nothing missing, nothing doubled.
"""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from leadledger.bootstrap import bootstrap
from lifecycle.audit import verify
from lifecycle.settings import Settings
from tests.support.cli import cli_env
from tests.support.kafka_inbound import (
    TEST_SECRET,
    check_topic,
    fill,
    ingested,
    kafka_env,
    keyed,
    produce,
    read_topic,
    simulated,
    snapshot,
    stored,
)

LEADLEDGER = shutil.which("leadledger") or str(Path(sys.executable).with_name("leadledger"))
CONSUME = ["consume", "--batch", "100", "--session-timeout-ms", "3000", "--max-poll-interval-ms", "10000",
           "--log-every", "1"]


def sqlite_value(db: Path, sql: str) -> int:
    """One number from the store's SQLite file, read while another process writes it (WAL)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(sql).fetchone()
    except sqlite3.OperationalError:
        return 0  # not created yet
    return int(row[0] or 0) if row else 0


def past(db: Path, sql: str, mark: int) -> bool:
    return sqlite_value(db, sql) >= mark


def kill_when(proc: subprocess.Popen[bytes], reached: Callable[[], bool], extra_delay: float,
              timeout_s: float = 45.0) -> bool:
    """SIGKILL `proc` once `reached()` (plus a delay); False if it finished first."""
    deadline = time.monotonic() + timeout_s
    while not reached():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.005)
    time.sleep(extra_delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return True


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([LEADLEDGER, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([LEADLEDGER, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_sigkill_consume_mid_stream_then_restart_equals_a_clean_run(kafka_settings: KafkaSettings,
                                                                    tmp_path: Path) -> None:
    rng = random.Random(20260302)
    records = keyed(simulated(leads=600, seed=17))
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    expected, tally = ingested(tmp_path / "clean", [value for _, value in records if value])

    home = tmp_path / "crashing"
    env = cli_env(home, **kafka_env(kafka_settings))
    db = home / "events.sqlite"
    kills = 0
    for _ in range(3):
        done = sqlite_value(db, "SELECT MAX(rowid) FROM stored_events")
        mark = done + rng.randint(min(150, (tally.applied - done) // 8), max(1, (tally.applied - done) // 4))
        proc = start(env, *CONSUME)
        try:
            killed = kill_when(proc, partial(past, db, "SELECT MAX(rowid) FROM stored_events", mark),
                               rng.uniform(0, 0.05))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kills += killed
    assert kills == 3, "every kill should land mid-stream"
    log = finish(env, *CONSUME, "--once")

    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        assert snapshot(app.store) == expected  # no event missing, none doubled, same order per lead
        assert verify(app.store).ok
    finally:
        app.store.close()
    assert "dead-lettered 0" in log
    assert read_topic(kafka_settings.bootstrap, kafka_settings.dlq_topic) == []
    assert tally.applied == sum(len(events) for events in expected.values())


def test_sigkill_relay_mid_stream_then_restart_publishes_everything_in_order(kafka_settings: KafkaSettings,
                                                                            tmp_path: Path) -> None:
    rng = random.Random(4242)
    home = tmp_path / "store"
    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        fill(app, leads=1200, seed=5)
        total = len(stored(app.store))
    finally:
        app.store.close()
    env = cli_env(home, **kafka_env(kafka_settings))
    db = home / "events.sqlite"
    position = f"SELECT position FROM leadledger_relay WHERE name = '{kafka_settings.events_topic}'"
    kills = 0
    for _ in range(4):
        done = sqlite_value(db, position)
        # a quarter of what is left at most: a kill overshoots by up to a batch and the delay,
        # and the mark must stay reachable for the next round
        mark = done + rng.randint(min(200, (total - done) // 8), max(1, (total - done) // 4))
        proc = start(env, "relay", "--batch", str(rng.choice([50, 200, 500])))
        try:
            kills += kill_when(proc, partial(past, db, position, mark), rng.uniform(0, 0.03))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert kills == 4, "every kill should land mid-stream"
    finish(env, "relay", "--once")

    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        assert app.store.recorder.relay_position(kafka_settings.events_topic) == app.store.head_position()
        records = read_topic(kafka_settings.bootstrap, kafka_settings.events_topic, at_least=total)
        duplicates = check_topic(records, app.store, kafka_settings.partitions)
        assert len(records) == total + duplicates
    finally:
        app.store.close()


def test_relay_from_start_republishes_everything_after_the_broker_lost_it(own_broker: object,
                                                                         tmp_path: Path) -> None:
    from tests.support.kafka_broker import TansuBroker

    assert isinstance(own_broker, TansuBroker)
    settings = KafkaSettings(bootstrap=own_broker.bootstrap).model_copy(update={"partitions": 3})
    home = tmp_path / "store"
    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        fill(app, leads=150, seed=12)
        total = len(stored(app.store))
    finally:
        app.store.close()
    env = cli_env(home, **kafka_env(settings))
    finish(env, "relay", "--once")
    assert len(read_topic(settings.bootstrap, settings.events_topic, at_least=total)) == total

    own_broker.restart_empty()  # memory storage: every topic and record is gone
    finish(env, "relay", "--once")  # the position says "all published": nothing is sent...
    assert read_topic(settings.bootstrap, settings.events_topic) == []  # ...but the topic is back
    log = finish(env, "relay", "--once", "--from-start")
    assert f"published {total} events" in log

    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        records = read_topic(settings.bootstrap, settings.events_topic, at_least=total)
        assert check_topic(records, app.store, settings.partitions) == 0
        assert len(records) == total
    finally:
        app.store.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_consume_cleanly_with_offsets_committed(kafka_settings: KafkaSettings,
                                                                  tmp_path: Path, sig: signal.Signals) -> None:
    records = keyed(simulated(leads=40, seed=3))
    ensure_topics(kafka_settings)
    produce(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    home = tmp_path / "store"
    env = cli_env(home, **kafka_env(kafka_settings))
    db = home / "events.sqlite"
    proc = subprocess.Popen([LEADLEDGER, *CONSUME], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 45
        while sqlite_value(db, "SELECT COUNT(*) FROM leadledger_inbound") < len(records) - 10:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"stopping after the batch in hand" in err and b"consumer stopped" in err
    log = finish(env, *CONSUME, "--once")
    assert "consumed 0:" in log  # everything was committed before the clean stop


def test_a_stop_signal_ends_a_following_relay_cleanly(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    home = tmp_path / "store"
    app = bootstrap(Settings(home=home, secret=TEST_SECRET))
    try:
        fill(app, leads=30, seed=9)
        total = len(stored(app.store))
    finally:
        app.store.close()
    env = cli_env(home, **kafka_env(kafka_settings))
    db = home / "events.sqlite"
    proc = subprocess.Popen([LEADLEDGER, "relay", "--poll-interval", "0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        position = f"SELECT position FROM leadledger_relay WHERE name = '{kafka_settings.events_topic}'"
        deadline = time.monotonic() + 30
        while sqlite_value(db, position) < total:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"published {total} events".encode() in err
