"""`operate --source kafka` on a real broker and a real store (SQLite and PostgreSQL): the same
decisions as the embedded operator, nothing decided twice when the relay re-sends, restarts resume
from the per-partition checkpoint, and a record without its notification id is refused clearly."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

import tests.integration.lifecycle.test_operate as op
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from consumers.operate_kafka import KafkaRows
from consumers.relay import Relay, make_producer, run_relay
from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.operate import OperateReport, OperatorRunner
from tests.support.cli import cli_env
from tests.support.env import sqlite_settings
from tests.support.kafka_inbound import kafka_env
from tests.support.kafka_projection import all_rows, end_offsets, publish_events

MONDAY, NOW = op.MONDAY, op.NOW
DAY2 = MONDAY + timedelta(days=1, hours=3)


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[LeadLedger]:
    """A second store (SQLite) fed the same inputs, operated from its own log."""
    ledger = bootstrap(sqlite_settings(tmp_path / "twin"))
    yield ledger
    ledger.store.close()


def _relay(app: LeadLedger, kafka: KafkaSettings, **options: Any) -> int:
    return run_relay(app.store, kafka, once=True, batch=options.pop("batch", 97), **options).published


def _kafka(app: LeadLedger, kafka: KafkaSettings, **options: Any) -> OperatorRunner:
    return OperatorRunner(app.store, source=KafkaRows(app.store, kafka), **options)


def _run(runner: OperatorRunner, now: Any) -> OperateReport:
    return runner.run_once(now)


def _second_wave(app: LeadLedger) -> None:
    """More leads qualified on days 2 and 3 (after the operator's first step), two of them contacted."""
    for i in range(6):
        at = MONDAY + timedelta(days=1, hours=4 + 5 * i, minutes=7 * i)
        out = app.execute(cmd.Capture(occurred_at=at, actor="test", message_key=None, email=f"w{i}@wave.example",
                                      channel="web"))
        assert out.lead_id is not None
        app.execute(cmd.Transition(occurred_at=at + timedelta(minutes=2), actor="test", message_key=None,
                                   lead=op._ref(out.lead_id), trigger="qualify_mql", override=True, reason="w"))
        if i % 3 == 0:
            app.execute(cmd.Contact(occurred_at=at + timedelta(minutes=20), actor="test", message_key=None,
                                    lead=op._ref(out.lead_id)))


def _same_decisions(a: LeadLedger, b: LeadLedger) -> None:
    """Kind, lead (by capture order), version, time and data (owner, reasons …) of every decision."""
    left, right = op._decisions_in_lead_order(a), op._decisions_in_lead_order(b)
    assert left, "no decisions: the test proved nothing"
    assert left == right
    assert op._owners(a) == op._owners(b)


def _state(app: LeadLedger) -> dict[str, Any]:
    found = app.store.operator_state("operator")
    assert found is not None
    loaded: dict[str, Any] = orjson.loads(found[1])
    return loaded


def test_kafka_decides_what_the_store_decides(app: LeadLedger, twin: LeadLedger, kafka_settings: KafkaSettings,
                                              ) -> None:
    """Same inputs, same steps; one operator from the topic (small batches, one runner across the
    steps), the other from its store's log: the same decisions, event for event."""
    for ledger in (app, twin):
        op._published(ledger)
        op._history(ledger)
    embedded = OperatorRunner(twin.store)
    kafka = _kafka(app, kafka_settings, batch=4)
    try:
        _relay(app, kafka_settings)
        first = _run(kafka, DAY2)
        embedded.run_once(DAY2)
        assert sum(first.decisions.values()) > 0
        state = _state(app)
        assert state["source"] == "kafka" and state["topic"] == kafka_settings.events_topic
        # a checkpoint per partition that holds records (lead ids are random: a partition may hold none)
        filled = {str(p) for p, end in end_offsets(kafka_settings).items() if end > 0}
        assert filled and set(state["offsets"]) == filled and state["position"] == first.position
        for ledger in (app, twin):
            _second_wave(ledger)
        _relay(app, kafka_settings)  # the first step's decisions and the new events
        _run(kafka, NOW)
        embedded.run_once(NOW)
        _same_decisions(app, twin)
        _relay(app, kafka_settings)
        assert _run(kafka, NOW).decisions == {}  # its own decisions come back from the topic: skipped
    finally:
        kafka.close()
    _same_decisions(app, twin)


def test_a_relay_that_sends_again_decides_nothing_twice(app: LeadLedger, twin: LeadLedger,
                                                        kafka_settings: KafkaSettings) -> None:
    for ledger in (app, twin):
        op._published(ledger)
        op._history(ledger)
    OperatorRunner(twin.store).run_once(NOW)
    # repeats on the topic before the operator ever read it: the second half sent twice, then everything
    total = _relay(app, kafka_settings)
    producer = make_producer(kafka_settings)
    try:
        relay = Relay(app.store, producer, kafka_settings.events_topic)
        relay.rewind(app.store.head_position() // 2)
        while relay.publish_batch(50):
            pass
    finally:
        producer.close(timeout=10)
    assert _relay(app, kafka_settings, from_start=True) == total
    kafka = _kafka(app, kafka_settings, batch=10)
    try:
        report = _run(kafka, NOW)
        assert report.handled == sum(1 for row in all_rows(twin.store) if row[0] <= total
                                     and orjson.loads(row[3])["actor"] not in ("router", "sla"))
        _same_decisions(app, twin)
        before = op._decisions(app)
        # the decisions reach the topic, then everything is sent once more: nothing new is decided
        _relay(app, kafka_settings)
        _relay(app, kafka_settings, from_start=True)
        assert _run(kafka, NOW).decisions == {}
    finally:
        kafka.close()
    again = _kafka(app, kafka_settings)
    try:
        assert _run(again, NOW).decisions == {}
    finally:
        again.close()
    assert op._decisions(app) == before
    counts: dict[tuple[str, int], int] = {}
    for lead, version, *_ in before:
        counts[(lead, version)] = counts.get((lead, version), 0) + 1
    assert set(counts.values()) == {1}


def test_a_restart_resumes_at_the_checkpoint_and_fires_what_fell_due_meanwhile(
        app: LeadLedger, kafka_settings: KafkaSettings) -> None:
    op._published(app)
    op._history(app, leads=6, seed=3)  # earlier leads: records before the checkpoint
    out = app.execute(cmd.Capture(occurred_at=MONDAY + timedelta(days=3, hours=1), actor="test", message_key=None,
                                  email="late@firm.example", channel="web"))
    assert out.lead_id is not None
    lead = str(out.lead_id)
    app.execute(cmd.Transition(occurred_at=MONDAY + timedelta(days=3, hours=1, minutes=1), actor="test",
                               message_key=None, lead=op._ref(out.lead_id), trigger="qualify_mql", override=True,
                               reason="x"))
    _relay(app, kafka_settings)
    first = _kafka(app, kafka_settings)
    try:
        _run(first, MONDAY + timedelta(days=3, hours=1, minutes=2))
    finally:
        first.close()
    assert [d[2].split(".")[2] for d in op._decisions(app) if d[0] == lead] == ["LeadAssigned"]
    saved = {int(p): o for p, o in _state(app)["offsets"].items()}
    ends = _relay(app, kafka_settings)  # its decisions reach the topic while it is down
    # down for a day: restarted, it reads only what follows its offsets and fires at the true instants
    second = _kafka(app, kafka_settings)
    try:
        report = _run(second, MONDAY + timedelta(days=4))
        assert isinstance(second.source, KafkaRows)
        assert second.source.fetched == ends  # nothing before the checkpoint was read again
        assert report.rebuilds == 1
    finally:
        second.close()
    assert saved and all(o >= 0 for o in saved.values())
    times: dict[str, str] = {}
    for d in sorted(op._decisions(app), key=lambda d: d[1]):
        if d[0] == lead:
            times.setdefault(d[2].split(".")[2], d[3])
    assert times["LeadSLAWarned"] == "2026-03-05T08:16:00.000000Z"
    assert times["LeadSLABreached"] == "2026-03-05T08:31:00.000000Z"


def test_two_kafka_operators_at_the_same_position_decide_each_lead_once(
        app: LeadLedger, kafka_settings: KafkaSettings) -> None:
    op._published(app)
    op._history(app)
    _relay(app, kafka_settings)
    one, two = _kafka(app, kafka_settings, batch=4), _kafka(app, kafka_settings, batch=4)
    try:
        one.rebuild(OperateReport())  # both read the same position before either stores decisions
        two.rebuild(OperateReport())
        assert sum(_run(one, NOW).decisions.values()) > 0
        late = _run(two, NOW)  # its first transaction conflicts: it rebuilds from the winner's checkpoint
        assert late.rebuilds == 1 and sum(late.decisions.values()) == 0
    finally:
        one.close()
        two.close()
    counts: dict[tuple[str, int], int] = {}
    for lead, version, *_ in op._decisions(app):
        counts[(lead, version)] = counts.get((lead, version), 0) + 1
    assert counts and set(counts.values()) == {1}


# ---------------------------------------------------------------------------- the command


def _operate(home: Path, kafka: KafkaSettings, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "leadledger", "operate", "--source", "kafka", "--once",
                           "--now", NOW.isoformat(), "--json", *extra], env=cli_env(home, **kafka_env(kafka)),
                          capture_output=True, timeout=120, check=False)


def test_the_command_operates_from_the_topic(tmp_path: Path, twin: LeadLedger, kafka_settings: KafkaSettings) -> None:
    home = tmp_path / "home"
    ledger = bootstrap(sqlite_settings(home))
    try:
        for each in (ledger, twin):
            op._published(each)
            op._history(each)
        _relay(ledger, kafka_settings)
    finally:
        ledger.store.close()
    OperatorRunner(twin.store).run_once(NOW)
    done = _operate(home, kafka_settings)
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout)["decided"] > 0
    ledger = bootstrap(sqlite_settings(home))
    try:
        _same_decisions(ledger, twin)
    finally:
        ledger.store.close()


def test_a_record_without_its_notification_id_is_refused_clearly(tmp_path: Path,
                                                                  kafka_settings: KafkaSettings) -> None:
    home = tmp_path / "home"
    ledger = bootstrap(sqlite_settings(home))
    try:
        op._published(ledger)
        op._history(ledger, leads=2)
        ensure_topics(kafka_settings)
        publish_events(kafka_settings, all_rows(ledger.store))  # as an older relay did: no ll_position
        ledger.store.recorder.set_relay_position(kafka_settings.events_topic, ledger.store.head_position())
    finally:
        ledger.store.close()
    done = _operate(home, kafka_settings)
    assert done.returncode == 1
    message = done.stderr.decode()
    assert "has no ll_position header" in message, message
    assert "leadledger relay --from-start" in message
    ledger = bootstrap(sqlite_settings(home))
    try:
        assert op._decisions(ledger) == [] and ledger.store.operator_state("operator") is None
    finally:
        ledger.store.close()


def test_sigkill_anywhere_in_a_kafka_operator_gives_the_decisions_of_an_uninterrupted_run(
        tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    """Real processes killed at random instants (startup, rebuild, reading the topic, inside commits),
    then one left to finish: the same decisions, none lost, none twice, as a run never interrupted."""
    inputs = tmp_path / "inputs"
    ledger = bootstrap(sqlite_settings(inputs))
    try:
        op._published(ledger)
        op._history(ledger, leads=16)
        _relay(ledger, kafka_settings)
    finally:
        ledger.store.close()
    calm, crashed = tmp_path / "calm", tmp_path / "crashed"
    shutil.copytree(inputs, calm)
    shutil.copytree(inputs, crashed)  # the same store twice (same lead ids), one topic both read
    started = time.monotonic()
    whole = _operate(calm, kafka_settings, "--batch", "1")
    assert whole.returncode == 0, whole.stderr.decode()
    took = time.monotonic() - started
    rng = random.Random(23)
    kills = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "leadledger", "operate", "--source", "kafka", "--once",
                                 "--batch", "1", "--now", NOW.isoformat()],
                                env=cli_env(crashed, **kafka_env(kafka_settings)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 0.95) * took)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
    last = _operate(crashed, kafka_settings, "--batch", "1")
    assert last.returncode == 0, last.stderr.decode()
    assert kills >= 1, "no run was killed: the test proved nothing"
    one, two = bootstrap(sqlite_settings(calm)), bootstrap(sqlite_settings(crashed))
    try:
        assert op._decisions(two) == op._decisions(one)
        assert op._decisions(one)
    finally:
        one.store.close()
        two.store.close()
