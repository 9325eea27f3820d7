"""Every inbound message's outcome is remembered with its key, in the batch's transaction.

A refused message stays refused when it comes again (a re-run of `ingest` after a crash, two
`ingest` processes of one file, a Kafka redelivery): it is a duplicate, never re-decided on the
lead's later state. A key reused with other content is dead-lettered, never a duplicate. Killing
`leadledger ingest` anywhere and running it again, or running two at once, ends exactly as one
clean run — on SQLite and on PostgreSQL. `verify` notices deleted records.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle.application import KEY_REUSED, LeadLedger
from lifecycle.audit import verify
from lifecycle.domain.commands import LeadRef
from lifecycle.inbound import InboundHandler, Result, Tally, raw_fields, read_lines
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from tests.support.cli import cli_env
from tests.support.snapshots import by_capture

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def msg(kind: str, id_: str, data: dict[str, Any], source: str = "web-forms", minute: int = 0) -> bytes:
    at = (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"specversion": "1.0", "id": id_, "source": source,
                         "type": f"leadledger.inbound.{kind}.v1", "time": at, "data": data})


#: the brief's minimal case: the accept is refused (captured); after the next three it would pass
MINIMAL = [
    msg("capture", "c-1", {"email": "ada@example.com", "channel": "webinar"}),
    msg("transition", "t-1", {"email": "ada@example.com", "trigger": "accept"}, source="crm", minute=1),
    msg("score", "s-1", {"email": "ada@example.com", "total": 90}, source="scoring", minute=2),
    msg("transition", "t-2", {"email": "ada@example.com", "trigger": "qualify_mql"}, source="crm", minute=3),
    msg("assign", "a-1", {"email": "ada@example.com", "owner": "olivia"}, source="crm", minute=4),
]


def handle(app: LeadLedger, lines: list[bytes], batch_size: int = 500) -> tuple[Tally, list[Result[int]]]:
    tally = Tally()
    results = list(InboundHandler(app, batch_size=batch_size).handle_stream(enumerate(lines, start=1)))
    for result in results:
        tally.add(result)
    return tally, results


def names(app: LeadLedger, email: str) -> list[str]:
    return [r.name for r in app.store.records(app.lead_id_for(LeadRef(email=email)))]


# ---------------------------------------------------------------- remembered outcomes


@pytest.mark.parametrize("batch_size", [500, 1])
def test_a_refused_message_stays_refused_when_the_file_comes_again(app: LeadLedger, batch_size: int) -> None:
    _, results = handle(app, MINIMAL, batch_size)
    assert [r.status for r in results] == ["applied", "dead", "applied", "applied", "applied"]
    assert "captured" in (results[1].reason or "")
    events = names(app, "ada@example.com")
    assert events == ["LeadCaptured", "LeadScored", "LeadQualifiedAsMQL", "LeadAssigned"]

    again, repeated = handle(app, MINIMAL, batch_size)  # now the accept WOULD pass: it must not
    assert again.as_json() == {"applied": 0, "duplicates": 5, "dead_lettered": 0, "skipped": 0}
    assert names(app, "ada@example.com") == events
    # the repeat of the refused one says it was refused (an adapter may dead-letter it again)
    assert repeated[1].refused_before is not None and "captured" in repeated[1].refused_before
    assert repeated[1].dead_letter_reason is not None and "captured" in repeated[1].dead_letter_reason
    assert all(r.dead_letter_reason is None for i, r in enumerate(repeated) if i != 1)
    assert verify(app.store).ok

    other = bootstrap(app.settings)  # another process remembers the same
    try:
        tally, _ = handle(other, MINIMAL[1:2])
        assert tally.duplicates == 1 and names(other, "ada@example.com") == events
    finally:
        other.store.close()


def test_the_refusal_is_recorded_in_the_batchs_transaction(app: LeadLedger) -> None:
    handle(app, MINIMAL[:2])
    outcome, digest, reason, lead_id, version = app.store.outcomes([("crm", "t-1")])[("crm", "t-1")]
    assert (outcome, version) == ("refused", None)
    assert digest and len(digest) == 32 and "captured" in (reason or "")  # 128 bits of SHA-256, hex
    assert lead_id == app.lead_id_for(LeadRef(email="ada@example.com"))  # the lead it was refused on
    applied = app.store.outcomes([("web-forms", "c-1")])[("web-forms", "c-1")]
    assert applied[0] == "applied" and (applied[3], applied[4]) == (lead_id, 1)


def test_a_key_reused_with_other_content_is_dead_lettered_never_a_duplicate(app: LeadLedger) -> None:
    handle(app, MINIMAL)
    reused = [
        msg("score", "s-1", {"email": "ada@example.com", "total": 10}, source="scoring", minute=2),  # applied before
        msg("transition", "t-1", {"email": "ada@example.com", "trigger": "win"}, source="crm", minute=1),  # refused
        msg("score", "s-1", {"email": "ada@example.com", "total": 90}, source="scoring", minute=2),  # identical
    ]
    tally, results = handle(app, reused)
    assert tally.as_json() == {"applied": 0, "duplicates": 1, "dead_lettered": 2, "skipped": 0}
    for result in results[:2]:
        assert result.status == "dead" and KEY_REUSED in (result.reason or "")
    assert "'s-1'" in (results[0].reason or "") and "'scoring'" in (results[0].reason or "")
    lead = app.load(app.lead_id_for(LeadRef(email="ada@example.com")))
    assert lead is not None and lead.score == 90
    # within one batch too: the second of two different messages with one key
    twice = [msg("touch", "x-1", {"email": "ada@example.com", "channel": "email"}, minute=5),
             msg("touch", "x-1", {"email": "ada@example.com", "channel": "chat"}, minute=5)]
    tally, results = handle(app, twice)
    assert [r.status for r in results] == ["applied", "dead"] and KEY_REUSED in (results[1].reason or "")


def test_blank_lines_are_skipped_and_counted(app: LeadLedger, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([MINIMAL[0], b"", b"   \t", MINIMAL[2], b"\r"]) + b"\n")
    lines = list(read_lines(source))
    assert [n for n, _ in lines] == [1, 2, 3, 4, 5]
    tally = Tally()
    for result in InboundHandler(app).handle_stream(lines):
        tally.add(result)
    assert tally.as_json() == {"applied": 2, "duplicates": 0, "dead_lettered": 0, "skipped": 3}
    assert sum(tally.as_json().values()) == len(lines)


def test_a_dead_letter_of_a_line_that_is_not_utf8_keeps_its_bytes(app: LeadLedger) -> None:
    raw = b'{"id": "\xff\xfe latin-1 \xe9"}'
    _, results = handle(app, [raw])
    assert results[0].status == "dead"
    fields = raw_fields(results[0].raw)
    assert fields["raw_encoding"] == "base64"
    import base64

    assert base64.b64decode(fields["raw"]) == raw
    assert raw_fields(MINIMAL[0]) == {"raw": MINIMAL[0].decode()}


# ---------------------------------------------------------------- verify


def test_verify_finds_a_deleted_idempotency_record(app: LeadLedger, backend_settings: Settings) -> None:
    handle(app, MINIMAL)
    assert verify(app.store).ok
    lead_id = app.lead_id_for(LeadRef(email="ada@example.com"))
    delete = "DELETE FROM {table} WHERE source = 'scoring' AND message_id = 's-1'"
    if backend_settings.postgres_dsn:
        import psycopg

        with psycopg.connect(backend_settings.postgres_dsn, autocommit=True) as conn:
            conn.execute(delete.format(table=f'"{backend_settings.postgres_schema}".leadledger_inbound'))
    else:
        with sqlite3.connect(backend_settings.home / "events.sqlite") as conn:
            conn.execute(delete.format(table="leadledger_inbound"))
    for report in (verify(app.store), verify(app.store, lead_id)):
        assert not report.ok
        assert [(p.lead_id, p.version) for p in report.problems or []] == [(lead_id, 2)]
        assert "scoring/s-1" in str((report.problems or [])[0]) and "missing" in str((report.problems or [])[0])


def test_verify_finds_a_record_whose_event_is_gone_or_other(app: LeadLedger, backend_settings: Settings) -> None:
    handle(app, MINIMAL)
    lead_id = app.lead_id_for(LeadRef(email="ada@example.com"))
    edit = "UPDATE {table} SET version = 3 WHERE source = 'scoring' AND message_id = 's-1'"
    if backend_settings.postgres_dsn:
        import psycopg

        with psycopg.connect(backend_settings.postgres_dsn, autocommit=True) as conn:
            conn.execute(edit.format(table=f'"{backend_settings.postgres_schema}".leadledger_inbound'))
    else:
        with sqlite3.connect(backend_settings.home / "events.sqlite") as conn:
            conn.execute(edit.format(table="leadledger_inbound"))
    problems = [str(p) for p in verify(app.store).problems or []]
    assert len(problems) == 2 and all(str(lead_id) in p for p in problems)
    assert any("scoring/s-1" in p and "edited" in p for p in problems)  # version 3 is crm/t-2's event


# ---------------------------------------------------------------- crashes and concurrent runs


def traffic(leads: int = 120, seed: int = 7) -> list[bytes]:
    """Simulated traffic plus what must stay refused: accepts right after capture, and junk."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i, message in enumerate(generate(leads=leads, seed=seed, start=datetime(2026, 1, 5, tzinfo=UTC), days=30)):
        lines.append(orjson.dumps(message))
        if message["type"] == "leadledger.inbound.capture.v1" and rng.random() < 0.3:
            lines.append(orjson.dumps({**message, "id": f"early-accept-{i}", "source": "crm",
                                       "type": "leadledger.inbound.transition.v1",
                                       "data": {"email": message["data"]["email"], "trigger": "accept"}}))
        if rng.random() < 0.02:
            lines.append(rng.choice([b"", b"not json", b"{\"specversion\": \"1.0\"}"]))
        if rng.random() < 0.04:  # the minimal case, for a lead of its own: its accept stays refused
            lines.extend(line.replace(b"ada@", f"p{i}@".encode()).replace(b'"id":"', f'"id":"p{i}-'.encode())
                         for line in MINIMAL)
    return lines


def store_env(settings: Settings, home: Path) -> dict[str, str]:
    extra = {}
    if settings.postgres_dsn:
        extra = {"LEADLEDGER_POSTGRES_DSN": settings.postgres_dsn,
                 "LEADLEDGER_POSTGRES_SCHEMA": settings.postgres_schema}
    return cli_env(home, **extra)


def run_ingest(source: Path, env: dict[str, str], batch_size: int = 25) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "leadledger", "ingest", str(source), "--json",
                             "--batch-size", str(batch_size), "--dead-letters", str(source) + ".dead"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def recorded(settings: Settings) -> int:
    """How many messages the store has recorded (read from outside, as another process would)."""
    try:
        if settings.postgres_dsn:
            import psycopg

            with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
                row = conn.execute(f'SELECT count(*) FROM "{settings.postgres_schema}".leadledger_inbound').fetchone()
                return int(row[0]) if row else 0
        path = settings.home / "events.sqlite"
        if not path.exists():
            return 0
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM leadledger_inbound").fetchone()[0])
    except Exception:  # not created yet, or being created
        return 0


def clean_run(tmp_path: Path, source: Path) -> dict[str, list[dict[str, Any]]]:
    home = tmp_path / "clean"
    proc = run_ingest(source, cli_env(home))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    app = bootstrap(Settings(home=home, secret=b"leadledger-test-secret"))
    try:
        return by_capture(app.store)
    finally:
        app.store.close()


def final_state(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    app = bootstrap(settings)
    try:
        assert verify(app.store).ok
        return by_capture(app.store)
    finally:
        app.store.close()


def test_sigkill_at_random_points_and_a_rerun_end_as_one_clean_ingest(
    backend_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "traffic.jsonl"
    lines = traffic()
    source.write_bytes(b"\n".join(lines) + b"\n")
    expected = clean_run(tmp_path, source)
    assert any(e["type"].endswith("LeadAcceptedBySales.v1") for events in expected.values() for e in events)

    settings = backend_settings.with_overrides(home=backend_settings.home / "killed")
    env = store_env(settings, settings.home)
    rng = random.Random(20260302)
    total = len([line for line in lines if line.strip()])
    marks = sorted(rng.sample(range(0, total), 12))  # kill once the store has recorded about this many
    kills = 0
    for mark in marks:
        proc = run_ingest(source, env)
        deadline = time.monotonic() + 120
        while proc.poll() is None and recorded(settings) < mark and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 10, f"only {kills} runs were killed before they finished"
    proc = run_ingest(source, env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert final_state(settings) == expected


def test_two_ingests_of_one_file_at_once_end_as_one_clean_ingest(backend_settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "traffic.jsonl"
    lines = traffic(leads=100, seed=3)
    source.write_bytes(b"\n".join(lines) + b"\n")
    expected = clean_run(tmp_path, source)

    settings = backend_settings.with_overrides(home=backend_settings.home / "twice")
    env = store_env(settings, settings.home)
    first = run_ingest(source, env, batch_size=20)
    # the second starts behind the first (so it meets messages the first refused on leads the
    # first has moved on since) and then races it
    deadline = time.monotonic() + 120
    while first.poll() is None and recorded(settings) < len(lines) // 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    second = run_ingest(source, env, batch_size=7)
    counts = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        counts.append(orjson.loads(out))
    assert final_state(settings) == expected
    applied = sum(len(events) for events in expected.values())
    assert counts[0]["applied"] + counts[1]["applied"] == applied  # each event written once


def test_ingest_counts_blank_lines_and_keeps_the_bytes_of_a_line_that_is_not_utf8(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    junk = b'{"id": "\xff\xfe \xe9t\xe9"}'
    source.write_bytes(b"\n".join([MINIMAL[0], b"", junk, b"  ", MINIMAL[1]]) + b"\n")
    done = subprocess.run([sys.executable, "-m", "leadledger", "ingest", str(source), "--json"],
                          env=cli_env(tmp_path / "home"), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = orjson.loads(done.stdout)
    assert counts == {"applied": 1, "duplicates": 0, "dead_lettered": 2, "skipped": 2}
    assert sum(counts.values()) == 5
    letters = [orjson.loads(line) for line in (tmp_path / "in.jsonl.dead.jsonl").read_bytes().splitlines()]
    by_line = {letter["line"]: letter for letter in letters}
    assert by_line[3]["raw_encoding"] == "base64"
    import base64

    assert base64.b64decode(by_line[3]["raw"]) == junk
    assert by_line[5]["raw"] == MINIMAL[1].decode() and "raw_encoding" not in by_line[5]
