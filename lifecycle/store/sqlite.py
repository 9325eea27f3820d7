"""The library's recorders, extended with leadledger's side tables.

Besides the events, two small tables live in the store of record and are written
in the SAME transaction as the events they belong to:

* `leadledger_lead_keys`: each lead's wrapped data key (deleted on erasure);
* `leadledger_inbound`: the idempotency keys (source, id) of applied messages;
* `leadledger_heads`: each lead's last version and hash (verify's anchor against a
  stream whose latest events were removed or rewritten).

One more, written on its own: `leadledger_relay`, the notification id up to which the
outbox relay (consumers/relay.py) has published the log to Kafka, per relay name.

Everything here is SQL; nothing above this module knows the dialect. The PostgreSQL
recorder lives in lifecycle/store/postgres.py so the embedded CLI never imports psycopg.
A SQLite file's event log can also be read on a connection of its own (`LogFile`): by
a forked helper process, or by a long scan that must not hold one of the store's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

#: (source, message id, lead id, version the message produced)
InboundRow = tuple[str, str, UUID, int]
#: (lead id, last version, hash of the last event)
HeadRow = tuple[UUID, int, str]
#: (notification id, lead id, version, state)
RawRow = tuple[int, UUID, int, bytes]
#: (notification id, lead id as 32 lower-case hex digits, version, state): the log as projections read it
LogRow = tuple[int, str, int, bytes]
#: Lead ids (32 hex digits) from `lo` (inclusive) to `hi` (exclusive), None for no bound: a scan's share
LeadRange = tuple[str | None, str | None]
EVERY_LEAD: LeadRange = (None, None)


class LeadRecorder(Protocol):
    """What the lead store needs from a backend."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None: ...
    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]: ...
    def max_notification_id(self) -> int | None: ...
    def select_streams(self, lead_ids: Iterable[UUID]) -> dict[UUID, list[tuple[int, bytes]]]: ...
    def select_raw(self, after: int, limit: int) -> list[RawRow]: ...
    def select_log(self, after: int, limit: int) -> list[LogRow]: ...
    def log_file(self) -> LogFile | None: ...
    def wrapped_keys(self, lead_ids: Iterable[UUID]) -> dict[UUID, bytes]: ...
    def seen_messages(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def lead_ids(self) -> list[UUID]: ...
    def heads(self, lead_id: UUID | None = None) -> dict[UUID, tuple[int, str]]: ...
    def max_versions(self, lead_ids: Iterable[UUID]) -> dict[UUID, int]: ...
    def delete_keys(self, lead_ids: Sequence[UUID]) -> None: ...
    def scrub_after_erase(self) -> None: ...
    def relay_position(self, name: str) -> int: ...
    def set_relay_position(self, name: str, position: int) -> None: ...
    def close(self) -> None: ...


class ScrubIncomplete(Exception):
    """The erasure is committed but deleted bytes may still linger; the message says what to do."""


# ---------------------------------------------------------------- SQLite


class _SecureDeletePool(SQLiteConnectionPool):
    """Every connection zeroes deleted content (erased keys must not linger in free pages)."""

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        raw: sqlite3.Connection = conn._sqlite_conn
        raw.execute("PRAGMA secure_delete=ON")
        return conn


class SecureSQLiteDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, *, lock_timeout: int | None = None) -> None:
        super().__init__(db_name, lock_timeout=lock_timeout)
        self.pool = _SecureDeletePool(db_name=db_name, lock_timeout=lock_timeout)


def _chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _log_after(table: str) -> str:
    """The log after a notification id (the rowid), in notification order."""
    return (f"SELECT rowid, originator_id, originator_version, state FROM {table} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?")


@dataclass(frozen=True)
class LogFile:
    """A SQLite store's event log on disk: `open` reads it on a connection of its own (read-only),
    in this process or in any other (a forked child too)."""

    path: str
    table: str

    def open(self) -> LogReader:
        return LogReader(self)


class LogReader:
    """Reads of a `LogFile`, on one read-only connection; close it (or use `with`)."""

    def __init__(self, log_file: LogFile) -> None:
        self._table = log_file.table
        self._db = sqlite3.connect(f"file:{quote(log_file.path)}?mode=ro", uri=True, timeout=60)

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def after(self, after: int, limit: int) -> list[LogRow]:
        """Up to `limit` rows after notification id `after`."""
        return self._db.execute(_log_after(self._table), (after, limit)).fetchall()

    def scan(self, head: int, leads: LeadRange, batch: int) -> Iterator[list[LogRow]]:
        """Batches of the rows at or before `head` whose lead id is in `leads`, in notification order,
        in one read transaction."""
        # in rowid order, the table's own order: one sequential pass ("+" keeps SQLite off the
        # lead-id index, whose order would fetch the rows all over the file)
        conds: list[str] = ["rowid <= ?"]
        params: list[Any] = [head]
        lo, hi = leads
        if lo is not None:
            conds.append("+originator_id >= ?")
            params.append(lo)
        if hi is not None:
            conds.append("+originator_id < ?")
            params.append(hi)
        cursor = self._db.execute(f"SELECT rowid, originator_id, originator_version, state FROM {self._table} "
                                  f"WHERE {' AND '.join(conds)} ORDER BY rowid", params)
        while rows := cursor.fetchmany(batch):
            yield rows

    def lead_bounds(self, head: int, parts: int) -> list[str]:
        """Lead ids that cut the rows at or before `head` into `parts` ranges of about as many rows
        each (fewer bounds where many rows share a lead)."""
        bounds: list[str] = []
        for k in range(1, parts):
            # quantiles of the events by lead id, read off the primary key index
            row = self._db.execute(f"SELECT originator_id FROM {self._table} WHERE +rowid <= ? "
                                   "ORDER BY originator_id LIMIT 1 OFFSET ?", (head, head * k // parts)).fetchone()
            if row is not None and (not bounds or row[0] > bounds[-1]):
                bounds.append(row[0])
        return bounds


class SQLiteLeadRecorder(SQLiteApplicationRecorder):
    """Embedded store of record: one SQLite file (WAL, secure_delete)."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS leadledger_lead_keys ("
            "lead_id TEXT PRIMARY KEY, wrapped_key BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leadledger_inbound ("
            "source TEXT NOT NULL, message_id TEXT NOT NULL, lead_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, PRIMARY KEY (source, message_id)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS leadledger_heads ("
            "lead_id TEXT PRIMARY KEY, version INTEGER NOT NULL, hash TEXT NOT NULL) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS leadledger_relay (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        lead_keys: Sequence[tuple[UUID, bytes]] = kwargs.get("lead_keys", ())
        inbound: Sequence[InboundRow] = kwargs.get("inbound", ())
        erase: Sequence[UUID] = kwargs.get("erase", ())
        heads: Sequence[HeadRow] = kwargs.get("heads", ())
        if heads:
            c.executemany(
                "INSERT INTO leadledger_heads VALUES (?, ?, ?) ON CONFLICT (lead_id) "
                "DO UPDATE SET version = excluded.version, hash = excluded.hash",
                [(lead.hex, v, h) for lead, v, h in heads],
            )
        if lead_keys:
            c.executemany(
                "INSERT INTO leadledger_lead_keys VALUES (?, ?)",
                [(lead.hex, key) for lead, key in lead_keys],
            )
        if inbound:
            c.executemany(
                "INSERT INTO leadledger_inbound VALUES (?, ?, ?, ?)",
                [(s, m, lead.hex, v) for s, m, lead, v in inbound],
            )
        if erase:
            c.executemany(
                "DELETE FROM leadledger_lead_keys WHERE lead_id = ?", [(lead.hex,) for lead in erase]
            )
        return super()._insert_events(c, stored_events)

    def select_log(self, after: int, limit: int) -> list[LogRow]:
        # SQLite keeps lead ids as hex text: the lean read builds no UUID objects
        with self.datastore.transaction(commit=False) as c:
            c.execute(_log_after(self.events_table_name), (after, limit))
            return c.fetchall()  # type: ignore[no-any-return]

    def select_raw(self, after: int, limit: int) -> list[RawRow]:
        return [(r[0], UUID(r[1]), r[2], r[3]) for r in self.select_log(after, limit)]

    def log_file(self) -> LogFile | None:
        """The store's file, or None when it lives in memory (no other connection sees it)."""
        name = self.datastore.pool.db_name
        if ":memory:" in name or "mode=memory" in name:
            return None
        return LogFile(name, self.events_table_name)

    def select_streams(self, lead_ids: Iterable[UUID]) -> dict[UUID, list[tuple[int, bytes]]]:
        """Every event (version, state) of many leads in one round trip per 500 ids."""
        streams: dict[UUID, list[tuple[int, bytes]]] = {}
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(lead_ids)):
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"SELECT originator_id, originator_version, state FROM {self.events_table_name} "
                    f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
                    [lead.hex for lead in chunk],
                )
                for lead_hex, version, state in c.fetchall():
                    streams.setdefault(UUID(lead_hex), []).append((version, state))
        return streams

    def wrapped_keys(self, lead_ids: Iterable[UUID]) -> dict[UUID, bytes]:
        found: dict[UUID, bytes] = {}
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(lead_ids)):
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"SELECT lead_id, wrapped_key FROM leadledger_lead_keys WHERE lead_id IN ({marks})",
                    [lead.hex for lead in chunk],
                )
                found.update({UUID(r[0]): bytes(r[1]) for r in c.fetchall()})
        return found

    def seen_messages(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        with self.datastore.transaction(commit=False) as c:
            for source, message_id in keys:
                c.execute(
                    "SELECT 1 FROM leadledger_inbound WHERE source = ? AND message_id = ?",
                    (source, message_id),
                )
                if c.fetchone() is not None:
                    seen.add((source, message_id))
        return seen

    def lead_ids(self) -> list[UUID]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT DISTINCT originator_id FROM {self.events_table_name}")
            return [UUID(r[0]) for r in c.fetchall()]

    def heads(self, lead_id: UUID | None = None) -> dict[UUID, tuple[int, str]]:
        """Each lead's recorded last (version, hash)."""
        sql = "SELECT lead_id, version, hash FROM leadledger_heads"
        params: tuple[str, ...] = ()
        if lead_id is not None:
            sql, params = sql + " WHERE lead_id = ?", (lead_id.hex,)
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return {UUID(r[0]): (r[1], r[2]) for r in c.fetchall()}

    def max_versions(self, lead_ids: Iterable[UUID]) -> dict[UUID, int]:
        found: dict[UUID, int] = {}
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(lead_ids)):
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"SELECT originator_id, MAX(originator_version) FROM {self.events_table_name} "
                    f"WHERE originator_id IN ({marks}) GROUP BY originator_id",
                    [lead.hex for lead in chunk],
                )
                found.update({UUID(r[0]): r[1] for r in c.fetchall()})
        return found

    def delete_keys(self, lead_ids: Sequence[UUID]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                "DELETE FROM leadledger_lead_keys WHERE lead_id = ?", [(lead.hex,) for lead in lead_ids]
            )

    def scrub_after_erase(self) -> None:
        """Deleted keys were zeroed in place (secure_delete); now empty the WAL too."""
        with self.datastore.get_connection(commit=True) as conn:
            raw: sqlite3.Connection = conn._sqlite_conn
            busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise ScrubIncomplete(
                    "the SQLite WAL could not be checkpointed because another process is reading "
                    "the store, so the erased key may still sit in the -wal file until the next "
                    "checkpoint; stop other leadledger processes and run 'leadledger erase' again "
                    "(erasing an erased lead only repeats this scrub)"
                )

    def relay_position(self, name: str) -> int:
        """The notification id the relay `name` has published up to (0: nothing yet)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT position FROM leadledger_relay WHERE name = ?", (name,))
            row = c.fetchone()
            return int(row[0]) if row is not None else 0

    def set_relay_position(self, name: str, position: int) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT INTO leadledger_relay VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (name, position),
            )

    def close(self) -> None:
        self.datastore.close()
