"""bootstrap(): build the application from settings. The only place infrastructure is made."""

from __future__ import annotations

from lifecycle.application import LeadLedger
from lifecycle.privacy import Secrets
from lifecycle.recorders import LeadRecorder, SecureSQLiteDatastore, SQLiteLeadRecorder
from lifecycle.settings import Settings, SettingsError
from lifecycle.store import LeadStore

EVENTS_DB = "events.sqlite"


def make_recorder(settings: Settings) -> LeadRecorder:
    """SQLite under LEADLEDGER_HOME by default; PostgreSQL when a DSN is set."""
    if settings.postgres_dsn:
        from eventsourcing.postgres import PostgresDatastore
        from psycopg.conninfo import conninfo_to_dict

        from lifecycle.postgres import PostgresLeadRecorder

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


def bootstrap(settings: Settings | None = None) -> LeadLedger:
    settings = settings or Settings.from_env()
    secrets = Secrets.from_secret(settings.resolve_secret())
    store = LeadStore(make_recorder(settings), secrets)
    return LeadLedger(store, settings)
