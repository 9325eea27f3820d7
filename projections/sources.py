"""Where the runner reads lead events from: an ordered log, one position per partition.

The embedded source reads the store's notification log (`LeadStore.raw`,
partition 0, position = notification id). A Kafka source (one partition per
topic partition, position = offset) fits the same Protocol: `read` returns the
events after the given positions, each partition in its own order.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from itertools import pairwise
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

import orjson

from lifecycle.recorders import SQLiteLeadRecorder
from lifecycle.store import LeadStore
from projections.facts import Fact, decode_state
from schemas.codec import CorruptEvent


class SourceEvent(NamedTuple):
    partition: int
    position: int
    lead_id: str  # 32 lower-case hex digits (UUID.hex)
    fact: Fact


class Source(Protocol):
    """An ordered, replayable log of lead events (at-least-once is fine: the runner de-duplicates)."""

    @property
    def name(self) -> str: ...

    def read(self, after: Mapping[int, int], limit: int) -> list[SourceEvent]:
        """Up to `limit` events after the positions in `after` (missing partition: from the start)."""
        ...

    def remaining(self, after: Mapping[int, int]) -> int | None:
        """How many events are left after `after`, if known (progress bars). 0 only when `read`
        would return nothing: the runner then skips the batch without taking the write lock."""
        ...


#: (position, lead id, fact): one event of a snapshot scan
Scanned = tuple[int, str, Fact]
#: Lead ids from `lo` (inclusive) to `hi` (exclusive), None for no bound: a scan's share of the leads
LeadRange = tuple[str | None, str | None]
EVERY_LEAD: LeadRange = (None, None)


class EmbeddedSource:
    """The store's notification log, read in batches and decoded by the lean path.

    With `prefetch` (SQLite store), a helper process reads and decodes the batch after the
    one just returned while the runner folds and writes.

    For a replay from zero it also offers a snapshot: `head()`, then `scan(head, leads)`, every
    event at or before the head of a range of lead ids; a SQLite store lets forked processes
    scan the ranges of `split(head, n)` side by side (`scan_in_child`)."""

    def __init__(self, store: LeadStore, name: str = "store", *, prefetch: bool = False) -> None:
        self.store = store
        self._name = name
        self._reader: _Prefetcher | None = None
        recorder = store.recorder
        if prefetch and isinstance(recorder, SQLiteLeadRecorder):
            self._reader = _Prefetcher(recorder.datastore.pool.db_name, recorder.events_table_name)

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def read(self, after: Mapping[int, int], limit: int) -> list[SourceEvent]:
        if self._reader is not None:
            return self._reader.read(after.get(0, 0), limit)
        return [SourceEvent(0, position, lead_hex, _decode(lead_hex, position, version, state))
                for position, lead_hex, version, state in self._rows(after.get(0, 0), limit)]

    def _rows(self, after: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        """(notification id, lead id as 32 hex digits, version, state), in notification order."""
        recorder = self.store.recorder
        if isinstance(recorder, SQLiteLeadRecorder):
            # the lean path: SQLite keeps lead ids as hex text; skip building UUID objects
            with recorder.datastore.transaction(commit=False) as c:
                c.execute(
                    f"SELECT rowid, originator_id, originator_version, state FROM {recorder.events_table_name} "
                    "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (after, limit),
                )
                return c.fetchall()  # type: ignore[no-any-return]
        return [(p, lead.hex, v, s) for p, lead, v, s in self.store.raw(after, limit)]

    def remaining(self, after: Mapping[int, int]) -> int | None:
        # notification ids are gap-free in SQLite; PostgreSQL may skip ids (rolled-back inserts)
        return max(0, self.store.head_position() - after.get(0, 0))

    # ---- snapshots, for a replay from zero -------------------------------------

    def head(self) -> int:
        """The latest position now; every event at or before it is committed and never changes."""
        return self.store.head_position()

    @property
    def scan_in_child(self) -> bool:
        """`scan` opens its own connection, so a forked process may run it (SQLite file store)."""
        return self._sqlite_file() is not None

    def _sqlite_file(self) -> str | None:
        recorder = self.store.recorder
        if isinstance(recorder, SQLiteLeadRecorder):
            name = recorder.datastore.pool.db_name
            if ":memory:" not in name and "mode=memory" not in name:
                return name
        return None

    def split(self, head: int, parts: int) -> list[LeadRange]:
        """Lead-id ranges with about the same number of events each (at most `parts`)."""
        recorder = self.store.recorder
        if parts < 2 or self._sqlite_file() is None or not isinstance(recorder, SQLiteLeadRecorder):
            return [EVERY_LEAD]
        table = recorder.events_table_name
        bounds: list[str | None] = [None]
        with recorder.datastore.transaction(commit=False) as c:
            for k in range(1, parts):
                # quantiles of the events by lead id, read off the primary key index
                c.execute(f"SELECT originator_id FROM {table} WHERE +rowid <= ? ORDER BY originator_id "
                          "LIMIT 1 OFFSET ?", (head, head * k // parts))
                row = c.fetchone()
                if row is not None and (bounds[-1] is None or row[0] > bounds[-1]):
                    bounds.append(row[0])
        bounds.append(None)
        return list(pairwise(bounds))

    def scan(self, head: int, leads: LeadRange = EVERY_LEAD, batch: int = 20_000) -> Iterator[list[Scanned]]:
        """Batches of the events at or before `head` whose lead id is in `leads`, in position
        order, decoded."""
        recorder, path = self.store.recorder, self._sqlite_file()
        if path is not None and isinstance(recorder, SQLiteLeadRecorder):
            yield from _scan_sqlite(path, recorder.events_table_name, head, leads, batch)
            return
        lo, hi = leads
        after = 0
        while after < head:
            rows = self.store.raw(after, batch)
            if not rows:
                return
            out = []
            for position, lead, version, state in rows:
                if position > head:
                    break
                lead_hex = lead.hex
                if (lo is None or lead_hex >= lo) and (hi is None or lead_hex < hi):
                    out.append((position, lead_hex, _decode(lead_hex, position, version, state)))
            yield out
            after = rows[-1][0]


def _decode(lead_hex: str, position: int, version: int, state: bytes) -> Fact:
    try:
        return decode_state(version, state)
    except CorruptEvent as exc:
        raise CorruptEvent(f"lead {lead_hex} notification {position}: {exc}") from exc


def _scan_sqlite(db_path: str, table: str, head: int, leads: LeadRange, batch: int) -> Iterator[list[Scanned]]:
    """One read transaction on a connection of its own (safe in a forked child)."""
    db = sqlite3.connect(f"file:{quote(db_path)}?mode=ro", uri=True, timeout=60)
    try:
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
        cursor = db.execute(f"SELECT rowid, originator_id, originator_version, state FROM {table} "
                            f"WHERE {' AND '.join(conds)} ORDER BY rowid", params)
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield [(position, lead, _decode(lead, position, version, state))
                   for position, lead, version, state in rows]
    finally:
        db.close()


class ListSource:
    """An in-memory log (tests, imports): events in the given order, positions per partition."""

    def __init__(self, events: Iterable[SourceEvent], name: str = "list") -> None:
        self.events = list(events)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def read(self, after: Mapping[int, int], limit: int) -> list[SourceEvent]:
        out = []
        for e in self.events:
            if e.position > after.get(e.partition, 0):
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    def remaining(self, after: Mapping[int, int]) -> int | None:
        return sum(1 for e in self.events if e.position > after.get(e.partition, 0))


# ---------------------------------------------------------------- prefetching


def _prefetch_main(conn: Connection, db_path: str, table: str) -> None:
    """Child process: answer (after, limit) with the decoded events, as orjson bytes."""
    import sqlite3

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=60)
    select = f"SELECT rowid, originator_id, originator_version, state FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    try:
        while True:
            request = conn.recv()
            if request is None:
                return
            after, limit = request
            try:
                rows = db.execute(select, (after, limit)).fetchall()
                out = [[position, lead, *decode_state(version, state)] for position, lead, version, state in rows]
                conn.send_bytes(orjson.dumps(out))
            except Exception as exc:  # reported to the parent, which raises it
                conn.send_bytes(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        db.close()


class _Prefetcher:
    """Double buffering over a child process: while one batch is folded, the next is decoded."""

    def __init__(self, db_path: str, table: str) -> None:
        # fork: the child needs nothing from the parent but this module (spawn would re-run
        # `python -m lifecycle`'s main module); it opens its own read-only connection
        methods = multiprocessing.get_all_start_methods()
        ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_prefetch_main, args=(child, db_path, table), daemon=True)
        self._proc.start()
        child.close()
        self._pending: tuple[int, int] | None = None

    def _ask(self, after: int, limit: int) -> None:
        self._conn.send((after, limit))
        self._pending = (after, limit)

    def _answer(self) -> list[SourceEvent]:
        self._pending = None
        raw = orjson.loads(self._conn.recv_bytes())
        if isinstance(raw, dict):
            raise CorruptEvent(f"reading the event store: {raw['error']}")
        return [SourceEvent(0, item[0], item[1], Fact(*item[2:])) for item in raw]

    def read(self, after: int, limit: int) -> list[SourceEvent]:
        if self._pending != (after, limit):
            if self._pending is not None:
                self._answer()  # a speculation that was not needed
            self._ask(after, limit)
        events = self._answer()
        if len(events) == limit:
            self._ask(events[-1].position, limit)  # the next batch, decoded while this one is folded
        return events

    def close(self) -> None:
        try:
            if self._pending is not None:
                self._answer()
            self._conn.send(None)
        except (OSError, EOFError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
