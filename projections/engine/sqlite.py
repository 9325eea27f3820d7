"""Read models in a SQLite file (`LEADLEDGER_HOME/readmodels.sqlite` by default): WAL, so
readers keep their snapshot while a runner commits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from projections.base import Table
from projections.engine.db import ReadModelDB

READMODELS_DB = "readmodels.sqlite"
CACHE_KIB = -262144  # SQLite page cache: 256 MiB
BULK_CACHE_KIB = -32768  # while a replay builds new tables chunk by chunk: 32 MiB


class SQLiteReadModelDB(ReadModelDB):
    """One connection to a read-model SQLite file (created, with its directory, if missing)."""

    types: ClassVar[dict[str, str]] = {"int": "INTEGER", "text": "TEXT", "real": "REAL", "blob": "BLOB"}

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=60, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size={CACHE_KIB}")
        conn.execute("PRAGMA temp_store=MEMORY")
        self._db = conn

    def _create_table(self, table: Table, cols: str) -> str:
        if len(table.key) == 1 and dict(table.columns)[table.key[0]] == "int":
            # an INTEGER PRIMARY KEY is SQLite's rowid: no second b-tree
            cols = cols.replace(f"{table.key[0]} INTEGER", f"{table.key[0]} INTEGER PRIMARY KEY", 1)
            return f"CREATE TABLE IF NOT EXISTS {table.name} ({cols})"
        return f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}, PRIMARY KEY ({', '.join(table.key)})) WITHOUT ROWID"

    # ---- execution -----------------------------------------------------------

    def execute(self, text: str, params: Sequence[Any] = ()) -> None:
        self._db.execute(text, params)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._db.executemany(text, rows)

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(text, params).fetchall()

    def load(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._db.executemany(self.load_sql(table), rows)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """A build committed chunk by chunk: a small page cache, and the sorts of index builds in
        temporary files (not in memory), so memory does not grow with the size of the build."""
        self._db.execute(f"PRAGMA cache_size={BULK_CACHE_KIB}")
        self._db.execute("PRAGMA temp_store=FILE")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA cache_size={CACHE_KIB}")
            self._db.execute("PRAGMA temp_store=MEMORY")

    @contextmanager
    def transaction(self, lock_key: str | None = None) -> Iterator[None]:
        """BEGIN IMMEDIATE: the database's one write lock is the runners' lock too."""
        with self._only_transaction():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """WAL: the snapshot of the first read."""
        with self._only_transaction():
            self._db.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                self._db.execute("ROLLBACK")

    # ---- schema --------------------------------------------------------------

    def exists(self, table: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)))

    def index_table(self, index: str) -> str | None:
        rows = self.query("SELECT tbl_name FROM sqlite_master WHERE type='index' AND name=?", (index,))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        self._db.close()  # closing twice is fine; any other use after it raises
