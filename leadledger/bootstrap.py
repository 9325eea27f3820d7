"""The composition root: every piece of infrastructure (event store, read-model database,
analytics, the application) is built here from one `Settings`, and nowhere else."""

from __future__ import annotations

from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from lifecycle.application import LeadLedger
from lifecycle.privacy import Secrets
from lifecycle.settings import Settings, SettingsError
from lifecycle.store.postgres import PostgresLeadRecorder
from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import LeadRecorder, SecureSQLiteDatastore, SQLiteLeadRecorder
from projections.engine.db import ReadModelDB
from projections.engine.postgres import PostgresReadModelDB
from projections.engine.sqlite import READMODELS_DB, SQLiteReadModelDB
from projections.service import Analytics

EVENTS_DB = "events.sqlite"


def make_recorder(settings: Settings) -> LeadRecorder:
    """SQLite under LEADLEDGER_HOME by default; PostgreSQL when a DSN is set."""
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
        pg_recorder.create_table()
        return pg_recorder
    settings.home.mkdir(parents=True, exist_ok=True)
    sqlite_datastore = SecureSQLiteDatastore(str(settings.home / EVENTS_DB), lock_timeout=30)
    recorder = SQLiteLeadRecorder(sqlite_datastore)
    recorder.create_table()
    return recorder


def open_store(settings: Settings) -> LeadStore:
    """The event store of record (SQLite file or PostgreSQL), with the configured secret."""
    secrets = Secrets.from_secret(settings.resolve_secret())
    return LeadStore(make_recorder(settings), secrets)


def bootstrap(settings: Settings | None = None) -> LeadLedger:
    """The application (command handlers over the event store)."""
    settings = settings or Settings.from_env()
    return LeadLedger(open_store(settings), settings)


def open_read_models(settings: Settings) -> ReadModelDB:
    """The read-model database: SQLite `readmodels.sqlite` under LEADLEDGER_HOME, or the
    PostgreSQL database of the store (tables `rm_*` in LEADLEDGER_POSTGRES_SCHEMA)."""
    if settings.postgres_dsn:
        return PostgresReadModelDB(settings.postgres_dsn, settings.postgres_schema)
    return SQLiteReadModelDB(settings.home / READMODELS_DB)


def read_models_exist(settings: Settings) -> bool:
    """False only for an embedded home whose read models were never built (PostgreSQL: always)."""
    return bool(settings.postgres_dsn) or (settings.home / READMODELS_DB).exists()


def open_analytics(settings: Settings, *, auto_refresh: bool = True, with_store: bool = True) -> Analytics:
    """The analyst API over the read models; with the store, queries catch up from it first."""
    store = open_store(settings) if with_store else None
    return Analytics(open_read_models(settings), store, auto_refresh=auto_refresh)
