"""`Runner.replay`, the bulk path of `leadledger replay`: the same tables as projecting the store
batch by batch; one transaction, so a crash anywhere in it leaves the read models as they were;
the checkpoint is the snapshot's head, so events stored during or after the replay are caught
up exactly once. Each on SQLite (forked workers, and in-process) and on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.application import LeadLedger
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from projections.engine import replay as replay_module
from projections.engine import runner as runner_module
from projections.engine.registry import PROJECTIONS, tables_of
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from projections.service import Analytics
from tests.support.env import TEST_SECRET

START = datetime(2026, 1, 5, tzinfo=UTC)
PROPERTY = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
Dump = dict[str, list[tuple[Any, ...]]]


class Crash(Exception):
    """Injected at a chosen step of a replay."""


def messages(leads: int, seed: int, late_share: float = 0.1) -> list[bytes]:
    """Simulated inbound traffic; some touches arrive last (out of occurred order)."""
    stream = list(generate(leads=leads, seed=seed, start=START, days=30))
    rng = random.Random(seed)
    late = {id(m) for m in stream if m["type"].endswith(".touch.v1") and rng.random() < late_share}
    ordered = [m for m in stream if id(m) not in late] + [m for m in stream if id(m) in late]
    return [orjson.dumps(m) for m in ordered]


def ingest(app: LeadLedger, batch: list[bytes], first: int = 1) -> None:
    handler = InboundHandler(app, batch_size=150)
    for _ in handler.handle_stream(enumerate(batch, start=first)):
        pass


def projected(s: Settings, store: Any, batch: int = 97) -> Dump:
    """The reference: every read model projected batch by batch from zero."""
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset()
        runner.catch_up(EmbeddedSource(store), batch)
        return runner.dump()
    finally:
        runner.db.close()


def replayed(s: Settings, store: Any, workers: int, **kwargs: Any) -> tuple[Dump, replay_module.ReplayResult]:
    runner = Runner(open_read_models(s), **kwargs)
    try:
        runner.setup()
        result = runner.replay(EmbeddedSource(store), workers=workers)
        return runner.dump(), result
    finally:
        runner.db.close()


def worker_counts(s: Settings) -> list[int]:
    return [2, 1, 3] if not s.postgres_dsn else [2]  # PostgreSQL store: always in this process


@pytest.fixture
def world(backend_settings: Settings) -> Iterator[tuple[Settings, LeadLedger, list[bytes]]]:
    stream = messages(120, seed=11)
    app = bootstrap(backend_settings)
    ingest(app, stream)
    yield backend_settings, app, stream
    app.store.close()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small chunks even in a small store, so crashes can land between them."""
    monkeypatch.setattr(replay_module, "REPLAY_CHUNK", 9)


def test_replay_equals_incremental_projection(world: tuple[Settings, LeadLedger, list[bytes]],
                                              small_chunks: None) -> None:
    s, app, _ = world
    expected = projected(s, app.store)
    head = app.store.head_position()
    assert expected["rm_checkpoints"] == [("store", 0, head)]
    for workers in worker_counts(s):
        got, result = replayed(s, app.store, workers)
        assert got == expected, workers
        assert (result.events, result.leads, result.head) == (head, len(expected["rm_timeline"]), head)


def test_replay_of_an_empty_store(backend_settings: Settings) -> None:
    app = bootstrap(backend_settings)
    try:
        got, result = replayed(backend_settings, app.store, 2)
        assert result == replay_module.ReplayResult(0, 0, 0)
        assert all(not rows for name, rows in got.items() if name != "rm_projections")
        assert got == projected(backend_settings, app.store)
    finally:
        app.store.close()


def test_replay_replaces_whatever_was_there(world: tuple[Settings, LeadLedger, list[bytes]]) -> None:
    """Read models half caught up, of another run: a replay gives the clean tables."""
    s, app, _ = world
    expected = projected(s, app.store)
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset()
        runner.run_batch(EmbeddedSource(app.store), 400)
        runner.replay(EmbeddedSource(app.store))
        assert runner.dump() == expected
        assert runner.catch_up(EmbeddedSource(app.store)) == 0  # nothing left to read
        assert runner.dump() == expected
    finally:
        runner.db.close()


def test_events_stored_after_the_snapshot_are_caught_up_exactly_once(backend_settings: Settings) -> None:
    s = backend_settings
    stream = messages(120, seed=12)
    cut = len(stream) * 3 // 5
    app = bootstrap(s)
    try:
        ingest(app, stream[:cut])
        head = app.store.head_position()
        runner = Runner(open_read_models(s))
        runner.setup()
        try:
            # more events arrive while the replay runs (its workers are reading by then)
            def arrive(step: str) -> None:
                if step == "replay:start":
                    ingest(app, stream[cut:cut + 150], first=cut + 1)

            runner.fault = arrive
            result = runner.replay(EmbeddedSource(app.store))
            assert result.head == head and result.events == head
            assert runner.checkpoints("store") == {0: head}
            assert app.store.head_position() > head
            ingest(app, stream[cut + 150:], first=cut + 151)  # ... and after it
            runner.fault = runner_module._no_fault
            caught_up = runner.catch_up(EmbeddedSource(app.store), 64)
            assert caught_up == app.store.head_position() - head
            got = runner.dump()
        finally:
            runner.db.close()
        assert got == projected(s, app.store)
    finally:
        app.store.close()


STEPS = ("replay:start", "replay:write", "replay:counts", "replay:indexes", "replay:checkpoint", "replay:swap",  # this process
         "replay:commit",
         "replay:scanned", "replay:folded")  # the workers (in-process replays never reach these)


REPEATED = ("replay:write", "replay:folded")  # once per chunk


@settings(PROPERTY, max_examples=16)
@given(st.sampled_from(STEPS), st.data(), st.integers(0, 900))
def test_a_crash_anywhere_in_a_replay_leaves_the_read_models_as_they_were(
    world: tuple[Settings, LeadLedger, list[bytes]], small_chunks: None, step: str, data: st.DataObject,
    before: int
) -> None:
    s, app, _ = world
    nth = data.draw(st.integers(1, 14)) if step in REPEATED else 1
    expected = projected(s, app.store)
    # the state before the replay: `before` events projected (maybe none, maybe all)
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset()
        if before:
            runner.run_batch(EmbeddedSource(app.store), before)
        previous = runner.dump()
    finally:
        runner.db.close()

    calls = {"n": 0}

    def fault(at: str) -> None:  # each worker counts in its own copy
        if at == step:
            calls["n"] += 1
            if calls["n"] == nth:
                raise Crash(at)

    runner = Runner(open_read_models(s), fault=fault)  # a process that dies: only the tables survive
    try:
        runner.setup()
        try:
            runner.replay(EmbeddedSource(app.store))
            crashed = False
        except (Crash, RuntimeError):
            crashed = True
        event(f"{'crashed' if crashed else 'completed'} at {step}")
        if crashed:
            assert runner.dump() == previous
        else:  # the chosen step does not happen that often: a complete replay
            assert runner.dump() == expected
    finally:
        runner.db.close()

    # restarting either way gives the same tables: a catch-up, or the replay again
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.catch_up(EmbeddedSource(app.store), 200)
        assert runner.dump() == expected
        runner.replay(EmbeddedSource(app.store))
        assert runner.dump() == expected
    finally:
        runner.db.close()


def test_a_failed_replay_leaves_the_same_runner_usable(world: tuple[Settings, LeadLedger, list[bytes]]) -> None:
    """The service keeps its runner: after a replay failed, it catches up right."""
    s, app, _ = world
    expected = projected(s, app.store)

    def fault(at: str) -> None:
        if at == "replay:checkpoint":
            raise Crash(at)

    runner = Runner(open_read_models(s), fault=fault)
    try:
        runner.setup()
        runner.reset()
        runner.run_batch(EmbeddedSource(app.store), 300)
        with pytest.raises(Crash):
            runner.replay(EmbeddedSource(app.store))
        runner.catch_up(EmbeddedSource(app.store), 50)
        assert runner.dump() == expected
    finally:
        runner.db.close()


def test_a_corrupt_event_fails_the_replay_and_names_it(tmp_path: Path) -> None:
    import sqlite3

    s = Settings(home=tmp_path, secret=TEST_SECRET)
    app = bootstrap(s)
    ingest(app, messages(30, seed=3))
    head = app.store.head_position()
    app.store.close()
    conn = sqlite3.connect(tmp_path / "events.sqlite")
    with conn:
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"{not json", head // 2))
    conn.close()
    app = bootstrap(s)
    try:
        for workers in (2, 1):
            runner = Runner(open_read_models(s))
            try:
                runner.setup()
                expected_tables = runner.dump()
                with pytest.raises(Exception, match=f"notification {head // 2}") as info:
                    runner.replay(EmbeddedSource(app.store), workers=workers)
                assert type(info.value).__name__ == "CorruptEvent"
                assert runner.dump() == expected_tables
            finally:
                runner.db.close()
    finally:
        app.store.close()


# ---------------------------------------------------------------- beside the live read models


def live_position(s: Settings) -> dict[int, int]:
    """The live read models' checkpoint, read on a connection of its own."""
    db = open_read_models(s)
    try:
        return Runner(db).checkpoints("store")
    finally:
        db.close()


def leftovers(s: Settings) -> list[str]:
    """Tables a replay builds or replaces that still exist."""
    db = open_read_models(s)
    try:
        return [t.name + suffix for t in tables_of(PROJECTIONS) for suffix in (replay_module.NEXT, replay_module.OLD)
                if db.exists(t.name + suffix)]
    finally:
        db.close()


def test_project_and_queries_go_on_while_a_replay_runs(backend_settings: Settings, small_chunks: None) -> None:
    """Paused between two chunks of a replay, a `project` process and a query's catch-up fold the
    events stored meanwhile into the live read models; after the swap, a catch-up folds them
    again into the new ones, which equal a rebuild from zero."""
    s = backend_settings
    stream = messages(120, seed=13)
    first, second = len(stream) // 2, len(stream) * 3 // 4
    app = bootstrap(s)
    try:
        ingest(app, stream[:first])
        head = app.store.head_position()
        _cli(s, "project", "--once")
        assert live_position(s) == {0: head}
        paused = {"chunks": 0, "live": {}, "answer": None}

        def meanwhile(step: str) -> None:
            if step != "replay:write":
                return
            paused["chunks"] += 1
            if paused["chunks"] != 2:
                return
            ingest(app, stream[first:second], first=first + 1)
            _cli(s, "project", "--once", "--batch-size", "50")  # would time out waiting for the replay
            ingest(app, stream[second:], first=second + 1)
            before = live_position(s)[0]
            analytics = Analytics(open_read_models(s), app.store)
            try:
                assert analytics.refresh() == app.store.head_position() - before > 0
                with analytics.db.snapshot():
                    paused["answer"] = analytics.db.query("SELECT COUNT(*) FROM " + analytics.db.name("rm_timeline"))
            finally:
                analytics.db.close()
            paused["live"] = live_position(s)

        runner = Runner(open_read_models(s), fault=meanwhile)
        try:
            runner.setup()
            result = runner.replay(EmbeddedSource(app.store))
            assert paused["chunks"] > 2  # paused mid-way
            assert paused["live"] == {0: app.store.head_position()}  # the live models caught up meanwhile
            assert paused["answer"] == [(120,)]  # every lead, in the live timeline
            assert result.head == head and runner.checkpoints("store") == {0: head}  # the new models
            runner.fault = runner_module._no_fault
            assert runner.catch_up(EmbeddedSource(app.store), 64) == app.store.head_position() - head
            got = runner.dump()
        finally:
            runner.db.close()
        assert leftovers(s) == []
        assert got == projected(s, app.store)
    finally:
        app.store.close()


def test_a_snapshot_open_across_the_swap_reads_the_old_read_models(
        world: tuple[Settings, LeadLedger, list[bytes]]) -> None:
    """A query's snapshot opened before the swap keeps answering from the old read models,
    without an error (PostgreSQL: the swap waits until it ends); the next one sees the new."""
    s, app, _ = world
    old = Runner(open_read_models(s))
    try:
        old.setup()
        old.reset()
        old.run_batch(EmbeddedSource(app.store), 300)
    finally:
        old.db.close()
    swapping = threading.Event()
    failed: list[BaseException] = []

    def replay() -> None:
        runner = Runner(open_read_models(s), fault=lambda step: swapping.set() if step == "replay:swap" else None)
        try:
            runner.replay(EmbeddedSource(app.store))
        except BaseException as exc:
            failed.append(exc)
            swapping.set()
        finally:
            runner.db.close()

    reader = open_read_models(s)
    checkpoint = f"SELECT position_no FROM {reader.name('rm_checkpoints')}"
    try:
        thread = threading.Thread(target=replay)
        with reader.snapshot():
            assert reader.query(checkpoint) == [(300,)]
            thread.start()
            assert swapping.wait(60)
            thread.join(timeout=1 if s.postgres_dsn else 60)
            assert thread.is_alive() == bool(s.postgres_dsn)  # PostgreSQL: the swap waits for this snapshot
            assert reader.query(checkpoint) == [(300,)]
        thread.join(timeout=60)
        assert not thread.is_alive() and not failed
        with reader.snapshot():
            assert reader.query(checkpoint) == [(app.store.head_position(),)]
    finally:
        reader.close()


def test_a_crash_at_the_swap_leaves_the_live_read_models_and_the_next_replay_cleans_up(
        world: tuple[Settings, LeadLedger, list[bytes]]) -> None:
    s, app, _ = world
    expected = projected(s, app.store)
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset()
        runner.run_batch(EmbeddedSource(app.store), 250)
        previous = runner.dump()

        def fault(at: str) -> None:
            if at == "replay:commit":
                raise Crash(at)

        runner.fault = fault
        with pytest.raises(Crash):
            runner.replay(EmbeddedSource(app.store))
        assert runner.dump() == previous and runner.checkpoints("store") == {0: 250}
        assert replay_module.NEXT in " ".join(leftovers(s))  # what the failed replay built
        runner.fault = runner_module._no_fault
        runner.replay(EmbeddedSource(app.store))
        assert runner.dump() == expected
    finally:
        runner.db.close()
    assert leftovers(s) == []


# ---------------------------------------------------------------- a real SIGKILL


def _env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(s.home), LEADLEDGER_SECRET=TEST_SECRET.decode())
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    return env


def _cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=_env(s), capture_output=True,
                          text=True, timeout=300, check=True)


def _ends(pid: int, within: float = 10.0) -> bool:
    """The process exits (or is a zombie waiting for init to reap it) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_sigkill_mid_replay_then_restart(backend_settings: Settings) -> None:
    """A `leadledger replay` killed at some instant: the read models are the old ones or the
    new ones, never a mix; the forked workers die with it; the next catch-up completes them."""
    s = backend_settings
    app = bootstrap(s)
    ingest(app, messages(400, seed=21))
    expected = projected(s, app.store)
    app.store.close()
    store = bootstrap(s).store
    runner = Runner(open_read_models(s))
    try:
        runner.setup()
        runner.reset()
        runner.run_batch(EmbeddedSource(store), 500)
        before = runner.dump()
    finally:
        runner.db.close()
        store.close()
    previous, interrupted = before, 0
    for delay in (0.0, 0.05, 0.3):
        proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "replay"], env=_env(s),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill it once it is under way: its workers are there (SQLite store), or after a while
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while time.monotonic() < deadline and not s.postgres_dsn and proc.poll() is None:
            workers = _children(proc.pid)
            if workers:
                break
            time.sleep(0.002)
        time.sleep(delay if not s.postgres_dsn else 0.4 + 2 * delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for pid in workers:
            assert _ends(pid), f"replay worker {pid} outlived the writer"
        db = open_read_models(s)
        try:
            now = Runner(db).dump()
        finally:
            db.close()
        assert now in (previous, expected)
        interrupted += now == previous != expected
        previous = now
    if not s.postgres_dsn:
        assert interrupted, "no kill landed inside a replay"
    _cli(s, "project", "--once", "--batch-size", "50")
    db = open_read_models(s)
    try:
        assert Runner(db).dump() == expected
    finally:
        db.close()
