"""The runner: feeds projections in batches and commits rows + checkpoint in ONE transaction.

Per batch: read events after the checkpoint (one position per source
partition), group them by lead, load those leads' timelines (their facts so far
and, per projection, the highest version folded), let every projection fold the
new facts, then write the timeline rows, the projections' rows and the new
checkpoint together. A crash anywhere rolls the whole batch back; a restart
resumes after the last committed checkpoint. A re-delivered event (same lead and
version) is already in the timeline and below every projection's folded version,
so it changes nothing.

A replay from zero (`Runner.replay`) takes another road to the same tables: it snapshots
the source's head, folds each lead ONCE with its whole history (leads numbered in order of
first appearance, as the batches would), and writes everything, the checkpoint at the head
included, in one transaction; on a SQLite store forked workers read, decode and fold
partitions of the leads while this process writes.
"""

from __future__ import annotations

import gc
import logging
import marshal
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any

from projections.attribution import Attribution
from projections.base import Changes, Lead, Projection, Table
from projections.db import ReadModelDB
from projections.facts import Fact, pack, unpack
from projections.funnel import Funnel
from projections.leads import Leads
from projections.sources import EmbeddedSource, LeadRange, Source, SourceEvent
from projections.speed import Speed
from projections.velocity import Velocity
from schemas.codec import CorruptEvent

log = logging.getLogger("leadledger.projections")

TIMELINE = Table(
    "rm_timeline",
    (("lead_no", "int"), ("lead_id", "text"), ("facts", "blob")),
    key=("lead_no",),
    indexes=(("lead_id",),),
    upsert=True,
)
CHECKPOINTS = Table(
    "rm_checkpoints",
    (("source_name", "text"), ("partition_no", "int"), ("position_no", "int")),
    key=("source_name", "partition_no"),
    per_lead=False,
    upsert=True,
)
REGISTRY = Table(
    "rm_projections",
    (("name", "text"), ("version", "int")),
    key=("name",),
    per_lead=False,
    upsert=True,
)
RUNNER_TABLES = (TIMELINE, CHECKPOINTS, REGISTRY)

#: Every read model, in the order they are folded.
PROJECTIONS: tuple[Projection, ...] = (Funnel(), Velocity(), Attribution(), Speed(), Leads())
BY_NAME: dict[str, Projection] = {p.name: p for p in PROJECTIONS}

#: A test hook called at each step of a batch; raising there simulates a crash.
Fault = Callable[[str], None]

#: Leads whose timelines the runner keeps in memory between batches (a cache; the table is the truth).
CACHE_LEADS = 400_000

#: A replay folds, sends and writes the leads numbered [k·chunk + 1, (k+1)·chunk] together: at most
#: this many, and few enough for some 30 chunks (the first chunk's fold is not overlapped)
REPLAY_CHUNK = 4000
#: Processes that read, decode and fold a replay (SQLite store, fork available); this one writes.
REPLAY_WORKERS = 2
#: Once they fold, the workers yield the CPU to the writer, the bottleneck from then on.
WORKER_NICENESS = 10

#: Replay progress: (phase, events so far); phase "read" (decoded) then "write" (rows written).
ReplayProgress = Callable[[str, int], None]


def _first_two(row: tuple[Any, ...]) -> tuple[Any, Any]:
    return row[0], row[1]


def _no_fault(step: str) -> None:
    return None


def _no_progress(phase: str, events: int) -> None:
    return None


@dataclass
class BatchResult:
    events: int  # events consumed from the source (duplicates included)
    duplicates: int
    leads: int


@dataclass
class ReplayResult:
    events: int
    leads: int
    head: int  # the snapshot position: the checkpoint committed with the rows


class Runner:
    """Owns reading, batching, the transaction and the checkpoint; projections stay pure.

    The timeline table holds every lead's facts folded so far (metric order): it is what
    de-duplicates (a lead's version seen before is skipped), what a projection's fold gets
    as history, what a single projection is rebuilt from, and what the exact known-at path
    reads. A copy of recently used timelines stays in memory while no other writer commits.
    """

    def __init__(self, db: ReadModelDB, projections: Sequence[Projection] = PROJECTIONS,
                 fault: Fault | None = None) -> None:
        self.db = db
        self.projections = tuple(projections)
        self.fault = fault or _no_fault
        self._insert_sql: dict[str, str] = {}
        self._tables: dict[str, Table] = {}
        for p in self.projections:
            for t in p.tables:
                self._tables[t.name] = t
                self._insert_sql[t.name] = db.insert_sql(t)
        self._timeline_sql = db.insert_sql(TIMELINE)
        self._checkpoint_sql = db.insert_sql(CHECKPOINTS)
        self._cache: dict[str, tuple[int, list[Fact]]] = {}
        self._cache_mark: list[tuple[Any, ...]] | None = None  # checkpoints when the cache was valid
        self._next_no: int | None = None
        self._complete = False  # the cache holds every lead's timeline (rebuilt from zero by us)

    @property
    def all_tables(self) -> tuple[Table, ...]:
        return (*RUNNER_TABLES, *self._tables.values())

    # ---- schema and definitions ----------------------------------------------

    def setup(self) -> list[str]:
        """Create missing tables; rebuild (from the timelines) projections whose definition changed.

        Returns the names rebuilt."""
        with self.db.transaction(lock_key="runner"):
            self.db.create(self.all_tables)
            stored = dict(self.db.query(f"SELECT name, version FROM {self.db.name(REGISTRY.name)}"))
            empty = not self.db.query(f"SELECT 1 FROM {self.db.name(TIMELINE.name)} LIMIT 1")
            stale = [p.name for p in self.projections if stored.get(p.name) != p.version]
            if stale and empty:
                self.db.executemany(self.db.insert_sql(REGISTRY), [(p.name, p.version) for p in self.projections])
                return []
            if stale:
                self._rebuild_from_timelines(stale)
        return stale

    def reset(self, names: Iterable[str] | None = None) -> None:
        """All read models (None): drop every table, timelines and checkpoints included, so the
        next run re-reads the source from zero (`replay` does that and the run in one go).
        Named projections: drop their tables and re-derive them now from the stored timelines
        (which are consistent with the checkpoint)."""
        self._invalidate()
        with self.db.transaction(lock_key="runner"):
            if names is None:
                self.db.drop(self.all_tables)
                self.db.create(self.all_tables)
                self.db.executemany(self.db.insert_sql(REGISTRY), [(p.name, p.version) for p in self.projections])
            else:
                self._rebuild_from_timelines(list(names))
        if names is None:
            self._cache_mark, self._next_no, self._complete = [], 1, True

    def _rebuild_from_timelines(self, names: list[str]) -> int:
        chosen = [self._projection(n) for n in names]
        tables = [t for p in chosen for t in p.tables]
        self.db.drop(tables)
        self.db.create(tables)
        pending: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in tables}
        leads = 0
        for lead, facts in self.timelines():
            leads += 1
            for p in chosen:
                seen = [f for f in facts if f.name in p.handles]
                if seen:
                    for table, rows in p.fold(lead, [], seen).rows.items():
                        pending[table].extend(rows)
            if leads % 5000 == 0:
                self._flush(pending)
        self._flush(pending)
        self.db.executemany(self.db.insert_sql(REGISTRY), [(p.name, p.version) for p in chosen])
        return leads

    def _flush(self, pending: dict[str, list[tuple[Any, ...]]]) -> None:
        for table, rows in pending.items():
            self.db.executemany(self._insert_sql[table], rows)
            rows.clear()

    def _projection(self, name: str) -> Projection:
        for p in self.projections:
            if p.name == name:
                return p
        raise KeyError(f"unknown projection {name!r}; known: {', '.join(p.name for p in self.projections)}")

    # ---- checkpoints ---------------------------------------------------------

    def checkpoints(self, source_name: str) -> dict[int, int]:
        rows = self.db.query(
            f"SELECT partition_no, position_no FROM {self.db.name(CHECKPOINTS.name)} WHERE source_name = ?",
            (source_name,))
        return {int(p): int(pos) for p, pos in rows}

    def _all_checkpoints(self) -> list[tuple[Any, ...]]:
        return sorted(self.db.query(
            f"SELECT source_name, partition_no, position_no FROM {self.db.name(CHECKPOINTS.name)}"))

    def _invalidate(self) -> None:
        self._cache.clear()
        self._cache_mark = None
        self._next_no = None
        self._complete = False

    # ---- running -------------------------------------------------------------

    def run_batch(self, source: Source, limit: int = 5000) -> BatchResult:
        """Fold the next batch (at most `limit` events) and commit it; 0 events when caught up."""
        # Nothing new (a query's catch-up, a follow-mode poll): found out with two reads, without
        # queueing on the read models' write lock behind other runners and readers' catch-ups
        if source.remaining(self.checkpoints(source.name)) == 0:
            return BatchResult(0, 0, 0)
        # A batch allocates many small objects and no cycles; the cyclic collector would only
        # re-scan the timeline cache again and again (a third of the time of a replay).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run_batch(source, limit)
        finally:
            if collecting:
                gc.enable()

    def _run_batch(self, source: Source, limit: int) -> BatchResult:
        try:
            with self.db.transaction(lock_key="runner"):
                marks = self._all_checkpoints()
                if marks != self._cache_mark:
                    self._invalidate()  # another writer committed since: the cache may be stale
                after = {int(p): int(pos) for name, p, pos in marks if name == source.name}
                events = source.read(after, limit)
                if not events:
                    self._cache_mark = marks
                    return BatchResult(0, 0, 0)
                result, updates = self._apply(events)
                self.fault("checkpoint")
                positions = dict(after)
                for e in events:
                    if e.position > positions.get(e.partition, -1):
                        positions[e.partition] = e.position
                self.db.executemany(self._checkpoint_sql,
                                    [(source.name, part, pos) for part, pos in sorted(positions.items())])
                self.fault("commit")
        except BaseException:
            self._invalidate()
            raise
        if len(self._cache) + len(updates) > CACHE_LEADS:
            self._cache.clear()
            self._complete = False
        self._cache.update(updates)
        self._cache_mark = sorted({(n, p): (n, p, pos) for n, p, pos in
                                   [*marks, *((source.name, part, pos) for part, pos in positions.items())]
                                   }.values())
        return result

    def catch_up(self, source: Source, batch: int = 5000,
                 progress: Callable[[BatchResult], None] | None = None) -> int:
        """Run batches until the source has nothing new; returns events consumed."""
        total = 0
        while True:
            result = self.run_batch(source, batch)
            if result.events == 0:
                return total
            total += result.events
            if progress is not None:
                progress(result)

    # ---- replay from zero ------------------------------------------------------

    def replay(self, source: EmbeddedSource, progress: ReplayProgress | None = None,
               workers: int = REPLAY_WORKERS) -> ReplayResult:
        """Drop every read model and rebuild it from a snapshot of `source`, in ONE transaction.

        The snapshot is the source's head when the replay starts: every event at or before it
        is folded (each lead once, with its whole history) and the checkpoint is set to it in
        the same transaction, so the next catch-up picks up exactly the events stored since.
        A crash or an error anywhere rolls everything back: the read models stay as they were
        before the replay (SQLite readers keep seeing them meanwhile; other runners wait).

        The decoded snapshot is held in memory while it is folded (some 450 MB per million
        events, split over the workers); the SQLite page cache grows to the whole build."""
        tick = progress or _no_progress
        head = source.head()
        forked = workers > 1 and source.scan_in_child and "fork" in multiprocessing.get_all_start_methods()
        collecting = gc.isenabled()
        gc.disable()  # millions of small acyclic objects: the collector would only re-scan them
        self._invalidate()
        try:
            # the workers start reading before the write transaction begins (which may have to
            # wait for another runner's batch to commit)
            with (_replay_workers(source, head, source.split(head, workers), self.projections, self.fault) if forked
                  else _no_workers()) as crew, self.db.bulk_load(), self.db.transaction(lock_key="runner"):
                tables = self.all_tables
                self.db.drop(tables)
                # secondary indexes are built after the load: sorted once, their pages come out
                # full and in order (maintained row by row they cost as much, and answer slower)
                self.db.create(tables, indexes=False)
                self.db.executemany(self.db.insert_sql(REGISTRY), [(p.name, p.version) for p in self.projections])
                self.fault("replay:start")
                if crew is not None:
                    events, leads = self._replay_forked(crew, tick)
                else:
                    events, leads = self._replay_inline(source, head, tick)
                self.fault("replay:indexes")
                for table in tables:
                    for stmt in self.db.index_ddl(table):
                        self.db.execute(stmt)
                self.fault("replay:checkpoint")
                if head:
                    self.db.executemany(self._checkpoint_sql, [(source.name, 0, head)])
                self.fault("replay:commit")
        finally:
            if collecting:
                gc.enable()
        return ReplayResult(events, leads, head)

    def _replay_inline(self, source: EmbeddedSource, head: int, tick: ReplayProgress) -> tuple[int, int]:
        """Read the snapshot, then fold and write the leads in order of first appearance."""
        by_lead: dict[str, list[Fact]] = {}
        events = 0
        for batch in source.scan(head):
            for _, lead_id, fact in batch:
                facts = by_lead.get(lead_id)
                if facts is None:
                    by_lead[lead_id] = [fact]
                else:
                    facts.append(fact)
            events += len(batch)
            tick("read", events)
        deriver = Deriver(self.projections)
        out = deriver.empty()
        written = pending = 0
        chunk = _chunk_size(len(by_lead))
        for lead_no, (lead_id, facts) in enumerate(by_lead.items(), start=1):
            pending += deriver.add(lead_no, lead_id, facts, out)
            if lead_no % chunk == 0 or lead_no == len(by_lead):
                self.fault("replay:write")
                self._load(deriver.tables, out)
                out = deriver.empty()
                written, pending = written + pending, 0
                tick("write", written)
        return events, len(by_lead)

    def _replay_forked(self, crew: _Crew, tick: ReplayProgress) -> tuple[int, int]:
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
                    rows.sort(key=by_lead_no)  # sorted runs, one per worker: a merge; key order = b-tree order
                self.db.load(table, rows)
            written += sum(n for n, _ in parts)
            tick("write", written)
        return events, leads

    def _load(self, tables: Sequence[Table], out: list[list[tuple[Any, ...]]]) -> None:
        for table, rows in zip(tables, out, strict=True):
            self.db.load(table, rows)

    # ---- the fold of one batch -----------------------------------------------

    def _load_timelines(self, lead_ids: list[str]) -> dict[str, tuple[int, list[Fact]]]:
        found: dict[str, tuple[int, list[Fact]]] = {}
        missing = []
        for lead_id in lead_ids:
            cached = self._cache.get(lead_id)
            if cached is None:
                missing.append(lead_id)
            else:
                found[lead_id] = cached
        table = self.db.name(TIMELINE.name)
        if not missing or self._complete:
            return found  # the cache holds every lead: the missing ones are new
        if self.db.dialect == "postgres":
            for no, lead_id, facts in self.db.query(
                    f"SELECT lead_no, lead_id, facts FROM {table} WHERE lead_id = ANY(?)", (missing,)):
                found[lead_id] = (int(no), unpack(facts))
            return found
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            for no, lead_id, facts in self.db.query(
                    f"SELECT lead_no, lead_id, facts FROM {table} WHERE lead_id IN ({','.join('?' * len(chunk))})",
                    chunk):
                found[lead_id] = (int(no), unpack(facts))
        return found

    def _apply(self, events: list[SourceEvent]) -> tuple[BatchResult, dict[str, tuple[int, list[Fact]]]]:
        by_lead: dict[str, list[Fact]] = {}
        for e in events:
            by_lead.setdefault(e.lead_id, []).append(e.fact)
        self.fault("load")
        stored = self._load_timelines(list(by_lead))
        if self._next_no is None:
            max_row = self.db.query(f"SELECT MAX(lead_no) FROM {self.db.name(TIMELINE.name)}")
            self._next_no = int(max_row[0][0] or 0) + 1
        next_no = self._next_no
        projections = self.projections
        readers: dict[str, tuple[int, ...]] = {}  # event name -> the projections that handle it
        rows: dict[str, list[tuple[Any, ...]]] = {}
        replaced: dict[str, list[int]] = {}
        timeline_rows: list[tuple[Any, ...]] = []
        updates: dict[str, tuple[int, list[Fact]]] = {}
        duplicates = 0
        for lead_id, batch in by_lead.items():
            found = stored.get(lead_id)
            if found is None:
                lead_no, timeline = next_no, list[Fact]()
                next_no += 1
                top = 0
            else:
                lead_no, timeline = found
                top = max(f.version for f in timeline) if timeline else 0
            fresh: list[Fact] = []
            known: set[int] | None = None
            ordered = True  # the merged timeline stays sorted by appending
            last = timeline[-1] if timeline else None
            for f in batch:
                if f.version <= top:  # seen before (re-delivered), or a late gap-filler: check
                    if known is None:
                        known = {g.version for g in timeline} | {g.version for g in fresh}
                    if f.version in known:
                        duplicates += 1
                        continue
                    known.add(f.version)
                else:
                    top = f.version
                    if known is not None:
                        known.add(f.version)
                # distinct events of one lead never tie on (occurred, version): tuple order is metric order
                if last is not None and f < last:
                    ordered = False
                else:
                    last = f
                fresh.append(f)
            if not fresh:
                continue
            news: dict[int, list[Fact]] = {}
            for f in fresh:
                handled_by = readers.get(f.name)
                if handled_by is None:
                    handled_by = readers[f.name] = tuple(
                        i for i, p in enumerate(projections) if f.name in p.handles)
                for i in handled_by:
                    news.setdefault(i, []).append(f)
            if news:
                lead = Lead(lead_no, lead_id)
                for i, new in sorted(news.items()):
                    projection = projections[i]
                    handles = projection.handles
                    history = [f for f in timeline if f.name in handles]
                    self._collect(projection, projection.fold(lead, history, new), lead_no, rows, replaced)
            merged = timeline + fresh
            if not ordered:
                merged.sort()
            updates[lead_id] = (lead_no, merged)
            timeline_rows.append((lead_no, lead_id, pack(merged)))
        self._write(rows, replaced, timeline_rows)
        self._next_no = next_no
        return BatchResult(len(events), duplicates, len(by_lead)), updates

    @staticmethod
    def _collect(projection: Projection, changes: Changes, lead_no: int,
                 rows: dict[str, list[tuple[Any, ...]]], replaced: dict[str, list[int]]) -> None:
        if changes.replace_lead:
            for table in projection.tables:
                replaced.setdefault(table.name, []).append(lead_no)  # each lead is folded once per batch
        for table_name, new_rows in changes.rows.items():
            rows.setdefault(table_name, []).extend(new_rows)

    def _write(self, rows: dict[str, list[tuple[Any, ...]]], replaced: dict[str, list[int]],
               timeline_rows: list[tuple[Any, ...]]) -> None:
        for table_name, lead_nos in replaced.items():
            self.fault(f"delete:{table_name}")
            self.db.executemany(f"DELETE FROM {self.db.name(table_name)} WHERE lead_no = ?",
                                [(n,) for n in lead_nos])
        self.fault("timeline")
        self.db.executemany(self._timeline_sql, timeline_rows)
        for table_name, table_rows in rows.items():
            self.fault(f"rows:{table_name}")
            table_rows.sort(key=_first_two)  # key order: b-tree pages are touched once each
            self.db.executemany(self._insert_sql[table_name], table_rows)

    # ---- reading back --------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return self.db.dump(self.all_tables)

    def timelines(self) -> Iterable[tuple[Lead, list[Fact]]]:
        """Every lead's facts (metric order), for rebuilds and the exact known-at path."""
        table = self.db.name(TIMELINE.name)
        last = 0
        while True:
            rows = self.db.query(
                f"SELECT lead_no, lead_id, facts FROM {table} WHERE lead_no > ? ORDER BY lead_no LIMIT 2000", (last,))
            if not rows:
                return
            for no, lead_id, blob in rows:
                yield Lead(int(no), lead_id), unpack(blob)
            last = int(rows[-1][0])


# ---------------------------------------------------------------- replay: folding whole leads


def _chunk_size(leads: int) -> int:
    return max(1, min(REPLAY_CHUNK, -(-leads // 30)))


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

    def add(self, lead_no: int, lead_id: str, facts: list[Fact], out: list[list[tuple[Any, ...]]]) -> int:
        """Append the lead's rows (timeline first) to `out`, per table; returns its events.
        `facts`: each version once (the store's key is (lead, version)), in any order."""
        facts.sort()  # metric order
        out[0].append((lead_no, lead_id, pack(facts)))
        lead = Lead(lead_no, lead_id)
        slot = self._slot
        for projection, handles in self._folds:
            seen = [f for f in facts if f.name in handles]
            if seen:
                for table, rows in projection.fold(lead, [], seen).rows.items():
                    out[slot[table]].extend(rows)
        return len(facts)


class _Crew:
    """The replay workers, each reading, decoding and folding one partition of the leads."""

    def __init__(self, procs: list[Any], conns: list[Connection], scanned: list[Any]) -> None:
        self.procs, self.conns, self._scanned = procs, conns, scanned

    def scanned(self) -> int:
        return sum(int(v.value) for v in self._scanned)

    def gather(self, waiting: Callable[[], None] | None = None) -> list[Any]:
        """The next message of every worker, in worker order."""
        out = []
        for proc, conn in zip(self.procs, self.conns, strict=True):
            while waiting is not None and not conn.poll(0.1):
                waiting()
            try:
                kind, payload = marshal.loads(conn.recv_bytes())
            except (EOFError, OSError) as exc:
                proc.join(timeout=5)
                raise RuntimeError(f"replay worker {proc.pid} died (exit code {proc.exitcode})") from exc
            if kind == "corrupt":
                raise CorruptEvent(payload)
            if kind == "error":
                raise RuntimeError(f"replay worker {proc.pid} failed: {payload}")
            out.append(payload)
        return out

    def tell(self, messages: list[Any]) -> None:
        for conn, message in zip(self.conns, messages, strict=True):
            conn.send_bytes(marshal.dumps(message))


@contextmanager
def _no_workers() -> Iterator[None]:
    yield None


@contextmanager
def _replay_workers(source: EmbeddedSource, head: int, ranges: list[LeadRange], projections: Sequence[Projection],
                    fault: Fault) -> Iterator[_Crew]:
    ctx: Any = multiprocessing.get_context("fork")  # the children need this process's objects, not a re-import
    writer = os.getpid()
    procs, conns, scanned = [], [], []
    try:
        for part, leads in enumerate(ranges):
            mine, theirs = ctx.Pipe()
            counter = ctx.RawValue("q", 0)
            proc = ctx.Process(target=_replay_worker, daemon=True, name=f"leadledger-replay-{part}",
                               args=(theirs, writer, source, head, leads, projections, counter, fault))
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(mine)
            scanned.append(counter)
        yield _Crew(procs, conns, scanned)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()  # after an error here; a finished worker has exited already
        for proc, conn in zip(procs, conns, strict=False):
            proc.join(timeout=10)
            conn.close()


def _replay_worker(conn: Connection, writer: int, source: EmbeddedSource, head: int, leads: LeadRange,
                   projections: Sequence[Projection], scanned: Any, fault: Fault) -> None:
    """A forked worker: read and decode the events of its range of leads up to the head, group
    them by lead; send each lead's first position; get the lead numbers back; then fold and send
    the rows chunk by chunk (the leads numbered in chunk k, for every k, so the writer can merge)."""
    gc.disable()
    _die_with(writer)
    try:
        by_lead: dict[str, list[Fact]] = {}
        firsts: list[int] = []
        events = 0
        for batch in source.scan(head, leads):
            for position, lead_id, fact in batch:
                facts = by_lead.get(lead_id)
                if facts is None:
                    by_lead[lead_id] = [fact]
                    firsts.append(position)
                else:
                    facts.append(fact)
            events += len(batch)
            scanned.value = events
        fault("replay:scanned")
        conn.send_bytes(marshal.dumps(("firsts", (events, firsts))))
        del firsts
        numbers, chunk, chunks = marshal.loads(conn.recv_bytes())
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
                lead_id, facts = next(todo)
                n += deriver.add(numbers[i], lead_id, facts, out)
                i += 1
            fault("replay:folded")
            conn.send_bytes(marshal.dumps(("rows", (n, out))))
    except CorruptEvent as exc:
        _report(conn, "corrupt", str(exc))
    except BaseException as exc:
        _report(conn, "error", f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _die_with(writer: int) -> None:
    """Linux: the kernel kills this worker when the writer dies (SIGKILL included), instead of
    leaving it reading the store until its next message finds the pipe closed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != writer:  # it died before that took effect
        os._exit(1)


def _report(conn: Connection, kind: str, message: str) -> None:
    with suppress(OSError):  # the writer is gone
        conn.send_bytes(marshal.dumps((kind, message)))
