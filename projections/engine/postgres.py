"""Read models in PostgreSQL: tables `rm_*` in one schema of the store's database, advisory
locks for DDL and runners, REPEATABLE READ snapshots, COPY for bulk loads."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, ClassVar

import psycopg

from projections.base import Table
from projections.engine.db import ReadModelDB

#: what `to_pyformat` looks at: quoted literals, quoted names and line comments (kept, `%` doubled),
#: `?` placeholders and bare `%`
_TOKENS = re.compile(r"'[^']*'|\"[^\"]*\"|--[^\n]*|[?%]")
#: work_mem and maintenance_work_mem of a replay's session (`bulk_load`)
BULK_WORK_MEM = "256MB"
#: PostgreSQL keeps the first 63 bytes of a longer name
NAME_BYTES = 63
#: a swap's tries at locking its tables without waiting (then it waits), and the pause between
SWAP_TRIES, SWAP_PAUSE = 250, 0.02


@lru_cache(maxsize=4096)
def to_pyformat(text: str) -> str:
    """`?` placeholders to psycopg's `%s`, except inside quotes and comments; every `%` doubled,
    since psycopg reads the whole statement (literals included) for placeholders. Statements
    repeat (the runner's upserts, the queries' SQL), so each is translated once."""
    return _TOKENS.sub(_swap, text)


def _swap(match: re.Match[str]) -> str:
    token = match.group(0)
    return "%s" if token == "?" else token.replace("%", "%%")


class PostgresReadModelDB(ReadModelDB):
    """One autocommit session on the database of `dsn`; the tables live in `schema` (created if
    missing)."""

    types: ClassVar[dict[str, str]] = {"int": "BIGINT", "text": "TEXT", "real": "DOUBLE PRECISION", "blob": "BYTEA"}
    correlated_offset: ClassVar[bool] = True

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__()
        self.schema = schema
        self._prefix = f'"{schema}".'
        self._pg = psycopg.connect(dsn, autocommit=True)
        # two sessions creating one new schema at once: one fails on the catalog's unique index
        key = f"{schema}.leadledger_ddl"
        self._pg.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        finally:
            self._pg.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def name(self, table: str) -> str:
        return self._prefix + table

    def _create_table(self, table: Table, cols: str) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.name(table.name)} ({cols}, PRIMARY KEY ({', '.join(table.key)}))"

    # ---- execution -----------------------------------------------------------

    def execute(self, text: str, params: Sequence[Any] = ()) -> None:
        self._pg.execute(to_pyformat(text), params)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._pg.cursor() as cur:
                cur.executemany(to_pyformat(text), rows)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pg.cursor() as cur:
            cur.execute(to_pyformat(text), params)
            return list(cur.fetchall())

    def query_in(self, select: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One statement, the values as one array parameter."""
        return self.query(f"{select} WHERE {column} = ANY(?)", (list(values),))

    def load(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """COPY: the fastest way in for a table built from zero."""
        if not rows:
            return
        cols = ", ".join(table.column_names)
        with self._pg.cursor() as cur, cur.copy(f"COPY {self.name(table.name)} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """A build committed chunk by chunk: more memory per sort and hash (the GROUP BYs that build the
        counts from the loaded rows; at the default 4 MB they spill to disk and took 4 of a 200k-event
        replay's 10 s) and per index build; each is a bound per operation, not a cache that grows."""
        self._pg.execute(f"SET work_mem = '{BULK_WORK_MEM}'")
        self._pg.execute(f"SET maintenance_work_mem = '{BULK_WORK_MEM}'")
        try:
            yield
        finally:
            self._pg.execute("RESET work_mem")
            self._pg.execute("RESET maintenance_work_mem")

    def settle(self, tables: Sequence[str]) -> None:
        """VACUUM (ANALYZE) each table: tables fresh from COPY have no statistics (the planner
        guesses) and an empty visibility map, so an index-only scan still visits every row's heap
        page; at 1M events that made the funnel 3x and velocity 3.5x slower."""
        for table in tables:
            self._pg.execute(f"VACUUM (ANALYZE) {self.name(table)}")

    @contextmanager
    def transaction(self, lock_key: str | None = None) -> Iterator[None]:
        """Runners (and a Kafka source's checkpoint resets) queue on a transaction-scoped
        advisory lock of the schema."""
        with self._only_transaction(), self._pg.transaction():
            if lock_key is not None:
                self._pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.{lock_key}",))
            yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """REPEATABLE READ: every query sees the snapshot of the first. It holds the readers'
        lock (shared), so a replay's swap of the tables waits for it to end (`lock_for_swap`)."""
        with self._only_transaction(), self._pg.transaction(force_rollback=True):
            self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self._pg.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (f"{self.schema}.readers",))
            yield

    def lock_for_swap(self, tables: Sequence[str]) -> None:
        """The readers' lock (exclusive: open snapshots end first), then every table at once,
        tried without waiting while a query holds one (a query reading them in another order
        would otherwise deadlock with the swap), then waiting."""
        self._pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.readers",))
        lock = f"LOCK TABLE {', '.join(self.name(t) for t in tables)} IN ACCESS EXCLUSIVE MODE"
        for _ in range(SWAP_TRIES):
            try:
                with self._pg.transaction():  # a savepoint: a failed try leaves the transaction usable
                    self._pg.execute(lock + " NOWAIT")
                return
            except psycopg.errors.LockNotAvailable:
                time.sleep(SWAP_PAUSE)
        self._pg.execute(lock)

    # ---- schema --------------------------------------------------------------

    def exists(self, table: str) -> bool:
        return bool(self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (self.schema, table)))

    def index_table(self, index: str) -> str | None:
        rows = self.query("SELECT tablename FROM pg_indexes WHERE schemaname = ? AND indexname = ?",
                          (self.schema, index.encode()[:NAME_BYTES].decode()))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        self._pg.close()
