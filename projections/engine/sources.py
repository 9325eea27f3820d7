"""Where the runner reads lead events from: an ordered log, one position per partition.

The embedded source reads the store's notification log (`LeadStore.log`,
partition 0, position = notification id). A Kafka source (one partition per
topic partition, position = offset) fits the same Protocol: `read` returns the
events after the given positions, each partition in its own order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import NamedTuple, Protocol

from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import EVERY_LEAD, LeadRange, LogFile
from projections.engine.forked import Child, ChildFailed, recv_in_child, send_from_child
from schemas.codec import CorruptEvent
from schemas.facts import Fact, decode_state


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


class EmbeddedSource:
    """The store's notification log, read in batches and decoded by the lean path.

    With `prefetch` (a SQLite file store), a helper process reads and decodes the batch after
    the one just returned while the runner folds and writes.

    For a replay from zero it also offers a snapshot: `head()`, then `scan(head, leads)`, every
    event at or before the head of a range of lead ids; a SQLite file store lets forked processes
    scan the ranges of `split(head, n)` side by side (`scan_in_child`)."""

    def __init__(self, store: LeadStore, name: str = "store", *, prefetch: bool = False) -> None:
        self.store = store
        self._name = name
        log_file = store.log_file() if prefetch else None
        self._reader = _Prefetcher(log_file) if log_file is not None else None

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
                for position, lead_hex, version, state in self.store.log(after.get(0, 0), limit)]

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
        return self.store.log_file() is not None

    def split(self, head: int, parts: int) -> list[LeadRange]:
        """Lead-id ranges with about the same number of events each (at most `parts`)."""
        return self.store.split(head, parts)

    def scan(self, head: int, leads: LeadRange = EVERY_LEAD, batch: int = 20_000) -> Iterator[list[Scanned]]:
        """Batches of the events at or before `head` whose lead id is in `leads`, in position
        order, decoded."""
        for rows in self.store.scan(head, leads, batch):
            yield [(position, lead, _decode(lead, position, version, state))
                   for position, lead, version, state in rows]


def _decode(lead_hex: str, position: int, version: int, state: bytes) -> Fact:
    try:
        return decode_state(version, state)
    except CorruptEvent as exc:
        raise CorruptEvent(f"lead {lead_hex} notification {position}: {exc}") from exc


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


def _prefetch_main(conn: Connection, log_file: LogFile) -> None:
    """Child process: answer each (after, limit) with the decoded events after `after`."""
    with log_file.open() as log:
        while (request := recv_in_child(conn)) is not None:
            after, limit = request
            send_from_child(conn, [(position, lead, *_decode(lead, position, version, state))
                                   for position, lead, version, state in log.after(after, limit)])


class _Prefetcher:
    """Double buffering over a child process: while one batch is folded, the next is decoded."""

    def __init__(self, log_file: LogFile) -> None:
        self._child = Child(_prefetch_main, log_file, name="store prefetcher")
        self._pending: tuple[int, int] | None = None

    def _ask(self, after: int, limit: int) -> None:
        self._child.send((after, limit))
        self._pending = (after, limit)

    def _answer(self) -> list[SourceEvent]:
        self._pending = None
        return [SourceEvent(0, item[0], item[1], Fact(*item[2:])) for item in self._child.recv()]

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
        if self._pending is not None:
            with suppress(ChildFailed, CorruptEvent):
                self._child.recv()  # the child waits to hand over its last answer before it stops
        self._child.close(timeout=5)
