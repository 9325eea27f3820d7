"""The composition root: every piece of infrastructure (event store, read-model database,
analytics, the application) is built here from one `Settings`, and nowhere else."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from lifecycle.application import LeadLedger
from lifecycle.policies import PolicyStream
from lifecycle.privacy import Secrets
from lifecycle.settings import Settings, SettingsError, private_home
from lifecycle.store.postgres import PostgresLeadRecorder
from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import (
    FINGERPRINT,
    LEAD_IDS,
    LeadRecorder,
    SecureSQLiteDatastore,
    SQLiteLeadRecorder,
)
from projections.engine.db import ReadModelDB
from projections.engine.postgres import PostgresReadModelDB
from projections.engine.sqlite import READMODELS_DB, SQLiteReadModelDB
from projections.money import fx_table
from projections.service import Analytics
from schemas.sealing import DecryptionFailed

EVENTS_DB = "events.sqlite"


def make_recorder(settings: Settings, *, create: bool = True) -> LeadRecorder:
    """SQLite under LEADLEDGER_HOME by default; PostgreSQL when a DSN is set. `create=False`
    leaves the tables alone (the caller checks the store's identity first)."""
    if settings.postgres_dsn:
        try:
            params = conninfo_to_dict(settings.postgres_dsn)
        except Exception as exc:  # psycopg raises ProgrammingError for bad DSNs
            raise SettingsError(f"LEADLEDGER_POSTGRES_DSN is not a valid DSN: {exc}") from exc
        datastore = PostgresDatastore(
            dbname=str(params.get("dbname") or params.get("user") or "postgres"),
            host=str(params.get("host") or "127.0.0.1"),
            port=str(params.get("port") or 5432),
            user=str(params.get("user") or "postgres"),
            password=str(params.get("password") or ""),
            schema=settings.postgres_schema,
            pool_size=2,
            max_overflow=4,
            lock_timeout=30,
        )
        pg_recorder = PostgresLeadRecorder(datastore)
        if create:
            pg_recorder.create_table()
        return pg_recorder
    private_home(settings.home)
    private_file(settings.home / EVENTS_DB)  # SQLite gives its -wal and -shm the same mode
    sqlite_datastore = SecureSQLiteDatastore(str(settings.home / EVENTS_DB), lock_timeout=30)
    recorder = SQLiteLeadRecorder(sqlite_datastore)
    if create:
        recorder.create_table()
    return recorder


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists (SQLite opens an empty file as a new
    database), so a new store or read-model file is readable by its owner only."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_store(settings: Settings) -> LeadStore:
    """The event store of record (SQLite file or PostgreSQL), with the configured secret, once
    the store's identity agrees with it (`check_identity`)."""
    secrets = Secrets.from_secret(settings.resolve_secret())
    recorder = make_recorder(settings, create=False)
    try:
        meta = check_identity(recorder, secrets, settings)
    except BaseException:
        recorder.close()
        raise
    return LeadStore(recorder, secrets, legacy_ids=meta.get(LEAD_IDS) == "legacy")


def _where(settings: Settings) -> str:
    if settings.postgres_dsn:
        return f"the PostgreSQL store (schema {settings.postgres_schema})"
    return f"the store {settings.home / EVENTS_DB}"


def _wrong_secret(settings: Settings, why: str) -> SettingsError:
    return SettingsError(
        f"{_where(settings)} {why}: this process was started with another secret. Set LEADLEDGER_SECRET "
        f"(or {settings.home / 'secret.key'}) to the secret the store was created with, or point "
        "LEADLEDGER_HOME / LEADLEDGER_POSTGRES_SCHEMA at another store; nothing was written"
    )


def check_identity(recorder: LeadRecorder, secrets: Secrets, settings: Settings) -> dict[str, str]:
    """Refuse (SettingsError, before anything is written) a store whose secret fingerprint
    differs from this secret's; then create the tables and record the fingerprint if the store
    has none yet (a new store, or one made before fingerprints: then its secret is first proved
    by unwrapping a stored data key). Also records how the store's lead ids were made: random
    for a new store, `legacy` (HMAC of the e-mail) for one that already had events."""
    recorded = recorder.read_meta().get(FINGERPRINT)
    if recorded is not None and recorded != secrets.fingerprint:
        raise _wrong_secret(settings, "was created with a different secret (its fingerprint differs)")
    if recorded is None:
        sample = recorder.any_wrapped_key()
        if sample is not None:
            try:
                secrets.unwrap(*sample)
            except DecryptionFailed:
                raise _wrong_secret(settings, "holds data keys this secret does not open") from None
    recorder.create_table()
    meta = recorder.read_meta()
    if FINGERPRINT not in meta or LEAD_IDS not in meta:
        wanted = {FINGERPRINT: secrets.fingerprint, LEAD_IDS: "legacy" if recorder.has_events() else "random"}
        meta = recorder.claim_meta(wanted)
    if meta.get(FINGERPRINT) != secrets.fingerprint:  # another process created it first, with another secret
        raise _wrong_secret(settings, "was just created by another process with a different secret")
    return meta


def bootstrap(settings: Settings | None = None) -> LeadLedger:
    """The application (command handlers over the event store)."""
    settings = settings or Settings.from_env()
    return LeadLedger(open_store(settings), settings)


def open_read_models(settings: Settings) -> ReadModelDB:
    """The read-model database: SQLite `readmodels.sqlite` under LEADLEDGER_HOME, or the
    PostgreSQL database of the store (tables `rm_*` in LEADLEDGER_POSTGRES_SCHEMA)."""
    if settings.postgres_dsn:
        return PostgresReadModelDB(settings.postgres_dsn, settings.postgres_schema)
    private_home(settings.home)
    private_file(settings.home / READMODELS_DB)
    return SQLiteReadModelDB(settings.home / READMODELS_DB)


def read_models_exist(settings: Settings) -> bool:
    """False only for an embedded home whose read models were never built (PostgreSQL: always)."""
    return bool(settings.postgres_dsn) or (settings.home / READMODELS_DB).exists()


def open_analytics(settings: Settings, *, auto_refresh: bool = True, with_store: bool = True) -> Analytics:
    """The analyst API over the read models; with the store, queries catch up from it first.
    Revenue is in the reporting currency, at the rates of the `[fx]` table (a bad table is a
    `SettingsError` naming its key path). With the store, the SLA and speed figures read the
    published policy versions from it at each query."""
    fx = fx_table(settings)
    store = open_store(settings) if with_store else None
    policies = PolicyStream(store).versions if store is not None else None
    return Analytics(open_read_models(settings), store, auto_refresh=auto_refresh, fx=fx, policies=policies)
