"""A replay from zero: every read model rebuilt from a snapshot of the store in ONE transaction,
the bulk road to the tables the runner's batches build."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any

from lifecycle.store.sqlite import LogRow
from projections.base import Lead, Projection, Table, summed
from projections.engine import chains
from projections.engine.checkpoints import Checkpoints
from projections.engine.db import ReadModelDB
from projections.engine.forked import Child, can_fork, recv_in_child, send_from_child
from projections.engine.registry import Registry, tables_of
from projections.engine.sources import EmbeddedSource, LeadRange, decode
from projections.engine.timeline import TIMELINE
from schemas.codec import GENESIS, check_link
from schemas.facts import Fact, pack

#: A test hook called at each step; raising there simulates a crash.
Fault = Callable[[str], None]

#: A replay folds, sends and writes the leads numbered [k·chunk + 1, (k+1)·chunk] together: at most
#: this many, and few enough for some 30 chunks (the first chunk's fold is not overlapped)
REPLAY_CHUNK = 4000
#: Processes that read, decode and fold a replay (SQLite store, fork available); this one writes.
REPLAY_WORKERS = 2
#: Once they fold, the workers yield the CPU to the writer, the bottleneck from then on.
WORKER_NICENESS = 10

#: Replay progress: (phase, events so far); phase "read" (decoded) then "write" (rows written).
ReplayProgress = Callable[[str, int], None]


@dataclass
class ReplayResult:
    events: int
    leads: int
    head: int  # the snapshot position: the checkpoint committed with the rows


def _no_progress(phase: str, events: int) -> None:
    return None


def _chunk_size(leads: int) -> int:
    return max(1, min(REPLAY_CHUNK, -(-leads // 30)))


class Replay:
    """Drops every read model of `projections` in `db` and rebuilds it.

    It snapshots the source's head, folds each lead ONCE with its whole history (leads
    numbered in order of first appearance, as the batches would), loads the rows into tables
    created without their secondary indexes, builds the indexes, and commits everything, the
    checkpoint at the head included, at once. On a SQLite store forked workers read, decode
    and fold partitions of the leads while this process writes. Every event's hash and its link
    to the lead's previous event are checked as it is read (a lead's events come in version
    order); a broken one fails the replay (CorruptEvent), which leaves the read models as they were."""

    def __init__(self, db: ReadModelDB, projections: Sequence[Projection], fault: Fault) -> None:
        self.db = db
        self.projections = tuple(projections)
        self.fault = fault

    def run(self, source: EmbeddedSource, progress: ReplayProgress | None = None,
            workers: int = REPLAY_WORKERS) -> ReplayResult:
        """Fold every event at or before the source's head now, and set the checkpoint to it,
        in one transaction (so the next catch-up picks up exactly the events stored since).
        A crash or an error anywhere rolls everything back."""
        tick = progress or _no_progress
        head = source.head()
        forked = workers > 1 and source.scan_in_child and can_fork()
        collecting = gc.isenabled()
        gc.disable()  # millions of small acyclic objects: the collector would only re-scan them
        try:
            # the workers start reading before the write transaction begins (which may have to
            # wait for another runner's batch to commit)
            starting: AbstractContextManager[_Crew | None] = (
                _replay_workers(source, head, source.split(head, workers), self.projections, self.fault)
                if forked else nullcontext())
            with starting as crew, self.db.bulk_load(), self.db.transaction(lock_key="runner"):
                tables = tables_of(self.projections)
                self.db.drop(tables)
                # secondary indexes are built after the load: sorted once, their pages come out
                # full and in order (maintained row by row they cost as much, and answer slower)
                self.db.create(tables, indexes=False)
                Registry(self.db).record(self.projections)
                self.fault("replay:start")
                if crew is not None:
                    events, leads = self._forked(crew, tick)
                else:
                    events, leads = self._inline(source, head, tick)
                self.fault("replay:indexes")
                for table in tables:
                    for stmt in self.db.index_ddl(table):
                        self.db.execute(stmt)
                self.fault("replay:checkpoint")
                if head:
                    checkpoints = Checkpoints(self.db)
                    checkpoints.set(source.name, 0, head)
                    digest = source.event_hash(head)
                    if digest is not None:  # the fingerprint a later catch-up checks the store against
                        checkpoints.mark_many([(source.name, 0, head, digest)])
                self.fault("replay:commit")
        finally:
            if collecting:
                gc.enable()
        return ReplayResult(events, leads, head)

    def _inline(self, source: EmbeddedSource, head: int, tick: ReplayProgress) -> tuple[int, int]:
        """Read the snapshot, then fold and write the leads in order of first appearance."""
        by_lead: dict[str, _Stream] = {}
        events = 0
        for batch in source.scan(head):
            _group(batch, by_lead, None)
            events += len(batch)
            tick("read", events)
        deriver = Deriver(self.projections)
        out = deriver.empty()
        counts = _Counts(deriver.tables)
        written = pending = 0
        chunk = _chunk_size(len(by_lead))
        for lead_no, (lead_id, (facts, last_hash)) in enumerate(by_lead.items(), start=1):
            pending += deriver.add(lead_no, lead_id, facts, out, last_hash)
            if lead_no % chunk == 0 or lead_no == len(by_lead):
                self.fault("replay:write")
                for table, rows in zip(deriver.tables, out, strict=True):
                    if not counts.add(table, rows):
                        self.db.load(table, rows)
                out = deriver.empty()
                written, pending = written + pending, 0
                tick("write", written)
        counts.load(self.db)
        return events, len(by_lead)

    def _forked(self, crew: _Crew, tick: ReplayProgress) -> tuple[int, int]:
        """Number the leads from the workers' first positions, then write their chunks in order."""
        firsts = crew.gather(lambda: tick("read", crew.scanned()))
        events = sum(n for n, _ in firsts)
        tick("read", events)
        ranks = sorted(position for _, positions in firsts for position in positions)
        number = {position: no for no, position in enumerate(ranks, start=1)}
        leads = len(ranks)
        chunk = _chunk_size(leads)
        chunks = -(-leads // chunk)
        crew.tell([(list(map(number.__getitem__, positions)), chunk, chunks) for _, positions in firsts])
        del number, ranks
        tables = Deriver(self.projections).tables
        counts = _Counts(tables)
        by_lead_no = itemgetter(0)
        written = 0
        for _ in range(chunks):
            parts = crew.gather()
            self.fault("replay:write")
            for i, table in enumerate(tables):
                rows = parts[0][1][i]
                if len(parts) > 1:
                    for part in parts[1:]:
                        rows += part[1][i]
                    if not table.summed:  # sorted runs, one per worker: a merge; key order = b-tree order
                        rows.sort(key=by_lead_no)
                if not counts.add(table, rows):
                    self.db.load(table, rows)
            written += sum(n for n, _ in parts)
            tick("write", written)
        counts.load(self.db)
        return events, leads


class Deriver:
    """Every row of whole leads, each folded once with its complete history (a replay's fold).

    The same folds the batches make, given everything at once: `fold(lead, [], facts)` is
    what a rebuild from the timelines does too."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        tables: dict[str, Table] = {TIMELINE.name: TIMELINE}
        for p in projections:
            for t in p.tables:
                tables.setdefault(t.name, t)
        self.tables: tuple[Table, ...] = tuple(tables.values())
        self._slot = {name: i for i, name in enumerate(tables)}
        self._folds = [(p, p.handles) for p in projections]

    def empty(self) -> list[list[tuple[Any, ...]]]:
        return [[] for _ in self.tables]

    def collapse(self, out: list[list[tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        """`out` with the rows of each summed table added up per key (fewer rows to send)."""
        return [summed(rows) if table.summed else rows for table, rows in zip(self.tables, out, strict=True)]

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
                for table, rows in projection.fold(lead, [], seen).rows.items():
                    out[slot[table]].extend(rows)
        return len(facts)


class _Counts:
    """The rows of the summed tables, added up over the whole replay and loaded at its end (the
    rows of other tables are loaded as they come)."""

    def __init__(self, tables: Sequence[Table]) -> None:
        self._totals: dict[str, dict[tuple[Any, ...], int]] = {t.name: {} for t in tables if t.summed}
        self._tables = [t for t in tables if t.summed]

    def add(self, table: Table, rows: list[tuple[Any, ...]]) -> bool:
        """Add `rows` if `table` is summed (then True: nothing to load now)."""
        totals = self._totals.get(table.name)
        if totals is None:
            return False
        for row in rows:
            key = row[:-1]
            totals[key] = totals.get(key, 0) + row[-1]
        return True

    def load(self, db: ReadModelDB) -> None:
        for table in self._tables:
            db.load(table, sorted((*key, n) for key, n in self._totals[table.name].items() if n))


# ---------------------------------------------------------------- reading a snapshot

#: one lead's events read so far: [its facts (versions 1..n, in order), the hash of version n]
_Stream = list[Any]


def _group(batch: list[LogRow], by_lead: dict[str, _Stream], firsts: list[int] | None) -> None:
    """Decode a scanned batch (position order, so each lead's events in version order) into
    `by_lead`, checking each event's hash and row, and its link to the lead's previous one;
    `firsts` gets each new lead's position."""
    for position, lead_id, version, state in batch:
        fact, digest, prev = decode(lead_id, position, version, state)
        stream = by_lead.get(lead_id)
        if stream is None:
            if version != 1 or prev != GENESIS:
                check_link(lead_id, version, prev, 0, GENESIS, f"notification {position}")
            by_lead[lead_id] = [[fact], digest]
            if firsts is not None:
                firsts.append(position)
        else:
            facts = stream[0]
            if prev != stream[1] or version != len(facts) + 1:
                check_link(lead_id, version, prev, len(facts), stream[1], f"notification {position}")
            facts.append(fact)
            stream[1] = digest


# ---------------------------------------------------------------- the forked workers


class _Crew:
    """The replay workers, each reading, decoding and folding one partition of the leads."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._scanned: list[Any] = []  # per worker, a shared counter of the events it has decoded

    def start(self, *args: Any) -> None:
        counter = multiprocessing.RawValue("q", 0)
        self.children.append(Child(_replay_worker, *args, counter, name=f"leadledger-replay-{len(self.children)}"))
        self._scanned.append(counter)

    def scanned(self) -> int:
        return sum(int(v.value) for v in self._scanned)

    def gather(self, waiting: Callable[[], None] | None = None) -> list[Any]:
        """The next message of every worker, in worker order (`waiting` is called while none is there)."""
        out = []
        for child in self.children:
            while waiting is not None and not child.poll(0.1):
                waiting()
            out.append(child.recv())
        return out

    def tell(self, messages: list[Any]) -> None:
        for child, message in zip(self.children, messages, strict=True):
            child.send(message)


@contextmanager
def _replay_workers(source: EmbeddedSource, head: int, ranges: list[LeadRange], projections: Sequence[Projection],
                    fault: Fault) -> Iterator[_Crew]:
    crew = _Crew()
    try:
        for leads in ranges:
            crew.start(source, head, leads, projections, fault)
        yield crew
    finally:
        for child in crew.children:
            child.kill()  # after an error here; a finished worker has exited already


def _replay_worker(conn: Connection, source: EmbeddedSource, head: int, leads: LeadRange,
                   projections: Sequence[Projection], fault: Fault, scanned: Any) -> None:
    """A forked worker: read and decode the events of its range of leads up to the head, group
    them by lead; send each lead's first position; get the lead numbers back; then fold and send
    the rows chunk by chunk (the leads numbered in chunk k, for every k, so the writer can merge)."""
    gc.disable()
    by_lead: dict[str, _Stream] = {}
    firsts: list[int] = []
    events = 0
    for batch in source.scan(head, leads):
        _group(batch, by_lead, firsts)
        events += len(batch)
        scanned.value = events
    fault("replay:scanned")
    send_from_child(conn, (events, firsts))
    del firsts
    numbers, chunk, chunks = recv_in_child(conn)
    with suppress(OSError):
        os.nice(WORKER_NICENESS)  # from here on the writer is the bottleneck
    deriver = Deriver(projections)
    todo = iter(by_lead.items())
    i = 0
    for k in range(chunks):
        top = (k + 1) * chunk
        out = deriver.empty()
        n = 0
        while i < len(numbers) and numbers[i] <= top:
            lead_id, (facts, last_hash) = next(todo)
            n += deriver.add(numbers[i], lead_id, facts, out, last_hash)
            i += 1
        fault("replay:folded")
        send_from_child(conn, (n, deriver.collapse(out)))
