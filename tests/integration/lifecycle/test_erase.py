"""Crypto-shredding on the embedded store: after `erase` the lead's key is gone from every SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from conftest import sqlite_settings

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.audit import history, verify
from lifecycle.domain import commands as cmd
from schemas.sealing import ERASED, DecryptionFailed, unseal
from tests.support.cli import T0, sqlite_files

EMAIL = "ada.lovelace@example.com"
COMPANY = "Lovelace Difference Engines"  # a one-person company names a person


def raw_sqlite(home: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sqlite_files(home)}
    assert "events.sqlite" in files
    return files


def holders(files: dict[str, bytes], needle: bytes) -> list[str]:
    return [name for name, data in files.items() if needle in data]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LeadLedger]:
    ledger = bootstrap(sqlite_settings(tmp_path))
    yield ledger
    ledger.store.close()


def capture_many(app: LeadLedger, n: int) -> list[UUID]:
    """Enough leads that the key table spans several pages."""
    ids = []
    for i in range(n):
        outcome = app.execute(cmd.Capture(occurred_at=T0 + timedelta(minutes=i), actor="t", message_key=None,
                                          email=f"person{i}@example.org", channel="ads",
                                          name=f"Person Number {i}", phone=f"+1 555 {i:04d}"))
        assert outcome.lead_id is not None
        ids.append(outcome.lead_id)
    return ids


def erase(app: LeadLedger, lead_id: UUID) -> None:
    outcome = app.execute(cmd.Erase(occurred_at=T0 + timedelta(days=30), actor="dpo", message_key=None,
                                    lead=cmd.LeadRef(lead_id=lead_id), reason="right to be forgotten"))
    assert outcome.status == "applied", outcome.error


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_erase_removes_the_wrapped_key_from_every_sqlite_file(app: LeadLedger, tmp_path: Path,
                                                             position: str) -> None:
    before_ids = capture_many(app, 30) if position != "first" else []
    lead_id = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=EMAIL,
                                      channel="webinar", name="Ada Lovelace", phone="+41 44 000 00 00",
                                      company=COMPANY)).lead_id
    assert lead_id is not None
    # a re-capture's statement (sealed with the same key) goes with it
    app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=EMAIL, channel="events",
                            name="Augusta Ada King", company=COMPANY + " II", consent=True))
    after_ids = capture_many(app, 30) if position != "last" else []
    app.execute(cmd.Score(occurred_at=T0, actor="t", message_key=None, lead=cmd.LeadRef(lead_id=lead_id),
                          total=80))

    wrapped = app.store.recorder.wrapped_keys([lead_id])[lead_id]
    data_key = app.store.data_key(lead_id)
    assert data_key is not None and len(wrapped) > 32
    others = app.store.recorder.wrapped_keys(before_ids + after_ids)
    # control: before erasure the wrapped key is in the raw files, so the check below can fail
    assert holders(raw_sqlite(tmp_path), wrapped), "control: the wrapped key must be in the files"
    assert holders(raw_sqlite(tmp_path), data_key) == []  # the clear data key is never stored
    sealed = app.store.records(lead_id)[0].data["personal"]
    assert EMAIL in unseal(lead_id, data_key, sealed).decode()

    erase(app, lead_id)

    files = raw_sqlite(tmp_path)
    assert holders(files, wrapped) == [], "the erased lead's wrapped key survived in a file"
    assert holders(files, wrapped[12:28]) == []  # not even a fragment of the ciphertext
    assert holders(files, data_key) == []
    assert app.store.data_key(lead_id) is None
    assert app.store.recorder.wrapped_keys([lead_id]) == {}
    # the e-mail cannot be recovered: no key, no clear text anywhere
    for name, data in files.items():
        for text in (EMAIL, "Ada Lovelace", COMPANY, "Augusta Ada King"):
            assert text.encode() not in data, (name, text)
    result = history(app.store, lead_id)
    assert result is not None
    assert result["events"][0]["data"]["email"] == ERASED
    assert result["events"][0]["data"]["company"] == ERASED
    assert result["events"][1]["data"]["name"] == ERASED
    # the e-mail index row is gone with the key: the e-mail no longer finds the lead
    assert app.store.lookup_emails([app.store.secrets.email_key(EMAIL)]) == {}
    assert b"leadledger" in files["events.sqlite"]  # (the files are real)
    # every other lead keeps its key and its readable data
    assert app.store.recorder.wrapped_keys(before_ids + after_ids) == others
    for other in (before_ids + after_ids)[:3]:
        other_history = history(app.store, other)
        assert other_history is not None and other_history["events"][0]["data"]["email"].startswith("person")
    assert verify(app.store).ok


def test_erase_survives_a_restart_and_the_old_key_no_longer_opens_anything_stored(tmp_path: Path) -> None:
    app = bootstrap(sqlite_settings(tmp_path))
    try:
        lead_id = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=EMAIL,
                                          channel="webinar", name="Ada Lovelace")).lead_id
        assert lead_id is not None
        wrapped = app.store.recorder.wrapped_keys([lead_id])[lead_id]
        erase(app, lead_id)
    finally:
        app.store.close()

    reopened = bootstrap(sqlite_settings(tmp_path))
    try:
        assert reopened.store.data_key(lead_id) is None
        assert holders(raw_sqlite(tmp_path), wrapped) == []
        sealed = reopened.store.records(lead_id)[0].data["personal"]
        assert isinstance(sealed, str) and sealed
        with pytest.raises(DecryptionFailed):  # a guessed key does not open it either
            unseal(lead_id, b"\x00" * 32, sealed)
    finally:
        reopened.store.close()


def test_an_erase_blocked_by_a_reader_can_be_completed_by_erasing_again(tmp_path: Path) -> None:
    import sqlite3

    from conftest import TEST_SECRET

    from lifecycle.privacy import Secrets
    from lifecycle.store.repository import LeadStore
    from lifecycle.store.sqlite import SecureSQLiteDatastore, SQLiteLeadRecorder

    # bootstrap()'s store, with a 1 s lock timeout instead of 30 s so the blocked checkpoint gives up fast
    recorder = SQLiteLeadRecorder(SecureSQLiteDatastore(str(tmp_path / "events.sqlite"), lock_timeout=1))
    recorder.create_table()
    app = LeadLedger(LeadStore(recorder, Secrets.from_secret(TEST_SECRET)), sqlite_settings(tmp_path))
    lead_id = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=EMAIL,
                                      channel="webinar", name="Ada Lovelace")).lead_id
    assert lead_id is not None
    wrapped = app.store.recorder.wrapped_keys([lead_id])[lead_id]
    reader = sqlite3.connect(tmp_path / "events.sqlite")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM stored_events").fetchone()  # holds a read snapshot
        try:
            erase(app, lead_id)
        except RuntimeError as exc:  # the product asks to run erase again once readers are gone
            assert "again" in str(exc)
    finally:
        reader.rollback()
        reader.close()

    again = app.execute(cmd.Erase(occurred_at=T0 + timedelta(days=31), actor="dpo", message_key=None,
                                  lead=cmd.LeadRef(lead_id=lead_id)))
    try:
        assert again.status in ("applied", "duplicate"), again.error
        assert holders(raw_sqlite(tmp_path), wrapped) == []
    finally:
        app.store.close()
