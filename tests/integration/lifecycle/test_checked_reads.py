"""Every reader checks each event's hash and its link to the lead's previous event as it reads:
`history`, `export`, `replay` (workers or not), `project` (the store, prefetched or not; Kafka,
fetch helpers or not) and the relay. A hand edit of the SQLite store is never presented as if
the chain were whole: the command names the lead and version and exits non-zero."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.projector import project_from_kafka
from consumers.relay import run_relay
from leadledger.bootstrap import bootstrap, open_read_models
from leadledger.cli import cli
from lifecycle.audit import export_envelopes, history
from lifecycle.settings import Settings
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from schemas.codec import CorruptEvent, canonical, content_hash
from tests.support.cli import runner_env
from tests.support.env import TEST_SECRET, sqlite_settings
from tests.support.kafka_projection import create_topic, publish_events
from tests.support.reference import simulated_app
from tests.support.store_file import sql

FAST = ConsumerTuning(session_timeout_ms=6000, heartbeat_interval_ms=500, max_poll_interval_ms=10000)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 60 simulated leads, closed (the files at rest)."""
    home = tmp_path_factory.mktemp("checked-template")
    app = simulated_app(sqlite_settings(home), leads=60, seed=9)
    app.store.close()
    wal = home / "events.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(template, copy)
    return copy


def won_event(home: Path) -> tuple[UUID, int, bytes, int]:
    """(lead, version, state, notification id) of a LeadWon that has a later event of its lead."""
    rows = sql(home, "SELECT rowid, originator_id, originator_version, state FROM stored_events e "
                     "WHERE topic LIKE '%LeadWon%' AND EXISTS (SELECT 1 FROM stored_events f WHERE "
                     "f.originator_id = e.originator_id AND f.originator_version > e.originator_version) "
                     "ORDER BY rowid LIMIT 1")
    position, lead_hex, version, state = rows[0]
    return UUID(lead_hex), version, bytes(state), position


def set_state(home: Path, lead: UUID, version: int, value: bytes) -> None:
    sql(home, "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (value, lead.hex, version))


def edit_amount(home: Path) -> tuple[UUID, int]:
    """The classic: a won amount edited in place (the hash left as it was)."""
    lead, version, state, _ = won_event(home)
    envelope = orjson.loads(state)
    envelope["data"]["amount"] = 9_999_999.0
    set_state(home, lead, version, canonical(envelope))
    return lead, version


def forge_amount(home: Path) -> tuple[UUID, int]:
    """The edited event re-hashed: its own hash is fine, the next event's link is not."""
    lead, version, state, _ = won_event(home)
    envelope = orjson.loads(state)
    envelope["data"]["amount"] = 9_999_999.0
    del envelope["hash"]
    envelope["hash"] = content_hash(envelope)
    set_state(home, lead, version, canonical(envelope))
    return lead, version + 1


def drop_middle(home: Path) -> tuple[UUID, int]:
    """A middle event deleted: the next event links to a hash no event has."""
    lead, version, _, _ = won_event(home)
    sql(home, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?", (lead.hex, version))
    return lead, version


def not_json(home: Path) -> tuple[UUID, int]:
    lead, version, _, _ = won_event(home)
    set_state(home, lead, version, b'{"specversion": "1.0", not json')
    return lead, version


TAMPERS = {"edited": edit_amount, "forged": forge_amount, "dropped": drop_middle, "not-json": not_json}


def run_cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=runner_env(home))


def said(result: Any) -> str:
    """What a command told its user: its output, or the exception it stopped with."""
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += f"\n{type(result.exception).__name__}: {result.exception}"
    return text


def assert_refused(result: Any, lead: UUID, version: int, streamed: bool = False) -> None:
    """Refused, naming the lead and version. `streamed`: the command streams its output (an export
    to stdout), so events before the one that betrays the forgery were written before it."""
    assert result.exit_code != 0, result.output
    message = said(result)
    assert str(lead) in message and f"version {version}" in message, message
    if not streamed:
        assert "9999999" not in result.stdout and "9,999,999" not in result.stdout


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_history_refuses_a_broken_chain(home: Path, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    for args in (("history", str(lead)), ("history", str(lead), "--json")):
        result = run_cli(home, *args)
        assert_refused(result, lead, version)
        assert "Traceback" not in result.output
        assert result.stderr.count("\n") <= 2, result.stderr  # one or two lines, no traceback


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_export_refuses_a_broken_chain(home: Path, tmp_path: Path, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    out = tmp_path / "export.jsonl"
    for extra in ((), ("--decrypt",)):
        result = run_cli(home, "export", *extra)
        assert_refused(result, lead, version, streamed=True)
        assert "Traceback" not in result.stderr
        result = run_cli(home, "export", *extra, "--output", str(out))
        assert_refused(result, lead, version)
        assert not out.exists() and list(tmp_path.glob("*export*")) == []  # no file that looks whole


@pytest.mark.parametrize("tamper", list(TAMPERS))
@pytest.mark.parametrize("workers", ["2", "1"])
def test_replay_refuses_a_broken_chain(home: Path, tamper: str, workers: str) -> None:
    lead, version = TAMPERS[tamper](home)
    assert_refused(run_cli(home, "replay", "--workers", workers), lead, version)
    # a query then catches up from the store, batch by batch: refused as well
    assert_refused(run_cli(home, "attribution", "--json"), lead, version)


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_project_refuses_a_broken_chain(home: Path, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    assert_refused(run_cli(home, "project", "--once"), lead, version)


def test_an_edit_after_the_events_were_projected_is_caught_on_the_next_batch(home: Path) -> None:
    """The link to an event folded before is checked against the read models' own record."""
    assert run_cli(home, "replay").exit_code == 0
    app = bootstrap(sqlite_settings(home))
    try:
        lead_id = app.store.lead_ids()[0]
        last = app.store.records(lead_id)[-1]
    finally:
        app.store.close()
    # an event appended by hand that links to a made-up predecessor hash
    envelope = dict(last.envelope)
    envelope.update(sequence=last.version + 1, prevhash="ab" * 32, id=str(UUID(int=7)))
    del envelope["hash"]
    envelope["hash"] = content_hash(envelope)
    sql(home, "INSERT INTO stored_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        (lead_id.hex, last.version + 1, envelope["type"], canonical(envelope)))
    assert_refused(run_cli(home, "funnel"), lead_id, last.version + 1)


def test_personal_data_that_does_not_decrypt_is_named(home: Path) -> None:
    lead, _, _, _ = won_event(home)
    sql(home, "UPDATE leadledger_lead_keys SET wrapped_key = ? WHERE lead_id = ?", (b"\0" * 60, lead.hex))
    for args in (("history", str(lead)), ("export", "--decrypt")):
        result = run_cli(home, *args)
        assert result.exit_code != 0
        assert str(lead) in result.output and "version 1" in result.output, said(result)
        assert result.exception is None or isinstance(result.exception, SystemExit), said(result)
        assert "Traceback" not in result.output
    assert run_cli(home, "export").exit_code == 0  # sealed, the export needs no key


def test_an_untouched_store_reads_as_before(home: Path) -> None:
    for args in (("export",), ("replay",), ("project", "--once"), ("funnel",)):
        result = run_cli(home, *args)
        assert result.exit_code == 0, said(result)


# ---------------------------------------------------------------- the library


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_the_readers_raise_corrupt_event(home: Path, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    s = sqlite_settings(home)
    app = bootstrap(s)
    try:
        with pytest.raises(CorruptEvent, match=f"lead {lead} version {version}"):
            history(app.store, lead)
        with pytest.raises(CorruptEvent, match=f"lead {lead} version {version}"):
            list(export_envelopes(app.store))
        for prefetch in (True, False):
            runner = Runner(open_read_models(s))
            source = EmbeddedSource(app.store, prefetch=prefetch)
            try:
                runner.setup()
                runner.reset()
                with pytest.raises(CorruptEvent, match=f"lead {lead} version {version}"):
                    runner.catch_up(source, 97)
            finally:
                source.close()
                runner.db.close()
    finally:
        app.store.close()


def test_history_notices_a_removed_last_event(home: Path) -> None:
    s = sqlite_settings(home)
    app = bootstrap(s)
    try:
        lead = app.store.lead_ids()[3]
        last = app.store.records(lead)[-1].version
    finally:
        app.store.close()
    sql(home, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?", (lead.hex, last))
    app = bootstrap(s)
    try:
        with pytest.raises(CorruptEvent, match=f"lead {lead} version {last}"):
            history(app.store, lead)
    finally:
        app.store.close()


# ---------------------------------------------------------------- Kafka: the relay and the Kafka source


@pytest.mark.parametrize("tamper", ["edited", "forged"])
def test_the_relay_stops_at_the_first_bad_event(home: Path, kafka_settings: KafkaSettings, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    position = sql(home, "SELECT rowid FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                   (lead.hex, version))[0][0]
    app = bootstrap(sqlite_settings(home))
    try:
        with pytest.raises(CorruptEvent, match=f"lead {lead} version {version}"):
            run_relay(app.store, kafka_settings, once=True, batch=50, retry_backoff_s=0.01)
        # everything before the bad event went out, and the relay's position says so
        assert app.store.relay_position(kafka_settings.events_topic) == position - 1
    finally:
        app.store.close()


@pytest.mark.parametrize("fetch_process", [True, False], ids=["fetch-process", "fetch-inline"])
@pytest.mark.parametrize("tamper", ["edited", "forged"])
def test_the_kafka_source_refuses_a_broken_chain(home: Path, kafka_settings: KafkaSettings, tmp_path: Path,
                                                 fetch_process: bool, tamper: str) -> None:
    lead, version = TAMPERS[tamper](home)
    app = bootstrap(sqlite_settings(home))
    try:
        rows = list(app.store.iter_raw())  # what a relay without checks would have published
    finally:
        app.store.close()
    create_topic(kafka_settings)
    publish_events(kafka_settings, rows)
    db = open_read_models(Settings(home=tmp_path / "projector", secret=TEST_SECRET))
    try:
        with pytest.raises(CorruptEvent, match=f"lead {lead} version {version}"):
            project_from_kafka(db, kafka_settings, once=True, tuning=FAST, log_every=60, echo=lambda _: None,
                               fetch_process=fetch_process, batch_size=97)
    finally:
        db.close()
