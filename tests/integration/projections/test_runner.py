"""The runner: rebuild equals incremental, crash anywhere then restart equals an uninterrupted
run, duplicate delivery changes nothing, a SIGKILLed `leadledger project` resumes exactly.
Each on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from lifecycle.store.repository import LeadStore
from projections.base import Changes, Lead
from projections.engine.registry import PROJECTIONS
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource, ListSource, SourceEvent
from projections.funnel import Funnel
from schemas.facts import Fact
from tests.support.env import TEST_SECRET
from tests.support.reference import simulated_app

PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Crash(Exception):
    """Injected at a chosen step of a batch."""


@pytest.fixture
def world(backend_settings: Settings) -> Iterator[tuple[Settings, LeadStore, list[SourceEvent]]]:
    app = simulated_app(backend_settings, leads=90, seed=5)
    events = EmbeddedSource(app.store).read({}, 1_000_000)
    yield backend_settings, app.store, events
    app.store.close()


def fresh_runner(s: Settings, **kwargs: Any) -> Runner:
    runner = Runner(open_read_models(s), **kwargs)
    runner.setup()
    runner.reset()
    return runner


def without_checkpoints(dump: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    return {k: v for k, v in dump.items() if k != "rm_checkpoints"}


def clean_dump(s: Settings, source: Any) -> dict[str, list[tuple[Any, ...]]]:
    runner = fresh_runner(s)
    try:
        runner.catch_up(source, 1_000_000)
        return runner.dump()
    finally:
        runner.db.close()


def test_read_model_rows_follow_the_events(world: tuple[Settings, LeadStore, list[SourceEvent]]) -> None:
    """Each table's rows, counted independently from the events themselves (not from the folds)."""
    s, _, events = world
    dump = clean_dump(s, ListSource(events))
    by_lead: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_lead[e.lead_id].append(e.fact)
    facts = [f for fs in by_lead.values() for f in fs]
    assert len(dump["rm_timeline"]) == len(by_lead) == 90
    # one funnel row per stage entry, for the stage it entered
    assert Counter(row[2] for row in dump["rm_funnel_entries"]) == Counter(f.stage for f in facts if f.stage)
    # one assignment row per LeadAssigned, for its owner
    assert Counter(row[2] for row in dump["rm_speed_assignments"]) == Counter(
        f.owner for f in facts if f.name == "LeadAssigned")
    # one lead row per lead, in the stage of its latest stage entry (metric order)
    latest = {lead: max(f for f in fs if f.stage).stage for lead, fs in by_lead.items()}
    assert {str(row[1]).replace("-", ""): row[2] for row in dump["rm_leads"]} == latest
    # every other read model has rows for this history (credits, stays, first entries, responses)
    for table in ("rm_velocity_stays", "rm_velocity_firsts", "rm_attribution_credits", "rm_speed_responses"):
        assert dump[table], table
    assert dump["rm_checkpoints"] == [("list", 0, events[-1].position)]


@PROPERTY
@given(st.lists(st.integers(1, 400), min_size=1, max_size=30), st.integers(0, 2000))
def test_rebuild_equals_incremental_in_any_batch_sizes(
    world: tuple[Settings, LeadStore, list[SourceEvent]], sizes: list[int], replay_at: int
) -> None:
    s, store, events = world
    expected = clean_dump(s, ListSource(events))
    source = EmbeddedSource(store)
    runner = fresh_runner(s)
    try:
        done, i = 0, 0
        replayed = False
        while True:
            result = runner.run_batch(source, sizes[i % len(sizes)])
            i += 1
            done += result.events
            if result.events == 0:
                break
            if not replayed and done >= replay_at:
                runner.reset()  # a replay in the middle: drop everything, start over
                replayed = True
        got = runner.dump()
    finally:
        runner.db.close()
    assert without_checkpoints(got) == without_checkpoints(expected)
    assert got["rm_checkpoints"] == [("store", 0, events[-1].position)]


@PROPERTY
@given(st.integers(1, 300), st.lists(st.integers(0, 60), min_size=1, max_size=3))
def test_crash_anywhere_then_restart_equals_uninterrupted(
    world: tuple[Settings, LeadStore, list[SourceEvent]], batch: int, crash_points: list[int]
) -> None:
    s, _, events = world
    source = ListSource(events)
    expected = clean_dump(s, source)
    fresh_runner(s).db.close()
    for point in crash_points:
        calls = {"n": 0}

        def fault(step: str, point: int = point, calls: dict[str, int] = calls) -> None:
            calls["n"] += 1
            if calls["n"] == point:
                raise Crash(step)

        runner = Runner(open_read_models(s), fault=fault)  # a new process: nothing survives but the tables
        runner.setup()
        try:
            runner.catch_up(source, batch)
        except Crash:
            pass
        finally:
            runner.db.close()
    runner = Runner(open_read_models(s))
    runner.setup()
    try:
        runner.catch_up(source, batch)
        assert runner.dump() == expected
    finally:
        runner.db.close()


def test_a_crash_keeps_the_in_memory_cache_honest(world: tuple[Settings, LeadStore, list[SourceEvent]]) -> None:
    """The same runner object carries on after a failed batch (the service does this)."""
    s, _, events = world
    source = ListSource(events)
    expected = clean_dump(s, source)
    calls = {"n": 0}

    def fault(step: str) -> None:
        calls["n"] += 1
        if calls["n"] in (9, 23, 40):
            raise Crash(step)

    runner = fresh_runner(s, fault=fault)
    try:
        for _ in range(4):
            try:
                runner.catch_up(source, 70)
            except Crash:
                continue
        assert runner.dump() == expected
    finally:
        runner.db.close()


def test_duplicate_delivery_changes_nothing(world: tuple[Settings, LeadStore, list[SourceEvent]]) -> None:
    s, _, events = world
    expected = without_checkpoints(clean_dump(s, ListSource(events)))
    doubled: list[SourceEvent] = []
    for e in events:  # each event twice in a row, as an at-least-once redelivery
        doubled += [e._replace(position=len(doubled) + 1), e._replace(position=len(doubled) + 2)]
    again = [e._replace(position=len(doubled) + i) for i, e in enumerate(events[::3], start=1)]
    for batch in (1, 7, 100_000):
        got = without_checkpoints(clean_dump(s, ListSource(doubled + again)))
        assert got == expected, batch


def test_two_partitions_keep_their_own_checkpoints(world: tuple[Settings, LeadStore, list[SourceEvent]]) -> None:
    s, _, events = world
    expected = without_checkpoints(clean_dump(s, ListSource(events)))
    # a Kafka-like split: each lead's events stay in order in the partition of its key
    parts: dict[int, int] = {0: 0, 1: 0}
    split = []
    for e in events:
        part = int(e.lead_id[-1], 16) % 2
        parts[part] += 1
        split.append(e._replace(partition=part, position=parts[part]))
    runner = fresh_runner(s)
    try:
        runner.catch_up(ListSource(split, name="kafka:lead-events"), 50)
        assert runner.checkpoints("kafka:lead-events") == {0: parts[0], 1: parts[1]}
        got = without_checkpoints(runner.dump())
    finally:
        runner.db.close()
    # lead numbers follow first appearance, which differs: compare without them
    def by_id(d: dict[str, list[tuple[Any, ...]]]) -> Any:
        ids = {row[0]: row[1] for row in d["rm_timeline"]}
        return {k: sorted((tuple(ids.get(r[0], r[0]) if i == 0 else v for i, v in enumerate(r)) for r in rows),
                          key=repr) if k != "rm_leads" else sorted(r[1:] for r in rows)
                for k, rows in d.items()}

    assert by_id(got) == by_id(expected)


def test_replay_of_one_projection_and_a_changed_definition(world: tuple[Settings, LeadStore, list[SourceEvent]]) -> None:
    s, store, _ = world
    expected = clean_dump(s, EmbeddedSource(store))
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset(["funnel", "speed"])
        assert runner.dump() == expected

        class FunnelNext(Funnel):
            version = Funnel.version + 1

            def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
                return Changes()  # a definition that changed: rebuilt (here: to nothing)

        changed = Runner(runner.db, projections=[FunnelNext(), *PROJECTIONS[1:]])
        assert changed.setup() == ["funnel"]
        assert changed.dump()["rm_funnel_entries"] == []
        assert Runner(runner.db).setup() == ["funnel"]
        assert runner.dump() == expected
    finally:
        runner.db.close()


# ---------------------------------------------------------------- a real SIGKILL


def _env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(s.home), LEADLEDGER_SECRET=TEST_SECRET.decode())
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    return env


def _position(s: Settings) -> int:
    if s.postgres_dsn:
        import psycopg

        with psycopg.connect(s.postgres_dsn) as conn:
            try:
                row = conn.execute(f'SELECT MAX(position_no) FROM "{s.postgres_schema}".rm_checkpoints').fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
            return int(row[0] or 0) if row else 0
    path = Path(s.home) / "readmodels.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            row = conn.execute("SELECT MAX(position_no) FROM rm_checkpoints").fetchone()
            return int(row[0] or 0)
    except sqlite3.OperationalError:
        return 0


def _cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=_env(s), capture_output=True,
                          text=True, timeout=300, check=True)


def test_sigkill_mid_catch_up_then_restart_equals_replay(backend_settings: Settings) -> None:
    s = backend_settings
    app = simulated_app(s, leads=250, seed=8)
    head = app.store.head_position()
    app.store.close()
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "project", "--batch-size", "15",
                             "--poll-interval", "0.05"], env=_env(s), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    killed_at = 0
    while time.monotonic() < deadline:
        killed_at = _position(s)
        if killed_at > head // 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < killed_at < head, "the projector was not caught mid catch-up"
    _cli(s, "project", "--once", "--batch-size", "15")
    db = open_read_models(s)
    try:
        runner = Runner(db)
        resumed = runner.dump()
        _cli(s, "replay")
        assert runner.dump() == resumed
        assert resumed["rm_checkpoints"] == [("store", 0, head)]
    finally:
        db.close()


def test_project_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, secret=TEST_SECRET)
    simulated_app(s, leads=20, seed=3).store.close()
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "project", "--poll-interval", "0.05",
                             "--log-every", "0.1"], env=_env(s), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _position(s) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "events/s" in err and "stopped:" in err
