"""Read models in PostgreSQL: tables `rm_*` in one schema of the store's database, advisory
locks for DDL and runners, REPEATABLE READ snapshots, COPY for bulk loads."""

from __future__ import annotations

import re
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
    def transaction(self, lock_key: str | None = None) -> Iterator[None]:
        """Runners (and a Kafka source's checkpoint resets) queue on a transaction-scoped
        advisory lock of the schema."""
        with self._only_transaction(), self._pg.transaction():
            if lock_key is not None:
                self._pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.{lock_key}",))
            yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """REPEATABLE READ: every query sees the snapshot of the first."""
        with self._only_transaction(), self._pg.transaction(force_rollback=True):
            self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    # ---- schema --------------------------------------------------------------

    def exists(self, table: str) -> bool:
        return bool(self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (self.schema, table)))

    def close(self) -> None:
        self._pg.close()
