"""A replay from zero: every read model rebuilt from the store's events up to a snapshot
position into new tables beside the live ones, a chunk of leads per short transaction, then
swapped in with one short transaction (the bulk road to the tables the runner's batches build)."""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from lifecycle.forked import Child, can_fork, recv_in_child, send_from_child
from lifecycle.store.sqlite import LogRow
from projections.base import Lead, Projection, Table
from projections.engine import chains
from projections.engine.checkpoints import CHECKPOINTS, MARKS
from projections.engine.db import ReadModelDB
from projections.engine.registry import REGISTRY, registry_rows, tables_of
from projections.engine.sources import EmbeddedSource, LeadsReader, decode
from projections.engine.timeline import TIMELINE
from schemas.codec import GENESIS, check_link
from schemas.facts import Fact, pack

#: A test hook called at each step; raising there simulates a crash.
Fault = Callable[[str], None]

#: A replay reads, folds and writes the leads numbered [k·chunk + 1, (k+1)·chunk] together: at most
#: this many (what bounds its memory), and few enough for some 30 chunks in a small store
REPLAY_CHUNK = 500
#: Processes that read, decode and fold a replay (SQLite store, fork available); this one writes.
REPLAY_WORKERS = 2
#: Once they fold, the workers yield the CPU to the writer, the bottleneck from then on.
WORKER_NICENESS = 10
#: Chunks asked of each worker ahead of the one being written.
AHEAD = 2
#: The names of a table being built by a replay, and of the one it replaced until it is dropped.
NEXT, OLD = "__next", "__old"

#: Replay progress: (phase, events so far); phase "read" (decoded) then "write" (rows written).
ReplayProgress = Callable[[str, int], None]

#: A folded chunk: (events, rows per table of `Deriver.tables`)
Folded = tuple[int, list[list[tuple[Any, ...]]]]


@dataclass
class ReplayResult:
    events: int
    leads: int
    head: int  # the snapshot position: the checkpoint the new tables were swapped in with


def _no_progress(phase: str, events: int) -> None:
    return None


def _chunk_size(leads: int) -> int:
    return max(1, min(REPLAY_CHUNK, -(-leads // 30)))


def renamed(table: Table, suffix: str) -> Table:
    """The table under its name plus `suffix` (`NEXT`, `OLD`)."""
    return replace(table, name=table.name + suffix)


class Replay:
    """Rebuilds every read model of `projections` in `db` beside the live tables, then swaps.

    It snapshots the source's head, numbers the leads in order of first appearance (as the
    batches would) and folds each lead ONCE with its whole history, a chunk of leads at a time
    read through the store's lead index, so memory does not grow with the store. The rows go
    into new tables (`<name>__next`, the timeline, the registry and the checkpoint at the head
    included), one short transaction per chunk, so the runner's batches and the queries go on
    with the live tables meanwhile; the counts are grouped in the database from the loaded rows
    (`Projection.bulk_sql`) and the secondary indexes built after the load. Then one
    short transaction (the runner's lock) renames the live tables away and the new ones into
    their place; the old ones are dropped after it. Events stored after the head were folded
    into the old tables by the runner meanwhile: from the new checkpoint, its next batches fold
    them again into the new ones. On a SQLite store forked workers read, decode and fold
    chunks side by side while this process writes. Every event's hash and its link to the
    lead's previous event are checked as it is read; a broken one fails the replay
    (CorruptEvent). A failure or a crash anywhere before the swap commits leaves the live
    read models untouched; the next replay drops what it left."""

    def __init__(self, db: ReadModelDB, projections: Sequence[Projection], fault: Fault) -> None:
        self.db = db
        self.projections = tuple(projections)
        self.fault = fault
        self.tables = tables_of(self.projections)
        self.deriver = Deriver(self.projections)
        self._next = {t.name: renamed(t, NEXT) for t in self.tables}

    def run(self, source: EmbeddedSource, progress: ReplayProgress | None = None,
            workers: int = REPLAY_WORKERS) -> ReplayResult:
        """Fold every event at or before the source's head now into new tables with the
        checkpoint at it, and swap them in (so the next catch-up picks up exactly the events
        stored since)."""
        tick = progress or _no_progress
        head = source.head()
        source.prepare_lead_reads()
        events, leads = source.count(head)
        chunk = _chunk_size(leads)
        forked = workers > 1 and source.leads_in_child and can_fork()
        collecting = gc.isenabled()
        gc.disable()  # millions of small acyclic objects: the collector would only re-scan them
        try:
            with self.db.bulk_load():
                self._prepare()
                self.fault("replay:start")
                chunks = (self._forked(source, head, chunk, workers) if forked
                          else self._inline(source, head, chunk))
                with closing(chunks):  # a failure stops the workers at once
                    folded = self._write(chunks, tick)
                if folded != events:
                    _find_broken(source, head, events, folded)
                self.fault("replay:counts")
                self._build()
                self.fault("replay:indexes")
                self._index()
                self.db.settle([t.name for t in self._next.values()])
                self.fault("replay:checkpoint")
                self._checkpoint(source, head)
                self._swap()
                self._drop_old()  # with the bulk load's small page cache too (a drop reads every page)
        finally:
            if collecting:
                gc.enable()
        return ReplayResult(events, leads, head)

    # ---- the steps -------------------------------------------------------------

    def _prepare(self) -> None:
        """New empty tables (without their secondary indexes), in place of any a replay left."""
        with self.db.transaction():
            self.db.drop([renamed(t, suffix) for t in self.tables for suffix in (NEXT, OLD)])
            self.db.create(list(self._next.values()), indexes=False)
            self.db.load(self._next[REGISTRY.name], registry_rows(self.projections))

    def _write(self, chunks: Iterator[Folded], tick: ReplayProgress) -> int:
        """Each folded chunk into the new tables, in one transaction of its own; returns events."""
        tables = [self._next[t.name] for t in self.deriver.tables]
        written = 0
        for n, out in chunks:
            tick("read", written + n)
            self.fault("replay:write")
            with self.db.transaction():
                for table, rows in zip(tables, out, strict=True):
                    self.db.load(table, rows)
            written += n
            tick("write", written)
        return written

    def _build(self) -> None:
        """The tables the projections build from the loaded rows (`Projection.bulk_sql`: the
        counts), each statement in a transaction of its own."""
        for projection in self.projections:
            for stmt in projection.bulk_sql(lambda t: self.db.name(self._next[t.name].name)):
                with self.db.transaction():
                    self.db.execute(stmt)

    def _index(self) -> None:
        """The secondary indexes, built after the load (sorted once, their pages come out full and
        in order), each in a transaction of its own, under the name the live table leaves free."""
        for table in self.tables:
            for stmt in self.db.index_ddl(table, on=self._next[table.name].name):
                with self.db.transaction():
                    self.db.execute(stmt)

    def _checkpoint(self, source: EmbeddedSource, head: int) -> None:
        if not head:
            return
        with self.db.transaction():
            self.db.load(self._next[CHECKPOINTS.name], [(source.name, 0, head)])
            digest = source.event_hash(head)
            if digest is not None:  # the fingerprint a later catch-up checks the store against
                self.db.load(self._next[MARKS.name], [(source.name, 0, head, digest)])

    def _swap(self) -> None:
        """One transaction, under the runners' lock: the live tables renamed away, the new ones
        into their place."""
        with self.db.transaction(lock_key="runner"):
            self.fault("replay:swap")
            live = [t.name for t in self.tables if self.db.exists(t.name)]
            self.db.lock_for_swap([*live, *(t.name for t in self._next.values())])
            for table in self.tables:
                if table.name in live:
                    self.db.rename(table.name, table.name + OLD)
                self.db.rename(self._next[table.name].name, table.name)
            self.fault("replay:commit")

    def _drop_old(self) -> None:
        for table in self.tables:
            with self.db.transaction():
                self.db.drop([renamed(table, OLD)])

    # ---- reading and folding ------------------------------------------------------

    def _inline(self, source: EmbeddedSource, head: int, chunk: int) -> Generator[Folded]:
        """Every chunk read and folded in this process."""
        with source.reader() as reader:
            for first_no, after in _pages(source, head, chunk):
                yield _fold_chunk(reader, head, first_no, after, chunk, self.deriver, self.fault)

    def _forked(self, source: EmbeddedSource, head: int, chunk: int, workers: int) -> Generator[Folded]:
        """Chunk k read and folded by worker k mod `workers`, a few chunks ahead of the writer."""
        crew = [Child(_replay_worker, source, head, chunk, self.projections, self.fault,
                      name=f"leadledger-replay-{i}") for i in range(workers)]
        try:
            asked: deque[Child] = deque()
            for k, (first_no, after) in enumerate(_pages(source, head, chunk)):
                child = crew[k % workers]
                _ask(child, (first_no, after))
                asked.append(child)
                if len(asked) >= AHEAD * workers:
                    yield asked.popleft().recv()
            while asked:
                yield asked.popleft().recv()
            for child in crew:
                child.close()
        finally:
            for child in crew:
                child.kill()  # after an error here; a finished worker has exited already


def _ask(child: Child, message: Any) -> None:
    """Send to a worker; one that stopped (it failed) raises its error instead."""
    try:
        child.send(message)
    except OSError:
        while True:
            child.recv()  # what it sent before it failed, then its error (or that it died)


def _pages(source: EmbeddedSource, head: int, chunk: int) -> Iterator[tuple[int, int]]:
    """Each chunk of leads as (the number of its first lead, the position after which its
    first events start): `chunk` leads each, in order of appearance."""
    after, first_no = 0, 1
    while page := source.firsts(head, after, chunk):
        yield first_no, after
        first_no += len(page)
        after = page[-1][0]


def _fold_chunk(reader: LeadsReader, head: int, first_no: int, after: int, chunk: int, deriver: Deriver,
                fault: Fault) -> Folded:
    """The rows of the `chunk` leads first seen after position `after`, numbered from `first_no`,
    each folded with every event of it at or before `head`."""
    lead_ids = [lead_id for _, lead_id in reader.firsts(head, after, chunk)]
    by_lead: dict[str, _Stream] = {}
    _group(reader.leads_log(lead_ids, head), by_lead)
    fault("replay:scanned")
    out = deriver.empty()
    events = 0
    for lead_no, lead_id in enumerate(lead_ids, start=first_no):
        facts, last_hash = by_lead[lead_id]
        events += deriver.add(lead_no, lead_id, facts, out, last_hash)
    fault("replay:folded")
    return events, out


def _find_broken(source: EmbeddedSource, head: int, events: int, folded: int) -> None:
    """Some events were not read with their leads (a lead whose first event is not its version 1):
    read the whole log to name the first broken link."""
    by_lead: dict[str, _Stream] = {}
    for batch in source.scan(head):
        _group(batch, by_lead)
    raise RuntimeError(f"the store holds {events} events up to notification {head}, but the replay "
                       f"read {folded} with their leads; run `leadledger verify` to find out why")


class Deriver:
    """Every row of whole leads, each folded once with its complete history (a replay's fold).

    The same folds the batches make, given everything at once (`Projection.bulk_fold`), but for
    the tables the database builds from these rows afterwards (`Projection.bulk_sql`: the counts)."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        tables: dict[str, Table] = {TIMELINE.name: TIMELINE}
        for p in projections:
            for t in p.tables:
                if t.summed and t not in p.bulk_built:
                    raise TypeError(f"{p.name}: a replay builds counts ({t.name}) only with bulk_sql")
                if t not in p.bulk_built:
                    tables.setdefault(t.name, t)
        #: the tables whose rows it derives (those of `Projection.bulk_built` are built in SQL)
        self.tables: tuple[Table, ...] = tuple(tables.values())
        self._slot = {name: i for i, name in enumerate(tables)}
        self._folds = [(p, p.handles) for p in projections]

    def empty(self) -> list[list[tuple[Any, ...]]]:
        return [[] for _ in self.tables]

    def add(self, lead_no: int, lead_id: str, facts: list[Fact], out: list[list[tuple[Any, ...]]],
            last_hash: str) -> int:
        """Append the lead's rows (timeline first) to `out`, per table; returns its events.
        `facts`: versions 1..n, each once (their links checked), in any order; `last_hash`: the
        hash of version n."""
        facts.sort()  # metric order
        out[0].append((lead_no, lead_id, pack(facts), chains.whole(len(facts), last_hash)))
        lead = Lead(lead_no, lead_id)
        slot = self._slot
        for projection, handles in self._folds:
            seen = [f for f in facts if f.name in handles]
            if seen:
                for table, rows in projection.bulk_fold(lead, seen).rows.items():
                    out[slot[table]].extend(rows)
        return len(facts)


# ---------------------------------------------------------------- reading


#: one lead's events read so far: [its facts (versions 1..n, in order), the hash of version n]
_Stream = list[Any]


def _group(batch: list[LogRow], by_lead: dict[str, _Stream]) -> None:
    """Decode rows (position order, so each lead's events in version order) into `by_lead`,
    checking each event's hash and row, and its link to the lead's previous one."""
    for position, lead_id, version, state in batch:
        fact, digest, prev = decode(lead_id, position, version, state)
        stream = by_lead.get(lead_id)
        if stream is None:
            if version != 1 or prev != GENESIS:
                check_link(lead_id, version, prev, 0, GENESIS, f"notification {position}")
            by_lead[lead_id] = [[fact], digest]
        else:
            facts = stream[0]
            if prev != stream[1] or version != len(facts) + 1:
                check_link(lead_id, version, prev, len(facts), stream[1], f"notification {position}")
            facts.append(fact)
            stream[1] = digest


# ---------------------------------------------------------------- the forked workers


def _replay_worker(conn: Connection, source: EmbeddedSource, head: int, chunk: int,
                   projections: Sequence[Projection], fault: Fault) -> None:
    """A forked worker: for each (first lead number, position) asked, read, decode and fold
    that chunk of leads on a connection of its own, and send its rows back; None stops it."""
    gc.disable()
    with suppress(OSError):
        os.nice(WORKER_NICENESS)  # the writer is the bottleneck
    deriver = Deriver(projections)
    with source.reader() as reader:
        while (request := recv_in_child(conn)) is not None:
            first_no, after = request
            send_from_child(conn, _fold_chunk(reader, head, first_no, after, chunk, deriver, fault))
