"""Identity: the secret and the store it belongs to, random lead ids found through the e-mail index,
stores of old (HMAC lead ids, no index, no fingerprint), the re-capture's statement, future times."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import TEST_SECRET, sqlite_settings

from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.application import LeadLedger
from lifecycle.audit import export_envelopes, history, verify
from lifecycle.domain import commands as cmd
from lifecycle.domain.errors import UnknownLead
from lifecycle.privacy import Secrets
from lifecycle.settings import MIN_SECRET_BYTES, Settings, SettingsError
from schemas.sealing import ERASED
from tests.support.cli import T0, cli_env, contains, postgres_rows, raw_bytes_of_files

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-events.sqlite"


def capture(email: str, minute: int = 0, key: tuple[str, str] | None = None, **kw: Any) -> cmd.Capture:
    return cmd.Capture(occurred_at=T0 + timedelta(minutes=minute), actor="t", message_key=key, email=email,
                       channel=kw.pop("channel", "webinar"), **kw)


# ---------------------------------------------------------------- the secret


@pytest.mark.parametrize("secret", [b"", b"   ", b"short", b"x" * (MIN_SECRET_BYTES - 1)])
def test_an_empty_or_short_secret_is_refused(tmp_path: Path, secret: bytes) -> None:
    with pytest.raises(SettingsError, match=f"at least {MIN_SECRET_BYTES} bytes") as refused:
        bootstrap(Settings(home=tmp_path, secret=secret))
    assert "LEADLEDGER_SECRET" in str(refused.value)
    assert not (tmp_path / "events.sqlite").exists()


def test_an_empty_or_short_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_bytes(b"abc\n")
    with pytest.raises(SettingsError, match=r"secret\.key is too short") as refused:
        Settings(home=tmp_path).resolve_secret()
    assert "16" in str(refused.value)
    (tmp_path / "secret.key").write_bytes(b"")
    with pytest.raises(SettingsError, match=r"secret\.key is empty"):
        Settings(home=tmp_path).resolve_secret()


def test_an_empty_secret_variable_is_refused_and_the_cli_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LEADLEDGER_SECRET is set but empty"):
        Settings.from_env({"LEADLEDGER_SECRET": "", "LEADLEDGER_HOME": str(tmp_path)})
    for value in ("", "too-short"):
        done = subprocess.run([sys.executable, "-m", "leadledger", "capture", "--email", "a@example.com",
                               "--channel", "web"], env=cli_env(tmp_path / "h", LEADLEDGER_SECRET=value),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "LEADLEDGER_SECRET" in done.stderr
    assert not (tmp_path / "h" / "events.sqlite").exists()


def _resolve(home: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    out.put(Settings(home=Path(home)).resolve_secret())


def test_racing_processes_in_a_fresh_home_all_get_the_one_secret_file(tmp_path: Path) -> None:
    for round_ in range(5):
        home = tmp_path / f"home{round_}"
        ctx = multiprocessing.get_context("fork")
        barrier, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_resolve, args=(str(home), barrier, out)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        secrets = {out.get(timeout=5) for _ in procs}
        assert secrets == {(home / "secret.key").read_bytes().strip()}
        assert len(next(iter(secrets))) >= MIN_SECRET_BYTES
        assert sorted(p.name for p in home.iterdir()) == ["secret.key"]  # no temporary file left


def test_the_home_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    env = cli_env(home)
    del env["LEADLEDGER_SECRET"]  # secret.key is created too
    old = os.umask(0o022)
    try:
        for args in (["simulate", "--leads", "30", "--json"], ["funnel", "--json"]):
            done = subprocess.run([sys.executable, "-m", "leadledger", *args], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        open_read_models(Settings(home=home, secret=(home / "secret.key").read_bytes().strip())).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir() if p.is_file()}
    assert {"events.sqlite", "readmodels.sqlite", "secret.key"} <= files.keys()
    assert files == dict.fromkeys(files, 0o600), files


# ---------------------------------------------------------------- the store's identity


def _meta(settings: Settings) -> dict[str, str]:
    app = bootstrap(settings)
    try:
        return app.store.recorder.read_meta()
    finally:
        app.store.close()


def _rows(settings: Settings) -> list[Any]:
    if settings.postgres_dsn:
        return sorted(str(v) for v in postgres_rows(settings))
    with sqlite3.connect(settings.home / "events.sqlite") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return sorted(repr(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))


def test_the_store_records_the_fingerprint_of_its_secret_and_refuses_another(
    app: LeadLedger, backend_settings: Settings, tmp_path: Path
) -> None:
    app.execute(capture("ada@example.com", name="Ada"))
    meta = app.store.recorder.read_meta()
    assert meta["secret_fingerprint"] == Secrets.from_secret(TEST_SECRET).fingerprint
    assert meta["lead_ids"] == "random"
    assert not any(contains(v, TEST_SECRET.decode()) for v in meta.values())
    before = _rows(backend_settings)
    other = backend_settings.with_overrides(secret=b"some-other-secret-16+")
    with pytest.raises(SettingsError, match="different secret") as refused:
        bootstrap(other)
    assert "nothing was written" in str(refused.value)
    assert _rows(backend_settings) == before
    env = cli_env(backend_settings.home, LEADLEDGER_SECRET="some-other-secret-16+")
    if backend_settings.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=backend_settings.postgres_dsn,
                   LEADLEDGER_POSTGRES_SCHEMA=backend_settings.postgres_schema)
    done = subprocess.run([sys.executable, "-m", "leadledger", "capture", "--email", "bob@example.com",
                           "--channel", "web"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "different secret" in done.stderr, done.stderr
    assert _rows(backend_settings) == before


# ---------------------------------------------------------------- random ids, the e-mail index


def test_two_captures_of_one_new_email_racing_make_one_lead(backend_settings: Settings) -> None:
    apps = [bootstrap(backend_settings) for _ in range(2)]
    try:
        for n in range(12):
            email = f"race{n}@example.com"
            barrier = threading.Barrier(2)
            outcomes: list[Any] = [None, None]

            def run(i: int, email: str = email, barrier: threading.Barrier = barrier, n: int = n,
                    outcomes: list[Any] = outcomes) -> None:
                barrier.wait()
                outcomes[i] = apps[i].execute(capture(email, minute=n, key=(f"src{i}", email), name=f"P{i}"))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert all(o.status == "applied" for o in outcomes), outcomes
            assert {o.lead_id for o in outcomes} == {apps[0].lead_id_for(cmd.LeadRef(email=email))}
            assert sorted(o.event for o in outcomes) == ["LeadCaptured", "LeadTouched"]
        assert len(apps[0].store.lead_ids()) == 12
        assert verify(apps[0].store).ok
    finally:
        for a in apps:
            a.store.close()


def test_after_erase_the_email_finds_no_lead_and_a_capture_makes_a_new_one(app: LeadLedger) -> None:
    first = app.execute(capture("ada@example.com", name="Ada", company="Ada Ltd")).lead_id
    assert first is not None
    key = app.store.secrets.email_key("ada@example.com")
    assert app.store.lookup_emails([key]) == {key: first}
    erased = app.execute(cmd.Erase(occurred_at=T0 + timedelta(days=1), actor="dpo", message_key=None,
                                   lead=cmd.LeadRef(email="ADA@example.com")))
    assert erased.status == "applied" and erased.lead_id == first
    assert app.store.lookup_emails([key]) == {}
    with pytest.raises(UnknownLead):
        app.lead_id_for(cmd.LeadRef(email="ada@example.com"))
    touch = app.execute(cmd.Touch(occurred_at=T0 + timedelta(days=2), actor="t", message_key=None,
                                  lead=cmd.LeadRef(email="ada@example.com"), channel="email"))
    assert touch.status == "refused" and "unknown lead" in (touch.error or "")
    again = app.execute(capture("ada@example.com", minute=3 * 24 * 60, name="Ada again"))
    assert again.status == "applied" and again.event == "LeadCaptured"
    assert again.lead_id is not None and again.lead_id != first
    assert app.store.lookup_emails([key]) == {key: again.lead_id}
    shown = history(app.store, first)
    assert shown is not None and shown["events"][0]["data"]["company"] == ERASED
    assert verify(app.store).ok


def test_erasing_and_capturing_one_email_in_one_batch(app: LeadLedger) -> None:
    first = app.execute(capture("eve@example.com")).lead_id
    assert first is not None
    outcomes = app.execute_batch([
        cmd.Erase(occurred_at=T0 + timedelta(days=1), actor="dpo", message_key=None, lead=cmd.LeadRef(lead_id=first)),
        capture("eve@example.com", minute=2 * 24 * 60, key=("web", "e-2")),
        capture("eve@example.com", minute=2 * 24 * 60 + 1, key=("web", "e-3")),
    ])
    assert [o.event for o in outcomes] == ["LeadPersonalDataErased", "LeadCaptured", "LeadTouched"]
    assert outcomes[1].lead_id == outcomes[2].lead_id != first
    assert app.lead_id_for(cmd.LeadRef(email="eve@example.com")) == outcomes[1].lead_id


# ---------------------------------------------------------------- the re-capture's statement


def test_a_recapture_carries_the_persons_statement_sealed_and_consent_follows_it(
    app: LeadLedger, backend_settings: Settings
) -> None:
    first = app.execute(capture("grace@example.com", consent=False, key=("web", "g-1")))
    assert first.lead_id is not None
    second = app.execute(capture("Grace@Example.com", minute=5, channel="events", campaign="expo",
                                 key=("web", "g-2"), consent=True, name="Grace Brewster Hopper",
                                 company="Hopper Compiler Works", phone="+1 555 0199"))
    assert (second.lead_id, second.event) == (first.lead_id, "LeadTouched")
    lead = app.load(first.lead_id)
    assert lead is not None and lead.consent is True  # the consent of the second form is not lost
    shown = history(app.store, first.lead_id)
    assert shown is not None
    data = shown["events"][1]["data"]
    assert (data["kind"], data["channel"], data["campaign"], data["consent"]) == ("recapture", "events", "expo", True)
    assert (data["name"], data["company"], data["phone"]) == ("Grace Brewster Hopper", "Hopper Compiler Works",
                                                              "+1 555 0199")
    exported = [e for e in export_envelopes(app.store, decrypt=True) if e["subject"] == str(first.lead_id)]
    assert exported[1]["data"]["company"] == "Hopper Compiler Works"
    stored = app.store.records(first.lead_id)[1]
    assert isinstance(stored.data["personal"], str) and "name" not in stored.data
    # a plain touch states nothing, and consent stays what the latest statement said
    app.execute(cmd.Touch(occurred_at=T0 + timedelta(minutes=9), actor="t", message_key=None,
                          lead=cmd.LeadRef(lead_id=first.lead_id), channel="email"))
    lead = app.load(first.lead_id)
    assert lead is not None and lead.consent is True
    for secret_text in ("Grace Brewster Hopper", "Hopper Compiler Works", "+1 555 0199"):
        if backend_settings.postgres_dsn:
            assert not any(contains(v, secret_text) for _, v in postgres_rows(backend_settings)), secret_text
        else:
            assert not any(contains(data, secret_text) for _, data in raw_bytes_of_files(backend_settings.home))
    # erased: the statement reads as erased like the capture's personal data
    app.execute(cmd.Erase(occurred_at=T0 + timedelta(days=1), actor="dpo", message_key=None,
                          lead=cmd.LeadRef(lead_id=first.lead_id)))
    shown = history(app.store, first.lead_id)
    assert shown is not None and shown["events"][1]["data"]["name"] == ERASED
    assert verify(app.store).ok


def test_spellings_of_one_address_are_one_lead_and_invalid_ones_are_refused(app: LeadLedger) -> None:
    spellings = ["kelvin@münchen.de", "\u212aELVIN@xn--mnchen-3ya.de.", "ｋｅｌｖｉｎ@MÜNCHEN.DE"]
    outcomes = [app.execute(capture(e, minute=i)) for i, e in enumerate(spellings)]
    assert [o.event for o in outcomes] == ["LeadCaptured", "LeadTouched", "LeadTouched"]
    assert len({o.lead_id for o in outcomes}) == 1
    for bad in ("kelvin\u200b@münchen.de", "kelvin@"):
        refused = app.execute(capture(bad))
        assert refused.status == "refused" and "not a valid e-mail address" in (refused.error or "")


# ---------------------------------------------------------------- time


def test_an_occurred_at_more_than_5_minutes_after_the_recording_clock_is_refused(app: LeadLedger) -> None:
    now = datetime.now(UTC)
    late = app.execute(capture("tomorrow@example.com", minute=0).__class__(
        occurred_at=now + timedelta(minutes=10), actor="t", message_key=None, email="tomorrow@example.com",
        channel="web"))
    assert late.status == "refused"
    assert "more than 5 minutes after the recording clock" in (late.error or "")
    assert str((now + timedelta(minutes=10)).year) in (late.error or "") and (late.error or "").count("Z") >= 2
    soon = app.execute(cmd.Capture(occurred_at=now + timedelta(minutes=4), actor="t", message_key=None,
                                   email="soon@example.com", channel="web"))
    assert soon.status == "applied", soon.error


# ---------------------------------------------------------------- stores of old


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    home = tmp_path / "legacy"
    home.mkdir()
    shutil.copy(FIXTURE, home / "events.sqlite")
    return home


def test_a_store_of_old_gets_its_fingerprint_and_keeps_reading(legacy: Path) -> None:
    with sqlite3.connect(legacy / "events.sqlite") as conn:
        assert "outcome" not in {r[1] for r in conn.execute("PRAGMA table_info(leadledger_inbound)")}
    app = bootstrap(sqlite_settings(legacy))
    try:
        meta = app.store.recorder.read_meta()
        assert meta == {"secret_fingerprint": Secrets.from_secret(TEST_SECRET).fingerprint, "lead_ids": "legacy"}
        assert verify(app.store).ok
        ada = Secrets.from_secret(TEST_SECRET).legacy_lead_id("ada@example.com")
        assert app.lead_id_for(cmd.LeadRef(email="ADA@example.com")) == ada
        shown = history(app.store, ada)
        assert shown is not None
        captured = shown["events"][0]
        assert captured["type"].endswith("LeadCaptured.v1")
        assert (captured["data"]["company"], captured["data"]["name"]) == ("Lovelace Analytical Ltd", "Ada Lovelace")
        # the old applied messages are remembered as applied
        assert app.store.outcomes([("scoring", "old-2")])[("scoring", "old-2")][0] == "applied"
        # a re-capture of a lead of old is a touch on it; a touch of an erased one's e-mail finds nothing
        again = app.execute(capture("ada@example.com", minute=30, key=("web-forms", "new-1"), consent=True))
        assert (again.lead_id, again.event) == (ada, "LeadTouched")
        lead = app.load(ada)
        assert lead is not None and lead.consent is True
        grace = Secrets.from_secret(TEST_SECRET).legacy_lead_id("grace@example.com")
        with pytest.raises(UnknownLead):
            app.lead_id_for(cmd.LeadRef(email="grace@example.com"))
        new = app.execute(capture("grace@example.com", minute=31))  # never attached to the erased lead
        assert new.event == "LeadCaptured" and new.lead_id not in (None, grace)
        assert isinstance(new.lead_id, UUID) and new.lead_id.version == 4
        assert app.lead_id_for(cmd.LeadRef(email="grace@example.com")) == new.lead_id
        assert verify(app.store).ok
    finally:
        app.store.close()
    with sqlite3.connect(legacy / "events.sqlite") as conn:
        assert "outcome" in {r[1] for r in conn.execute("PRAGMA table_info(leadledger_inbound)")}
    assert _meta(sqlite_settings(legacy))["lead_ids"] == "legacy"  # recorded once


def test_a_store_of_old_is_refused_with_a_wrong_secret_and_nothing_is_recorded(legacy: Path) -> None:
    with pytest.raises(SettingsError, match="data keys this secret does not open"):
        bootstrap(Settings(home=legacy, secret=b"not-the-secret-of-this-store"))
    with sqlite3.connect(legacy / "events.sqlite") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "leadledger_meta" not in tables
    assert bootstrap(sqlite_settings(legacy)).store.recorder.read_meta()["lead_ids"] == "legacy"


@pytest.mark.postgres
def test_a_postgres_store_of_old_is_migrated_on_first_open(postgres_schema: str, tmp_path: Path) -> None:
    """The fixture's rows in a PostgreSQL store of the old shape (old leadledger_inbound, no meta,
    no e-mail index)."""
    import psycopg
    from eventsourcing.persistence import StoredEvent

    from leadledger.bootstrap import make_recorder
    from tests.support.env import POSTGRES_DSN

    settings = Settings(home=tmp_path, postgres_dsn=POSTGRES_DSN, postgres_schema=postgres_schema, secret=TEST_SECRET)
    with sqlite3.connect(FIXTURE) as old:
        events = old.execute("SELECT originator_id, originator_version, topic, state FROM stored_events "
                             "ORDER BY rowid").fetchall()
        keys = old.execute("SELECT lead_id, wrapped_key FROM leadledger_lead_keys").fetchall()
        heads = old.execute("SELECT lead_id, version, hash FROM leadledger_heads").fetchall()
        inbound = old.execute("SELECT source, message_id, lead_id, version FROM leadledger_inbound").fetchall()
    recorder = make_recorder(settings)
    recorder.insert_events([StoredEvent(UUID(o), v, t, bytes(s)) for o, v, t, s in events],
                           lead_keys=[(UUID(lead), bytes(k)) for lead, k in keys],
                           heads=[(UUID(lead), v, h) for lead, v, h in heads])
    recorder.close()
    schema = f'"{postgres_schema}"'
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {schema}.leadledger_meta, {schema}.leadledger_email_index, "
                     f"{schema}.leadledger_inbound")
        conn.execute(f"CREATE TABLE {schema}.leadledger_inbound (source text NOT NULL, message_id text NOT NULL, "
                     "lead_id uuid NOT NULL, version bigint NOT NULL, PRIMARY KEY (source, message_id))")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.leadledger_inbound VALUES (%s, %s, %s, %s)",
                            [(s, m, UUID(lead), v) for s, m, lead, v in inbound])
    with pytest.raises(SettingsError, match="data keys this secret does not open"):
        bootstrap(settings.with_overrides(secret=b"not-the-secret-of-this-store"))
    app = bootstrap(settings)
    try:
        assert app.store.recorder.read_meta()["lead_ids"] == "legacy"
        assert verify(app.store).ok
        ada = Secrets.from_secret(TEST_SECRET).legacy_lead_id("ada@example.com")
        assert app.store.outcomes([("scoring", "old-2")])[("scoring", "old-2")][:1] == ("applied",)
        again = app.execute(capture("Ada@example.com", minute=30, key=("web-forms", "new-1")))
        assert (again.lead_id, again.event) == (ada, "LeadTouched")
        refused = app.execute(capture("x@example.com", key=("web-forms", "new-2"), channel=" "))
        assert refused.status == "refused"  # a refusal is recorded in the migrated table
        assert app.store.outcomes([("web-forms", "new-2")])[("web-forms", "new-2")][0] == "refused"
        new = app.execute(capture("grace@example.com", minute=31))
        assert new.event == "LeadCaptured" and new.lead_id != Secrets.from_secret(TEST_SECRET).legacy_lead_id(
            "grace@example.com")
        assert verify(app.store).ok
    finally:
        app.store.close()
