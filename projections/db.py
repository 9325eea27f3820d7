"""Where read models live: SQLite `LEADLEDGER_HOME/readmodels.sqlite`, or PostgreSQL.

With `settings.postgres_dsn` the tables go to the store's database, in
`settings.postgres_schema`, all prefixed `rm_`. SQL is written once with `?`
placeholders and portable `INSERT .. ON CONFLICT` upserts; this module hides the
rest of the dialect (types, placeholders, qualified names, transactions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifecycle.settings import Settings
from projections.base import Table

READMODELS_DB = "readmodels.sqlite"
CACHE_KIB = -262144  # SQLite page cache: 256 MiB
BULK_CACHE_KIB = -2097152  # while a replay builds everything in one transaction: up to 2 GiB

_TYPES = {
    "sqlite": {"int": "INTEGER", "text": "TEXT", "real": "REAL", "blob": "BLOB"},
    "postgres": {"int": "BIGINT", "text": "TEXT", "real": "DOUBLE PRECISION", "blob": "BYTEA"},
}


class ReadModelDB:
    """One connection to the read-model database (not thread-safe; one per runner/service)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        if settings.postgres_dsn:
            import psycopg

            self.dialect = "postgres"
            self.schema = settings.postgres_schema
            self._pg = psycopg.connect(settings.postgres_dsn, autocommit=True)
            # two sessions creating one new schema at once: one fails on the catalog's unique index
            key = f"{self.schema}.leadledger_ddl"
            self._pg.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                self._pg.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        else:
            self.dialect = "sqlite"
            self.schema = ""
            settings.home.mkdir(parents=True, exist_ok=True)
            self.path: Path = settings.home / READMODELS_DB
            conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={CACHE_KIB}")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._sqlite = conn
        self._in_tx = False

    # ---- names and SQL -------------------------------------------------------

    def name(self, table: str) -> str:
        """The qualified table name for SQL text."""
        return f'"{self.schema}".{table}' if self.dialect == "postgres" else table

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == "postgres" else text

    def ddl(self, table: Table, temp: bool = False, indexes: bool = True) -> list[str]:
        types = _TYPES[self.dialect]
        cols = ", ".join(f"{name} {types[kind]}" for name, kind in table.columns)
        key = ", ".join(table.key)
        rowid_alias = self.dialect == "sqlite" and len(table.key) == 1 and dict(table.columns)[table.key[0]] == "int"
        if temp:
            return [f"CREATE TEMP TABLE {table.name} ({cols}, PRIMARY KEY ({key}))"]
        if rowid_alias:
            # an INTEGER PRIMARY KEY is SQLite's rowid: no second b-tree
            cols = cols.replace(f"{table.key[0]} INTEGER", f"{table.key[0]} INTEGER PRIMARY KEY", 1)
            stmts = [f"CREATE TABLE IF NOT EXISTS {self.name(table.name)} ({cols})"]
        else:
            suffix = " WITHOUT ROWID" if self.dialect == "sqlite" else ""
            stmts = [f"CREATE TABLE IF NOT EXISTS {self.name(table.name)} ({cols}, PRIMARY KEY ({key})){suffix}"]
        if indexes:
            stmts += self.index_ddl(table)
        return stmts

    def index_ddl(self, table: Table) -> list[str]:
        stmts = []
        for index in table.indexes:
            idx_name = f"{table.name}_{'_'.join(index)}"
            on = self.name(table.name)
            stmts.append(f"CREATE INDEX IF NOT EXISTS {idx_name} ON {on} ({', '.join(index)})")
        return stmts

    def load_sql(self, table: Table) -> str:
        """A plain INSERT of every column: rows of a table being built from zero (keys unique)."""
        cols = table.column_names
        return self.sql(f"INSERT INTO {self.name(table.name)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})")

    def insert_sql(self, table: Table, temp: bool = False) -> str:
        cols = table.column_names
        name = table.name if temp else self.name(table.name)
        text = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        if table.upsert:
            sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
            text += f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {sets}"
        return self.sql(text)

    # ---- execution -----------------------------------------------------------

    def execute(self, text: str, params: Sequence[Any] = ()) -> None:
        if self._sqlite is not None:
            self._sqlite.execute(text, params)
        else:
            self._pg.execute(self.sql(text), params)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """`text` already dialect-specific (see insert_sql) or with `?` placeholders."""
        if not rows:
            return
        if self._sqlite is not None:
            self._sqlite.executemany(text, rows)
        else:
            with self._pg.cursor() as cur:
                cur.executemany(self.sql(text), rows)

    def load(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Add rows to a table built from zero (inside a transaction): COPY on PostgreSQL."""
        if not rows:
            return
        if self._sqlite is not None:
            self._sqlite.executemany(self.load_sql(table), rows)
            return
        cols = ", ".join(table.column_names)
        with self._pg.cursor() as cur, cur.copy(f"COPY {self.name(table.name)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Settings for building the read models from zero in one transaction (SQLite: a page
        cache that holds the whole build, so pages are written once, at commit)."""
        if self._sqlite is None:
            yield
            return
        self._sqlite.execute(f"PRAGMA cache_size={BULK_CACHE_KIB}")
        try:
            yield
        finally:
            if self._sqlite is not None:
                self._sqlite.execute(f"PRAGMA cache_size={CACHE_KIB}")

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return self._sqlite.execute(text, params).fetchall()
        with self._pg.cursor() as cur:
            cur.execute(self.sql(text), params)
            return list(cur.fetchall())

    @contextmanager
    def transaction(self, lock_key: str | None = None) -> Iterator[None]:
        """One write transaction; concurrent writers (runners) queue on it."""
        with self._only_transaction():
            if self._sqlite is not None:
                self._sqlite.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._sqlite.execute("ROLLBACK")
                    raise
                self._sqlite.execute("COMMIT")
            else:
                with self._pg.transaction():
                    if lock_key is not None:
                        self._pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                         (f"{self.schema}.{lock_key}",))
                    yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read-only transaction: every query inside sees the same committed state, also
        while runners commit (SQLite WAL: the snapshot of the first read; PostgreSQL:
        REPEATABLE READ). Session-private temp tables may still be written."""
        with self._only_transaction():
            if self._sqlite is not None:
                self._sqlite.execute("BEGIN DEFERRED")
                try:
                    yield
                finally:
                    self._sqlite.execute("ROLLBACK")
            else:
                with self._pg.transaction(force_rollback=True):
                    self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield

    @contextmanager
    def _only_transaction(self) -> Iterator[None]:
        if self._in_tx:
            raise RuntimeError("nested read-model transaction")
        self._in_tx = True
        try:
            yield
        finally:
            self._in_tx = False

    # ---- schema --------------------------------------------------------------

    def create(self, tables: Sequence[Table], indexes: bool = True) -> None:
        """Create missing tables (and their secondary indexes unless `indexes` is False)."""
        for table in tables:
            for stmt in self.ddl(table, indexes=indexes):
                self.execute(stmt)

    def drop(self, tables: Sequence[Table]) -> None:
        for table in tables:
            self.execute(f"DROP TABLE IF EXISTS {self.name(table.name)}")

    def exists(self, table: str) -> bool:
        if self.dialect == "sqlite":
            return bool(self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)))
        return bool(self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (self.schema, table)))

    def dump(self, tables: Sequence[Table]) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, sorted (for comparisons in tests)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            rows = self.query(f"SELECT {', '.join(table.column_names)} FROM {self.name(table.name)}")
            out[table.name] = sorted(
                (tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows), key=repr)
        return out

    def create_temp(self, tables: Sequence[Table]) -> dict[str, str]:
        """Empty session-private copies of `tables`; returns name -> temp name."""
        names: dict[str, str] = {}
        for table in tables:
            temp = Table(f"tmp_{table.name}", table.columns, table.key)
            self.execute(f"DROP TABLE IF EXISTS {temp.name}")
            for stmt in self.ddl(temp, temp=True):
                self.execute(stmt)
            names[table.name] = temp.name
        return names

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None
