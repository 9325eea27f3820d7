"""Decoding ahead (a forked helper decodes the next batch while one is applied) changes nothing but
the speed: the same results in the same order and the same stored history as decoding inline, on
SQLite and on PostgreSQL; a helper that dies is an error naming it, and what was not applied is
applied by the next run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.inbound import InboundHandler, Result
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from tests.support.cli import cli_env
from tests.support.env import TEST_SECRET
from tests.support.snapshots import by_capture

START = datetime(2026, 1, 5, tzinfo=UTC)


def stream() -> list[tuple[int, bytes]]:
    """Simulated traffic (re-deliveries included) with bad messages and blank lines among it."""
    lines = [orjson.dumps(m) for m in generate(leads=120, seed=5, start=START, days=30)]
    lines[7:7] = [b"", b"not json", b'{"specversion": "1.0"}']
    lines[300:300] = [b"   ", orjson.dumps({"specversion": "1.0", "id": "x", "source": "crm",
                                           "type": "leadledger.inbound.capture.v1",
                                           "time": "2026-01-06T09:00:00Z",
                                           "data": {"email": "not-an-address", "channel": "webinar"}})]
    return list(enumerate(lines, start=1))


def outcome(result: Result[int]) -> tuple[Any, ...]:
    return result.position, result.status, result.reason, result.event, result.refused_before


def test_decoding_ahead_gives_the_results_and_history_of_decoding_inline(backend_settings: Settings,
                                                                           tmp_path: Path) -> None:
    messages = stream()
    inline_app = bootstrap(Settings(home=tmp_path / "inline", secret=TEST_SECRET))  # keys as the other's
    ahead_app = bootstrap(backend_settings)
    try:
        inline = [outcome(r) for r in InboundHandler(inline_app, batch_size=64).handle_stream(messages)]
        ahead = [outcome(r) for r in InboundHandler(ahead_app, batch_size=64, decode_ahead=True)
                 .handle_stream(messages)]
        assert ahead == inline
        assert [p for p, *_ in ahead] == [p for p, _ in messages]  # one result each, in order
        statuses = {status for _, status, *_ in ahead}
        assert statuses == {"applied", "duplicate", "dead", "skipped"}
        assert by_capture(ahead_app.store) == by_capture(inline_app.store)
    finally:
        inline_app.store.close()
        ahead_app.store.close()


def test_a_helper_that_dies_is_an_error_naming_it_and_the_next_run_applies_the_rest(
        app: LeadLedger, tmp_path: Path) -> None:
    messages = stream()
    clean_app = bootstrap(Settings(home=tmp_path / "clean", secret=TEST_SECRET))
    try:
        clean = sum(r.status == "applied" for r in InboundHandler(clean_app, batch_size=50).handle_stream(messages))
    finally:
        clean_app.store.close()

    done: list[Result[int]] = []
    handler = InboundHandler(app, batch_size=50, decode_ahead=True)
    with pytest.raises(RuntimeError, match=r"decoding helper \(pid \d+\) died"), handler.pipeline() as pipe:
        for k in range(0, len(messages), 50):
            for results in pipe.submit(messages[k:k + 50]):
                done.extend(results)
            if k == 100:  # the helper holds the batch from 100 on: it dies with it
                assert pipe._helper is not None
                os.kill(pipe._helper._child.proc.pid, signal.SIGKILL)
    # the batches it had answered before it died (those before the one it held, or that one too)
    assert len(done) in (100, 150)
    assert [r.position for r in done] == [p for p, _ in messages[:len(done)]]

    again = list(InboundHandler(app, batch_size=50, decode_ahead=True).handle_stream(messages))
    applied = sum(r.status == "applied" for r in done) + sum(r.status == "applied" for r in again)
    assert applied == clean  # nothing lost, nothing twice


def test_ingest_from_a_pipe_applies_each_full_batch_before_the_next_arrives(tmp_path: Path) -> None:
    # a live producer piped in: its batch may not wait for the next one (a file on disk decodes ahead)
    messages = [orjson.dumps(m) for m in generate(leads=30, seed=2, start=START, days=10)][:9]
    proc = subprocess.Popen([sys.executable, "-m", "leadledger", "ingest", "-", "--batch-size", "4", "--json",
                             "--dead-letters", str(tmp_path / "dead.jsonl")],
                            env=cli_env(tmp_path / "home"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"\n".join(messages[:8]) + b"\n")  # two full batches, and nothing more yet
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while recorded(tmp_path / "home") < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorded(tmp_path / "home") == 8
        out, err = proc.communicate(messages[8] + b"\n", timeout=60)  # the last one, and the end
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert orjson.loads(out)["applied"] + orjson.loads(out)["duplicates"] == 9


def recorded(home: Path) -> int:
    """Messages the store under `home` has recorded (read as another process would)."""
    path = home / "events.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM leadledger_inbound").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
