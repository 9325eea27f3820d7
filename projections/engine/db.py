"""The read-model database: what every dialect offers (`SQLiteReadModelDB` in sqlite.py,
`PostgresReadModelDB` in postgres.py), and the SQL text they share."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from projections.base import Table

#: SQLite's limit on bound parameters was 999 before 3.32: lists of values go in slices of this many
IN_SLICE = 500


def index_names(table_name: str, index: Sequence[str]) -> tuple[str, str]:
    """The two names an index of a table may have: the table and its columns, or a short name
    derived from that one. A table built beside the one it replaces (a replay) gets whichever
    name the old table's index leaves free, and keeps it once renamed into its place."""
    name = f"{table_name}_{'_'.join(index)}"
    return name, f"{name[:40]}_{hashlib.sha1(name.encode()).hexdigest()[:12]}"


class ReadModelDB(ABC):
    """One connection to the read-model database (not thread-safe; one per runner/service).

    Callers write SQL once with `?` placeholders and portable `INSERT .. ON CONFLICT` upserts;
    a subclass hides the rest of its dialect (types, placeholders, qualified names,
    transactions, bulk loads)."""

    #: column type names by `Table` kind (int, text, real, blob)
    types: ClassVar[dict[str, str]]
    #: whether a correlated subquery's LIMIT / OFFSET may name the outer query's columns (SQLite: no)
    correlated_offset: ClassVar[bool] = False

    def __init__(self) -> None:
        self._in_tx = False

    # ---- names and SQL -------------------------------------------------------

    def name(self, table: str) -> str:
        """The qualified table name for SQL text."""
        return table

    def ddl(self, table: Table, temp: bool = False, indexes: bool = True) -> list[str]:
        cols = ", ".join(f"{name} {self.types[kind]}" for name, kind in table.columns)
        if temp:
            return [f"CREATE TEMP TABLE {table.name} ({cols}, PRIMARY KEY ({', '.join(table.key)}))"]
        stmts = [self._create_table(table, cols)]
        if indexes:
            stmts += self.index_ddl(table)
        return stmts

    @abstractmethod
    def _create_table(self, table: Table, cols: str) -> str:
        """CREATE TABLE IF NOT EXISTS with the primary key, from the column definitions `cols`."""

    def index_ddl(self, table: Table, on: str | None = None) -> list[str]:
        """CREATE INDEX of each secondary index of `table` that the table named `on` (default
        the table's own name; a copy built to replace it) lacks, under the first of its two
        `index_names` free."""
        target = on or table.name
        stmts = []
        for index in table.indexes:
            names = index_names(table.name, index)
            owners = [self.index_table(name) for name in names]
            if target in owners:
                continue
            idx_name = names[0] if owners[0] is None else names[1]
            stmts.append(f"CREATE INDEX IF NOT EXISTS {idx_name} ON {self.name(target)} ({', '.join(index)})")
        return stmts

    @abstractmethod
    def index_table(self, index: str) -> str | None:
        """The name of the table the index `index` is on; None when there is no such index."""

    def load_sql(self, table: Table) -> str:
        """A plain INSERT of every column: rows of a table being built from zero (keys unique)."""
        cols = table.column_names
        return f"INSERT INTO {self.name(table.name)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    def insert_sql(self, table: Table, temp: bool = False) -> str:
        cols = table.column_names
        name = table.name if temp else self.name(table.name)
        text = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        if table.summed:
            n = cols[-1]
            text = text.replace(f"INSERT INTO {name} ", f"INSERT INTO {name} AS t ", 1)
            return text + f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {n} = t.{n} + excluded.{n}"
        if table.upsert:
            sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in table.key)
            text += f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {sets}"
        return text

    def zero_sql(self, table: Table) -> str:
        """Delete the row of one key of a summed table if its number came to 0."""
        where = " AND ".join(f"{c} = ?" for c in table.key)
        return f"DELETE FROM {self.name(table.name)} WHERE {where} AND {table.column_names[-1]} = 0"

    # ---- execution -----------------------------------------------------------

    @abstractmethod
    def execute(self, text: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def query_in(self, select: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """`select` (no WHERE) for the rows whose `column` is one of `values`."""
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(values), IN_SLICE):
            part = values[i:i + IN_SLICE]
            rows += self.query(f"{select} WHERE {column} IN ({','.join('?' * len(part))})", part)
        return rows

    @abstractmethod
    def load(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Add rows to a table built from zero (inside a transaction)."""

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Settings for building the read models from zero in one transaction (none by default)."""
        yield

    def settle(self, tables: Sequence[str]) -> None:
        """After tables were built from zero, outside any transaction: whatever the database needs
        to plan and run queries on them well (nothing by default)."""
        return None

    @abstractmethod
    def transaction(self, lock_key: str | None = None) -> AbstractContextManager[None]:
        """One write transaction; concurrent writers (runners) queue on it, and on `lock_key`."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[None]:
        """One read-only transaction: every query inside sees the same committed state, also
        while runners commit. Session-private temp tables may still be written."""

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

    @abstractmethod
    def exists(self, table: str) -> bool: ...

    def rename(self, table: str, new_name: str) -> None:
        """Rename a table (its indexes keep their names), inside the caller's transaction."""
        self.execute(f"ALTER TABLE {self.name(table)} RENAME TO {new_name}")

    def lock_for_swap(self, tables: Sequence[str]) -> None:
        """Inside a write transaction that renames `tables` (all existing): wait until no read
        snapshot is open and keep new ones waiting until it commits, then lock the tables. By
        default nothing: a SQLite write transaction locks the whole file, and readers keep the
        snapshot they started with."""
        return None

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

    @abstractmethod
    def close(self) -> None: ...
