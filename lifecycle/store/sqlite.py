"""The library's recorders, extended with leadledger's side tables.

Besides the events, small tables live in the store of record and are written in the
SAME transaction as the events they belong to:

* `leadledger_lead_keys`: each lead's wrapped data key (deleted on erasure);
* `leadledger_inbound`: every inbound message's idempotency key (source, id) with its
  outcome (applied: the lead and version it produced; refused: the reason) and the digest
  of its content, so a redelivery is a duplicate whatever its first outcome was and a key
  reused with other content is told apart;
* `leadledger_email_index`: the HMAC of each lead's normalized e-mail -> its (random) lead
  id; the primary key makes two captures of one new e-mail a conflict (one lead wins), and
  erasure deletes the row;
* `leadledger_heads`: each lead's last version and hash (verify's anchor against a
  stream whose latest events were removed or rewritten).

* `leadledger_operator`: the operator's position (its state as JSON) per operator name, with a
  sequence number each commit of its decisions increments from the value it read (compare and set):
  a second operator that read the same position fails its whole transaction (conflict detection).

The policy stream, `leadledger_policy`: each published policy version's envelope (canonical JSON,
hash-chained to the previous version), with the log position it follows.

Two more, written on their own: `leadledger_relay`, the notification id up to which the
outbox relay (consumers/relay.py) has published the log to Kafka, per relay name; and
`leadledger_meta`, the store's identity (the fingerprint of its secret, how its lead ids
were made), recorded once when the store is first opened by this version.

Everything here is SQL; nothing above this module knows the dialect. The PostgreSQL
recorder lives in lifecycle/store/postgres.py so the embedded CLI never imports psycopg.
A SQLite file's event log can also be read on a connection of its own (`LogFile`): by
a forked helper process, or by a long scan that must not hold one of the store's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

#: An inbound message's record: (source, message id, outcome "applied" | "refused", digest of its
#: content (None: recorded before digests were), the refusal's reason, the lead id and version
#: it produced (an applied one; a refused one names the lead when it was known, version None))
InboundRow = tuple[str, str, str, str | None, str | None, UUID | None, int | None]
#: What a message's record says: (outcome, digest, reason, lead id, version)
MessageOutcome = tuple[str, str | None, str | None, UUID | None, int | None]
#: An applied message's record as verify reads it: (source, message id, lead id, version)
AppliedRow = tuple[str, str, UUID, int]
#: (HMAC of the normalized e-mail, lead id): a row of the e-mail index
EmailRow = tuple[str, UUID]
APPLIED, REFUSED = "applied", "refused"
#: leadledger_meta names
FINGERPRINT, LEAD_IDS = "secret_fingerprint", "lead_ids"
#: (lead id, last version, hash of the last event)
HeadRow = tuple[UUID, int, str]
#: (operator name, sequence number, state as JSON): the operator's position, written with its decisions
OperatorRow = tuple[str, int, str]
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
    def select_firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]: ...
    def select_leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]: ...
    def count_log(self, head: int) -> tuple[int, int]: ...
    def prepare_lead_reads(self) -> None: ...
    def log_file(self) -> LogFile | None: ...
    def lead_log(self) -> LeadLog | None: ...
    def wrapped_keys(self, lead_ids: Iterable[UUID]) -> dict[UUID, bytes]: ...
    def seen_messages(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def message_outcomes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MessageOutcome]: ...
    def applied_messages(self, lead_id: UUID | None = None) -> list[AppliedRow]: ...
    def lookup_emails(self, keys: Iterable[str]) -> dict[str, UUID]: ...
    def read_meta(self) -> dict[str, str]: ...
    def claim_meta(self, values: dict[str, str]) -> dict[str, str]: ...
    def has_events(self) -> bool: ...
    def any_wrapped_key(self) -> tuple[UUID, bytes] | None: ...
    def create_table(self) -> None: ...
    def lead_ids(self) -> list[UUID]: ...
    def heads(self, lead_id: UUID | None = None) -> dict[UUID, tuple[int, str]]: ...
    def max_versions(self, lead_ids: Iterable[UUID]) -> dict[UUID, int]: ...
    def delete_keys(self, lead_ids: Sequence[UUID]) -> None: ...
    def scrub_after_erase(self) -> None: ...
    def relay_position(self, name: str) -> int: ...
    def set_relay_position(self, name: str, position: int) -> None: ...
    def operator_state(self, name: str) -> tuple[int, str] | None: ...
    def policy_bodies(self) -> list[bytes]: ...
    def insert_policy(self, version: int, body: Callable[[int], bytes]) -> bytes: ...
    def close(self) -> None: ...


class ScrubIncomplete(Exception):
    """The erasure is committed but deleted bytes may still linger; the message says what to do."""


# ---------------------------------------------------------------- SQLite


#: seconds a connection to a locked file is tried for when no lock timeout is set
OPEN_TIMEOUT = 30
#: WAL pages between automatic checkpoints (SQLite's default: 1,000): the index pages a stream of
#: batches keeps dirtying (a batch's writes land all over the lead-id indexes) are copied into the
#: file once per checkpoint, so fewer checkpoints copy fewer pages. Ingest of 1.13 M simulated
#: messages, one run each: 4,409 -> 4,598 events/s (a 128 MiB page cache beside it: 4,782, but it
#: fills in every process that reads the log, a replay's too: not kept).
STORE_CHECKPOINT_PAGES = 10_000


class _SecureDeletePool(SQLiteConnectionPool):
    """Every connection zeroes deleted content (erased keys must not linger in free pages)."""

    def _create_connection(self) -> SQLiteConnection:
        conn = self._connect_while_locked()
        raw: sqlite3.Connection = conn._sqlite_conn
        raw.execute("PRAGMA secure_delete=ON")
        raw.execute(f"PRAGMA wal_autocheckpoint={STORE_CHECKPOINT_PAGES}")
        return conn


    def _connect_while_locked(self) -> SQLiteConnection:
        """The library's connection, tried again while the file is locked: a new store's first
        connections all switch it to WAL, and SQLite may refuse that switch with "database is
        locked" while another connection makes it (seen with eight threads opening a new store on a
        loaded machine); the next try finds WAL set."""
        deadline = time.monotonic() + (self.lock_timeout or OPEN_TIMEOUT)
        while True:
            try:
                return super()._create_connection()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


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


def _firsts(table: str) -> str:
    """The first events of leads (version 1) after a notification id, up to a head, in notification order."""
    return (f"SELECT rowid, originator_id FROM {table} WHERE rowid > ? AND rowid <= ? AND originator_version = 1 "
            "ORDER BY rowid LIMIT ?")


def _leads_log(table: str, leads: int) -> str:
    """Every row of `leads` lead ids up to a head (read through the lead-id index)."""
    return (f"SELECT rowid, originator_id, originator_version, state FROM {table} "
            f"WHERE originator_id IN ({','.join('?' * leads)}) AND +rowid <= ?")


def _count_log(table: str) -> str:
    """How many rows, and how many first events (version 1), up to a head."""
    return f"SELECT COUNT(*), COALESCE(SUM(originator_version = 1), 0) FROM {table} WHERE rowid <= ?"


def select_leads_log(execute: Callable[[str, Sequence[Any]], Any], table: str, lead_ids: Sequence[str],
                     head: int) -> list[LogRow]:
    """The rows of `lead_ids` at or before `head`, in notification order, 500 ids per statement."""
    rows: list[LogRow] = []
    for part in _chunks(list(lead_ids)):
        rows += execute(_leads_log(table, len(part)), [*part, head]).fetchall()
    rows.sort()
    return rows


class LeadLogReader(Protocol):
    """Reads of whole leads on a connection of its own (a replay's worker); close it (or use `with`)."""

    def __enter__(self) -> LeadLogReader: ...
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...
    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]: ...
    def leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]: ...


class LeadLog(Protocol):
    """A store's log that any process (a forked one too) may read whole leads of."""

    def open(self) -> LeadLogReader: ...


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

    def states_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """`after` without the lead and version: (notification id, stored state) of up to `limit` rows."""
        return self._db.execute(f"SELECT rowid, state FROM {self._table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                (after, limit)).fetchall()

    def rows_at(self, ids: Sequence[int]) -> list[LogRow]:
        """The rows of these notification ids, in notification order."""
        found: list[LogRow] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found += self._db.execute(f"SELECT rowid, originator_id, originator_version, state FROM {self._table} "
                                      f"WHERE rowid IN ({marks}) ORDER BY rowid", chunk).fetchall()
        return sorted(found)

    def streams(self, lead_ids: Sequence[str]) -> dict[str, list[tuple[int, bytes]]]:
        """Every event (version, state) of these leads (32 hex digits), in version order; a lead's
        events in one read."""
        found: dict[str, list[tuple[int, bytes]]] = {}
        for chunk in _chunks(list(lead_ids)):
            marks = ",".join("?" * len(chunk))
            for lead, version, state in self._db.execute(
                    f"SELECT originator_id, originator_version, state FROM {self._table} "
                    f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version", chunk):
                found.setdefault(lead, []).append((version, state))
        return found

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

    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (notification id, lead id) of leads' first events after `after`, up to `head`."""
        return self._db.execute(_firsts(self._table), (after, head, limit)).fetchall()

    def leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        """Every row of `lead_ids` at or before `head`, in notification order."""
        return select_leads_log(self._db.execute, self._table, lead_ids, head)


_INBOUND_DDL = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    "source TEXT NOT NULL, message_id TEXT NOT NULL, outcome TEXT NOT NULL, digest TEXT, reason TEXT, "
    "lead_id TEXT, version INTEGER, PRIMARY KEY (source, message_id)) WITHOUT ROWID"
)
_INBOUND_INSERT = ("INSERT INTO leadledger_inbound (source, message_id, outcome, digest, reason, lead_id, version) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)")


class SQLiteLeadRecorder(SQLiteApplicationRecorder):
    """Embedded store of record: one SQLite file (WAL, secure_delete)."""

    def create_table(self) -> None:
        super().create_table()
        self._migrate_inbound()

    def _migrate_inbound(self) -> None:
        """Stores of old kept only applied messages (lead id and version NOT NULL, no outcome):
        rebuild that table in the current shape once, every row kept as applied, in one
        IMMEDIATE transaction (a second process opening the store meanwhile waits, then sees
        the new shape and does nothing)."""
        with self.datastore.get_connection(commit=True) as conn:
            raw: sqlite3.Connection = conn._sqlite_conn
            if self._inbound_is_current(raw):
                return
            raw.execute("BEGIN IMMEDIATE")
            try:
                if not self._inbound_is_current(raw):
                    raw.execute(_INBOUND_DDL.format(table="leadledger_inbound_v2"))
                    raw.execute("INSERT INTO leadledger_inbound_v2 (source, message_id, outcome, lead_id, version) "
                                f"SELECT source, message_id, '{APPLIED}', lead_id, version FROM leadledger_inbound")
                    raw.execute("DROP TABLE leadledger_inbound")
                    raw.execute("ALTER TABLE leadledger_inbound_v2 RENAME TO leadledger_inbound")
                raw.execute("COMMIT")
            except BaseException:
                raw.execute("ROLLBACK")
                raise

    @staticmethod
    def _inbound_is_current(raw: sqlite3.Connection) -> bool:
        return "outcome" in {row[1] for row in raw.execute("PRAGMA table_info(leadledger_inbound)")}

    def _has_table(self, c: SQLiteCursor, name: str) -> bool:
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return c.fetchone() is not None

    def read_meta(self) -> dict[str, str]:
        """The store's identity rows ({} for a store this version never opened, or no store yet)."""
        with self.datastore.transaction(commit=False) as c:
            if not self._has_table(c, "leadledger_meta"):
                return {}
            c.execute("SELECT name, value FROM leadledger_meta")
            return {r[0]: r[1] for r in c.fetchall()}

    def claim_meta(self, values: dict[str, str]) -> dict[str, str]:
        """Record each value unless one is recorded already; returns what is recorded."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany("INSERT INTO leadledger_meta VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                          list(values.items()))
            c.execute("SELECT name, value FROM leadledger_meta")
            return {r[0]: r[1] for r in c.fetchall()}

    def has_events(self) -> bool:
        with self.datastore.transaction(commit=False) as c:
            if not self._has_table(c, self.events_table_name):
                return False
            c.execute(f"SELECT 1 FROM {self.events_table_name} LIMIT 1")
            return c.fetchone() is not None

    def any_wrapped_key(self) -> tuple[UUID, bytes] | None:
        """One lead's wrapped data key (to check a secret against a store that has no fingerprint)."""
        with self.datastore.transaction(commit=False) as c:
            if not self._has_table(c, "leadledger_lead_keys"):
                return None
            c.execute("SELECT lead_id, wrapped_key FROM leadledger_lead_keys LIMIT 1")
            row = c.fetchone()
            return None if row is None else (UUID(row[0]), bytes(row[1]))

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS leadledger_lead_keys ("
            "lead_id TEXT PRIMARY KEY, wrapped_key BLOB NOT NULL)",
            _INBOUND_DDL.format(table="leadledger_inbound"),
            "CREATE TABLE IF NOT EXISTS leadledger_email_index ("
            "email_hmac TEXT PRIMARY KEY, lead_id TEXT NOT NULL) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS leadledger_email_index_lead ON leadledger_email_index (lead_id)",
            "CREATE TABLE IF NOT EXISTS leadledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leadledger_heads ("
            "lead_id TEXT PRIMARY KEY, version INTEGER NOT NULL, hash TEXT NOT NULL) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS leadledger_relay (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leadledger_operator (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
            "state TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leadledger_policy (version INTEGER PRIMARY KEY, body BLOB NOT NULL)",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        lead_keys: Sequence[tuple[UUID, bytes]] = kwargs.get("lead_keys", ())
        inbound: Sequence[InboundRow] = kwargs.get("inbound", ())
        erase: Sequence[UUID] = kwargs.get("erase", ())
        heads: Sequence[HeadRow] = kwargs.get("heads", ())
        emails: Sequence[EmailRow] = kwargs.get("emails", ())
        unindex: Sequence[EmailRow] = kwargs.get("unindex", ())
        operator: OperatorRow | None = kwargs.get("operator")
        if operator is not None:  # compare and set: another operator past this position fails it all
            name, seq, state = operator
            if seq == 1:
                c.execute("INSERT INTO leadledger_operator VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                          (name, seq, state))
            else:
                c.execute("UPDATE leadledger_operator SET seq = ?, state = ? WHERE name = ? AND seq = ?",
                          (seq, state, name, seq - 1))
            if c.sqlite_cursor.rowcount != 1:
                raise IntegrityError(f"operator {name!r} is no longer at sequence {seq - 1}: another stored first")
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
                _INBOUND_INSERT,
                [(s, m, o, d, r, lead.hex if lead else None, v) for s, m, o, d, r, lead, v in inbound],
            )
        if erase:
            c.executemany(
                "DELETE FROM leadledger_lead_keys WHERE lead_id = ?", [(lead.hex,) for lead in erase]
            )
            c.executemany(
                "DELETE FROM leadledger_email_index WHERE lead_id = ?", [(lead.hex,) for lead in erase]
            )
        if unindex:  # rows naming an erased lead (deleted before the new rows of their e-mails)
            c.executemany("DELETE FROM leadledger_email_index WHERE email_hmac = ? AND lead_id = ?",
                          [(key, lead.hex) for key, lead in unindex])
        if emails:  # a plain INSERT: a second lead for one e-mail fails the whole transaction
            c.executemany("INSERT INTO leadledger_email_index VALUES (?, ?)",
                          [(key, lead.hex) for key, lead in emails])
        # the events in one executemany (the application recorder's own runs a statement per event to
        # return their notification ids, which no caller reads)
        return SQLiteAggregateRecorder._insert_events(self, c, stored_events)

    def select_log(self, after: int, limit: int) -> list[LogRow]:
        # SQLite keeps lead ids as hex text: the lean read builds no UUID objects
        with self.datastore.transaction(commit=False) as c:
            c.execute(_log_after(self.events_table_name), (after, limit))
            return c.fetchall()  # type: ignore[no-any-return]

    def select_raw(self, after: int, limit: int) -> list[RawRow]:
        return [(r[0], UUID(r[1]), r[2], r[3]) for r in self.select_log(after, limit)]

    def select_firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_firsts(self.events_table_name), (after, head, limit))
            return c.fetchall()  # type: ignore[no-any-return]

    def select_leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        with self.datastore.transaction(commit=False) as c:
            def execute(text: str, params: Sequence[Any]) -> Any:
                c.execute(text, params)
                return c

            return select_leads_log(execute, self.events_table_name, lead_ids, head)

    def prepare_lead_reads(self) -> None:
        """Nothing to do: SQLite reads a lead's rows through its index whatever it knows of the table."""

    def count_log(self, head: int) -> tuple[int, int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(_count_log(self.events_table_name), (head,))
            events, leads = c.fetchone()
            return int(events), int(leads)

    def log_file(self) -> LogFile | None:
        """The store's file, or None when it lives in memory (no other connection sees it)."""
        name = self.datastore.pool.db_name
        if ":memory:" in name or "mode=memory" in name:
            return None
        return LogFile(name, self.events_table_name)

    def lead_log(self) -> LeadLog | None:
        """The store's file (read-only connections), or None when it lives in memory."""
        return self.log_file()

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
        return set(self.message_outcomes(keys))

    def message_outcomes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MessageOutcome]:
        """The records of those of these messages that were recorded before."""
        found: dict[tuple[str, str], MessageOutcome] = {}
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(dict.fromkeys(keys)), 400):
                marks = ",".join(["(?, ?)"] * len(chunk))
                # the keys first, then each looked up by the primary key (a row-value IN list would
                # make SQLite scan the table)
                c.execute(
                    "SELECT i.source, i.message_id, i.outcome, i.digest, i.reason, i.lead_id, i.version "
                    f"FROM (VALUES {marks}) AS k CROSS JOIN leadledger_inbound AS i "
                    "ON i.source = k.column1 AND i.message_id = k.column2",
                    [part for key in chunk for part in key],
                )
                for s, m, outcome, digest, reason, lead, version in c.fetchall():
                    found[(s, m)] = (outcome, digest, reason, UUID(lead) if lead else None, version)
        return found

    def applied_messages(self, lead_id: UUID | None = None) -> list[AppliedRow]:
        """The records of applied messages (one lead's, or all), for verify."""
        sql = ("SELECT source, message_id, lead_id, version FROM leadledger_inbound "
               f"WHERE outcome = '{APPLIED}'")
        params: tuple[str, ...] = ()
        if lead_id is not None:
            sql, params = sql + " AND lead_id = ?", (lead_id.hex,)
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [(r[0], r[1], UUID(r[2]), r[3]) for r in c.fetchall()]

    def lookup_emails(self, keys: Iterable[str]) -> dict[str, UUID]:
        """The lead each of these e-mail keys (HMACs) is indexed to, where one is."""
        found: dict[str, UUID] = {}
        with self.datastore.transaction(commit=False) as c:
            for chunk in _chunks(list(set(keys))):
                marks = ",".join("?" * len(chunk))
                c.execute(f"SELECT email_hmac, lead_id FROM leadledger_email_index WHERE email_hmac IN ({marks})",
                          chunk)
                found.update({r[0]: UUID(r[1]) for r in c.fetchall()})
        return found

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
            c.executemany(
                "DELETE FROM leadledger_email_index WHERE lead_id = ?", [(lead.hex,) for lead in lead_ids]
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
                    "checkpoint; stop other leadledger processes and run 'leadledger erase LEAD_ID' again "
                    "with the lead's id (its e-mail no longer finds it; erasing an erased lead only "
                    "repeats this scrub)"
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

    def operator_state(self, name: str) -> tuple[int, str] | None:
        """The operator's latest (sequence number, state), None before its first commit."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT seq, state FROM leadledger_operator WHERE name = ?", (name,))
            row = c.fetchone()
            return None if row is None else (int(row[0]), str(row[1]))

    def policy_bodies(self) -> list[bytes]:
        """Every published policy version's envelope, in version order."""
        with self.datastore.transaction(commit=False) as c:
            if not self._has_table(c, "leadledger_policy"):
                return []
            c.execute("SELECT body FROM leadledger_policy ORDER BY version")
            return [r[0].encode() if isinstance(r[0], str) else bytes(r[0]) for r in c.fetchall()]

    def insert_policy(self, version: int, body: Callable[[int], bytes]) -> bytes:
        """Record policy `version`; `body` builds its envelope from the log position it follows
        (read in the same IMMEDIATE transaction, so no event slips in between)."""
        with self.datastore.get_connection(commit=True) as conn:
            raw: sqlite3.Connection = conn._sqlite_conn
            raw.execute("BEGIN IMMEDIATE")
            try:
                row = raw.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}").fetchone()
                made = body(int(row[0] or 0))
                raw.execute("INSERT INTO leadledger_policy VALUES (?, ?)", (version, made))
                raw.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                raw.execute("ROLLBACK")
                raise IntegrityError(str(exc)) from exc
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            return made

    def close(self) -> None:
        self.datastore.close()
