"""The runner: feeds projections in batches and commits rows + checkpoint in ONE transaction;
`Runner.replay` takes the bulk road (`projections.engine.replay`) to the same tables."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.base import Changes, Lead, Projection, Table, summed
from projections.engine import chains
from projections.engine.chains import Chain
from projections.engine.checkpoints import MARKS, Checkpoints
from projections.engine.db import ReadModelDB
from projections.engine.registry import PROJECTIONS, REGISTRY, Registry, tables_of
from projections.engine.replay import REPLAY_WORKERS, Fault, Replay, ReplayProgress, ReplayResult
from projections.engine.sources import EmbeddedSource, Source, SourceEvent
from projections.engine.timeline import Timelines
from schemas.codec import CorruptEvent, corrupt_event
from schemas.facts import Fact, pack

#: Leads whose timelines the runner keeps in memory between batches (a cache; the table is the truth).
CACHE_LEADS = 400_000


def _first_two(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row[:2]  # a table of one column (a list of leads) has one


def _no_fault(step: str) -> None:
    return None


@dataclass
class BatchResult:
    events: int  # events consumed from the source (duplicates included)
    duplicates: int
    leads: int


class Runner:
    """Owns reading, batching, the transaction and the checkpoint; projections stay pure.

    Per batch: check the source is still the one the read models were built from (the hash of
    the event at the checkpoint, `Source.check_mark`), read events after the checkpoint (one
    position per source partition), group them by lead, load those leads' timelines (their facts
    and hash chain so far, `projections.engine.timeline`), check each new event's link to the
    lead's previous one (`projections.engine.chains`), let every projection fold the new facts,
    then write the timeline rows, the projections' rows and the new checkpoint together. A crash anywhere rolls the whole batch back; a restart
    resumes after the last committed checkpoint. A re-delivered event (same lead and version)
    is already in the timeline, so it changes nothing. A copy of recently used timelines stays
    in memory while no other writer commits.
    """

    def __init__(self, db: ReadModelDB, projections: Sequence[Projection] = PROJECTIONS,
                 fault: Fault | None = None) -> None:
        self.db = db
        self.projections = tuple(projections)
        self.fault = fault or _no_fault
        self.all_tables: tuple[Table, ...] = tables_of(self.projections)
        self._insert_sql = {t.name: db.insert_sql(t) for p in self.projections for t in p.tables}
        self._delete_sql = {name: f"DELETE FROM {db.name(name)} WHERE lead_no = ?" for name in self._insert_sql}
        self._summed = {t.name: t for p in self.projections for t in p.tables if t.summed}
        self._zero_sql = {name: db.zero_sql(t) for name, t in self._summed.items()}
        #: refreshed tables and their projections: written last, from the records the folds wrote for them
        self._refreshed = {t.name: (p, t) for p in self.projections for t in p.tables if t.refreshed}
        self._checkpoints = Checkpoints(db)
        self._registry = Registry(db)
        self._timelines = Timelines(db)
        self._cache: dict[str, tuple[int, list[Fact], Chain]] = {}
        self._cache_mark: list[tuple[str, int, int]] | None = None  # checkpoints when the cache was valid
        self._next_no: int | None = None
        self._complete = False  # the cache holds every lead's timeline (rebuilt from zero by us)

    # ---- schema and definitions ----------------------------------------------

    def setup(self) -> list[str]:
        """Create missing tables; rebuild (from the timelines) projections whose definition changed.
        Read models built by an older engine (its tables differ) are dropped: the next catch-up
        reads the source from zero (`leadledger replay` does it faster).

        Returns the names rebuilt."""
        with self.db.transaction(lock_key="runner"):
            if not (self.db.exists(REGISTRY.name) and self._registry.engine_current()):
                self._invalidate()
                self.db.drop(self.all_tables)
                self.db.create(self.all_tables)
                self._registry.record(self.projections)
                return []
            stored = self._registry.versions()
            stale = [p.name for p in self.projections if stored.get(p.name) != p.version]
            # a changed definition may index columns its old table lacks: create only the others
            rebuilt = {t.name for p in self.projections if p.name in stale for t in p.tables}
            self.db.create([t for t in self.all_tables if t.name not in rebuilt])
            if stale and self._timelines.empty():
                self._rebuild_from_timelines(stale)  # nothing to fold: new empty tables
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
                self._registry.record(self.projections)
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
        self._registry.record(chosen)
        return leads

    def _flush(self, pending: dict[str, list[tuple[Any, ...]]]) -> None:
        for table in sorted(pending, key=lambda name: name in self._refreshed):
            self._insert(table, pending[table])
            pending[table].clear()

    def _insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Write rows of one table; a summed table's rows are added up per key first, and a key whose
        number comes to 0 (after a re-derived lead's differences) loses its row. A refreshed table's
        rows go to its projection's `refresh`, after the other tables' rows are written."""
        refreshed = self._refreshed.get(table)
        if refreshed is not None:
            projection, t = refreshed
            for text, params in projection.refresh(t, rows, lambda u: self.db.name(u.name)):
                self.db.executemany(text, params)
            return
        if table not in self._summed:
            self.db.executemany(self._insert_sql[table], rows)
            return
        rows = sorted(summed(rows))
        self.db.executemany(self._insert_sql[table], rows)
        self.db.executemany(self._zero_sql[table], [row[:-1] for row in rows if row[-1] < 0])

    def _projection(self, name: str) -> Projection:
        for p in self.projections:
            if p.name == name:
                return p
        raise KeyError(f"unknown projection {name!r}; known: {', '.join(p.name for p in self.projections)}")

    # ---- checkpoints ---------------------------------------------------------

    def checkpoints(self, source_name: str) -> dict[int, int]:
        return self._checkpoints.read(source_name)

    def _invalidate(self) -> None:
        self._cache.clear()
        self._cache_mark = None
        self._next_no = None
        self._complete = False

    # ---- running -------------------------------------------------------------

    def run_batch(self, source: Source, limit: int = 5000) -> BatchResult:
        """Fold the next batch (at most `limit` events) and commit it; 0 events when caught up.

        Raises `StoreMismatch` when the source is not the one the read models were built from
        (`leadledger replay` rebuilds them), CorruptEvent for an event whose hash or link is wrong."""
        # Nothing new (a query's catch-up, a follow-mode poll): found out with a few reads, without
        # queueing on the read models' write lock behind other runners and readers' catch-ups
        marked = self._checkpoints.marked(source.name)
        for partition, (position, digest) in marked.items():
            if digest is not None:
                source.check_mark(partition, position, digest)
        if source.remaining({p: pos for p, (pos, _) in marked.items()}) == 0:
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
                marks = self._checkpoints.all()
                if marks != self._cache_mark:
                    self._invalidate()  # another writer committed since: the cache may be stale
                after = {p: pos for name, p, pos in marks if name == source.name}
                events = source.read(after, limit)
                if not events:
                    self._cache_mark = marks
                    return BatchResult(0, 0, 0)
                result, updates = self._apply(events, source)
                self.fault("checkpoint")
                positions = dict(after)
                at: dict[int, SourceEvent] = {}
                for e in events:
                    if e.position > positions.get(e.partition, -1):
                        positions[e.partition] = e.position
                        at[e.partition] = e
                self._checkpoints.set_many([(source.name, part, pos) for part, pos in sorted(positions.items())])
                self._checkpoints.mark_many([(source.name, part, e.position, e.digest)
                                             for part, e in sorted(at.items())])
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

    def replay(self, source: EmbeddedSource, progress: ReplayProgress | None = None,
               workers: int = REPLAY_WORKERS) -> ReplayResult:
        """Rebuild every read model from a snapshot of `source` beside the live tables, then swap.

        The snapshot is the source's head when the replay starts: every event at or before it
        is folded (each lead once, with its whole history) into new tables, a chunk of leads per
        short transaction, and the checkpoint set to it there; one short transaction then swaps
        them in. Batches (this runner's or others') and queries go on with the live tables
        meanwhile; from the new checkpoint the next catch-up picks up exactly the events stored
        since. A crash or an error anywhere before the swap leaves the live read models as
        they were. Memory stays bounded: a few chunks of leads at a time (`REPLAY_CHUNK`)."""
        self._invalidate()
        try:
            return Replay(self.db, self.projections, self.fault).run(source, progress, workers)
        finally:
            self._invalidate()

    # ---- the fold of one batch -----------------------------------------------

    def _load_timelines(self, lead_ids: list[str]) -> dict[str, tuple[int, list[Fact], Chain]]:
        found: dict[str, tuple[int, list[Fact], Chain]] = {}
        missing = []
        for lead_id in lead_ids:
            cached = self._cache.get(lead_id)
            if cached is None:
                missing.append(lead_id)
            else:
                found[lead_id] = cached
        if missing and not self._complete:  # else the cache holds every lead: the missing ones are new
            found.update(self._timelines.find(missing))
        return found

    def _apply(self, events: list[SourceEvent],
               source: Source) -> tuple[BatchResult, dict[str, tuple[int, list[Fact], Chain]]]:
        by_lead: dict[str, list[SourceEvent]] = {}
        for e in events:
            by_lead.setdefault(e.lead_id, []).append(e)
        gapless, where, link = source.gapless, source.where, chains.link
        self.fault("load")
        stored = self._load_timelines(list(by_lead))
        if self._next_no is None:
            self._next_no = self._timelines.last_lead_no() + 1
        next_no = self._next_no
        projections = self.projections
        readers: dict[str, tuple[int, ...]] = {}  # event name -> the projections that handle it
        rows: dict[str, list[tuple[Any, ...]]] = {}
        replaced: dict[str, list[int]] = {}
        timeline_rows: list[tuple[Any, ...]] = []
        updates: dict[str, tuple[int, list[Fact], Chain]] = {}
        duplicates = 0
        for lead_id, batch in by_lead.items():
            found = stored.get(lead_id)
            chain: Chain
            if found is None:
                lead_no, timeline, chain = next_no, list[Fact](), ()
                next_no += 1
                top = 0
            else:
                lead_no, timeline, chain = found
                top = max(f.version for f in timeline) if timeline else 0
            fresh: list[Fact] = []
            known: set[int] | None = None
            ordered = True  # the merged timeline stays sorted by appending
            last = timeline[-1] if timeline else None
            for e in batch:
                f = e.fact
                if f.version <= top:  # seen before (re-delivered), or a late gap-filler: check
                    if known is None:
                        known = {g.version for g in timeline} | {g.version for g in fresh}
                    if f.version in known:
                        seen = chains.known_hash(chain, f.version)
                        if seen is not None and seen != e.digest:
                            raise corrupt_event(lead_id, f.version, "it differs from the event of that version "
                                                "the read models hold (was the source replaced?)",
                                                where(e.partition, e.position))
                        duplicates += 1
                        continue
                    known.add(f.version)
                else:
                    top = f.version
                    if known is not None:
                        known.add(f.version)
                try:
                    chain = link(chain, lead_id, f.version, e.prev, e.digest, gapless)
                except CorruptEvent:  # again, to name where it was read
                    link(chain, lead_id, f.version, e.prev, e.digest, gapless, where(e.partition, e.position))
                    raise
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
            updates[lead_id] = (lead_no, merged, chain)
            timeline_rows.append((lead_no, lead_id, pack(merged), chains.encode(chain)))
        self._write(rows, replaced, timeline_rows)
        self._next_no = next_no
        return BatchResult(len(events), duplicates, len(by_lead)), updates

    @staticmethod
    def _collect(projection: Projection, changes: Changes, lead_no: int,
                 rows: dict[str, list[tuple[Any, ...]]], replaced: dict[str, list[int]]) -> None:
        if changes.replace_lead:
            for table in projection.tables:
                if table.per_lead:  # a summed table gets the differences instead
                    replaced.setdefault(table.name, []).append(lead_no)  # each lead is folded once per batch
        for table_name, new_rows in changes.rows.items():
            rows.setdefault(table_name, []).extend(new_rows)

    def _write(self, rows: dict[str, list[tuple[Any, ...]]], replaced: dict[str, list[int]],
               timeline_rows: list[tuple[Any, ...]]) -> None:
        for table_name, lead_nos in replaced.items():
            self.fault(f"delete:{table_name}")
            self.db.executemany(self._delete_sql[table_name], [(n,) for n in lead_nos])
        self.fault("timeline")
        self.db.executemany(self._timelines.upsert_sql, timeline_rows)
        for table_name in sorted(rows, key=lambda name: name in self._refreshed):  # refreshed ones last
            table_rows = rows[table_name]
            self.fault(f"rows:{table_name}")
            if table_name not in self._summed and table_name not in self._refreshed:  # (those sort their own)
                table_rows.sort(key=_first_two)  # key order: b-tree pages are touched once each
            self._insert(table_name, table_rows)

    # ---- reading back --------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows (for comparisons in tests), but the marks: they fingerprint the
        source, and runs over different sources of the same events compare equal."""
        return self.db.dump([t for t in self.all_tables if t is not MARKS])

    def timelines(self) -> Iterable[tuple[Lead, list[Fact]]]:
        """Every lead's facts (metric order), for rebuilds and the exact known-at path."""
        return self._timelines.each()
