"""Where the runner reads lead events from: an ordered log, one position per partition.

The embedded source reads the store's notification log (`LeadStore.log`,
partition 0, position = notification id). A Kafka source (one partition per
topic partition, position = offset) fits the same Protocol: `read` returns the
events after the given positions, each partition in its own order.

Every source checks each event's own hash and row as it decodes it, and hands over its hash
and previous-hash link: the runner checks the link to the lead's previous event (which it may
have folded long before). The embedded source also tells whether the store is still the one
the read models were built from (`check_mark`): the hash of the event at the checkpoint is
kept with it, and a store restored from an older backup, or replaced, no longer has that event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import NamedTuple, Protocol

from lifecycle.forked import Child, ChildFailed, recv_in_child, send_from_child
from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import EVERY_LEAD, LeadRange, LogFile, LogRow
from schemas.codec import CorruptEvent, checked_envelope
from schemas.facts import Fact, decode_checked


class SourceEvent(NamedTuple):
    partition: int
    position: int
    lead_id: str  # 32 lower-case hex digits (UUID.hex)
    fact: Fact
    digest: str  # the event's hash (checked against its content)
    prev: str  # the hash it states for the lead's previous event (the runner checks the link)


class StoreMismatch(Exception):
    """The read models were built from another event store than this one (a store restored from an
    older backup, or replaced): nothing new would ever be projected right. `leadledger replay`."""


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

    @property
    def gapless(self) -> bool:
        """Each lead's events arrive in version order without gaps (a gap is a missing event)."""
        ...

    def where(self, partition: int, position: int) -> str:
        """Where an event was read, for messages ("notification 17")."""
        ...

    def check_mark(self, partition: int, position: int, digest: str) -> None:
        """Raise `StoreMismatch` if the event at `position` is not the one of hash `digest` the read
        models recorded with their checkpoint (a source that cannot tell does nothing)."""
        ...





class EmbeddedSource:
    """The store's notification log, read in batches and decoded by the lean path.

    With `prefetch` (a SQLite file store), a helper process reads and decodes the batch after
    the one just returned while the runner folds and writes.

    For a replay from zero it also offers a snapshot: `head()`, then the leads a chunk at a time
    (`firsts`, `reader`), which forked processes may read side by side where the store gives them
    connections of their own (`leads_in_child`); `scan(head)` reads every event up to the head."""

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
        return [SourceEvent(0, position, lead_hex, *decode(lead_hex, position, version, state))
                for position, lead_hex, version, state in self.store.log(after.get(0, 0), limit)]

    def remaining(self, after: Mapping[int, int]) -> int | None:
        # notification ids are gap-free in SQLite; PostgreSQL may skip ids (rolled-back inserts)
        return max(0, self.store.head_position() - after.get(0, 0))

    @property
    def gapless(self) -> bool:
        return True  # a lead's versions are stored (and numbered) in order

    def where(self, partition: int, position: int) -> str:
        return f"notification {position}"

    def event_hash(self, position: int) -> str | None:
        """The hash of the event at notification `position` (checked), None if there is none."""
        rows = self.store.log(position - 1, 1) if position > 0 else []
        if not rows or rows[0][0] != position:
            return None
        _, lead_hex, version, state = rows[0]
        return str(checked_envelope(lead_hex, version, state, f"notification {position}")["hash"])

    def check_mark(self, partition: int, position: int, digest: str) -> None:
        found = self.event_hash(position)
        if found == digest:
            return
        if found is None:
            head = self.store.head_position()
            what = (f"the store ends at notification {head}" if head < position
                    else f"the store has no event {position}")
            raise StoreMismatch(
                f"the read models are ahead of the event store: they were built from its events up to "
                f"notification {position}, but {what} (was the store restored from an older backup, or "
                "replaced?); run `leadledger replay` to rebuild the read models from this store")
        raise StoreMismatch(
            f"the read models were built from another event store: the event at notification {position} is "
            "not the one they were built with (was the store restored from a backup, or replaced?); run "
            "`leadledger replay` to rebuild the read models from this store")

    # ---- snapshots, for a replay from zero -------------------------------------

    def head(self) -> int:
        """The latest position now; every event at or before it is committed and never changes."""
        return self.store.head_position()

    def scan(self, head: int, leads: LeadRange = EVERY_LEAD, batch: int = 20_000) -> Iterator[list[LogRow]]:
        """Batches of the stored rows at or before `head` whose lead id is in `leads`, in position
        order (so each lead's in version order), as stored: the caller decodes them with `decode`,
        which checks each event's hash and row, and checks the links (the replay does both)."""
        yield from self.store.scan(head, leads, batch)

    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (position, lead id) of leads' first events after `after`, up to `head`: the
        leads in order of appearance, a page at a time (a replay numbers them in this order)."""
        return self.store.firsts(head, after, limit)

    def prepare_lead_reads(self) -> None:
        """Before reading the whole store a chunk of leads at a time (PostgreSQL: statistics)."""
        self.store.prepare_lead_reads()

    def count(self, head: int) -> tuple[int, int]:
        """(events, leads) at or before `head`."""
        return self.store.count_log(head)

    @property
    def leads_in_child(self) -> bool:
        """`reader` opens a connection of its own, so a forked process may read whole leads
        (a SQLite file store, a PostgreSQL store)."""
        return self.store.lead_log() is not None

    @contextmanager
    def reader(self) -> Iterator[LeadsReader]:
        """Reads of whole leads for a replay; on a connection of its own where the store allows
        one (`leads_in_child`), so a forked process may use it."""
        lead_log = self.store.lead_log()
        if lead_log is None:
            yield self.store
            return
        with lead_log.open() as reader:
            yield reader


class LeadsReader(Protocol):
    """What a replay reads the store with, a chunk of leads at a time (the rows as stored:
    decode them with `decode`)."""

    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (position, lead id) of leads' first events after `after`, up to `head`."""
        ...

    def leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        """Every row of `lead_ids` at or before `head`, in position order."""
        ...


def decode(lead_hex: str, position: int, version: int, state: bytes) -> tuple[Fact, str, str]:
    """A stored row's (Fact, hash, prevhash), its hash and row checked (`decode_checked`); a
    CorruptEvent names the lead, the version and the notification."""
    try:
        return decode_checked(lead_hex, version, state)
    except CorruptEvent:
        decode_checked(lead_hex, version, state, f"notification {position}")  # the same error, located
        raise


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

    @property
    def gapless(self) -> bool:
        return False  # tests split, repeat and reorder logs

    def where(self, partition: int, position: int) -> str:
        return f"{self._name} partition {partition} position {position}"

    def check_mark(self, partition: int, position: int, digest: str) -> None:
        if not any(e.partition == partition and e.position == position and e.digest == digest for e in self.events):
            raise StoreMismatch(f"{self._name} has no event {digest} at partition {partition} position {position}")


# ---------------------------------------------------------------- prefetching


def _prefetch_main(conn: Connection, log_file: LogFile) -> None:
    """Child process: answer each (after, limit) with the decoded events after `after`."""
    with log_file.open() as log:
        while (request := recv_in_child(conn)) is not None:
            after, limit = request
            out = []
            for position, lead, version, state in log.after(after, limit):
                fact, digest, prev = decode(lead, position, version, state)
                out.append((position, lead, digest, prev, *fact))
            send_from_child(conn, out)


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
        return [SourceEvent(0, item[0], item[1], Fact(*item[4:]), item[2], item[3]) for item in self._child.recv()]

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
