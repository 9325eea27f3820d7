"""The analyst API the CLI, the HTTP server and the HTML report call (docs/contract.md shapes).

Without --known-at every query is SQL over rows precomputed at projection time
and cut at T (`entered_at <= T`, `left_at <= T`, `converted_at <= T`, ...): the
rows of a lead depend only on its events up to the row's own event in metric
order, and "occurred at or before T" keeps a per-lead prefix. With --known-at
that is no longer a prefix, so the rows are re-derived exactly from the stored
facts visible at (T, K) into temporary tables and the same SQL runs on those;
the funnel re-derives only the leads whose live rows cut at K are not their rows
known then (`funnel.LATE`) and reads the others' from its counts: a cell of days
whose rows were all recorded by K is summed, the rest refined down to rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from lifecycle.audit import history as lead_history
from lifecycle.domain.stages import FUNNEL_ORDER
from lifecycle.operations.policy import Policy
from lifecycle.policies import PolicyTimeline, Published
from lifecycle.store.repository import LeadStore
from projections import (
    attribution,
    drill,
    funnel,
    leads,
    pipeline,
    plan,
    qualification,
    reasons,
    sla,
    speed,
    velocity,
    windows,
)
from projections.base import Lead, Projection, Table
from projections.engine.db import ReadModelDB
from projections.engine.registry import BY_NAME
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from projections.engine.timeline import TIMELINE
from projections.money import FxTable
from projections.query import Query, QueryError, Window, check, check_attribution, check_leads, check_reasons
from schemas.codec import format_time
from schemas.facts import Fact, dt_to_us, unpack

__all__ = ["Analytics", "Query", "QueryError"]

log = logging.getLogger("leadledger.projections")

DEFAULT_BATCH = 20_000


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def visible_facts(facts: Sequence[Fact], as_of: int | None, known_at: int | None) -> list[Fact]:
    return [f for f in facts
            if (as_of is None or f.occurred <= as_of) and (known_at is None or f.recorded <= known_at)]


class Analytics:
    """Read models plus (embedded) the event store they are caught up from."""

    def __init__(self, db: ReadModelDB, store: LeadStore | None, *, auto_refresh: bool = True,
                 batch_size: int = DEFAULT_BATCH, fx: FxTable | None = None,
                 policies: Callable[[], Sequence[Published]] | None = None) -> None:
        self.db = db
        self.store = store
        #: reads the published policy versions (each query: a version published meanwhile counts); None: none
        self.policy_versions = policies
        self._policies = PolicyTimeline([])
        #: the reporting currency and the rates revenue is converted at (default: EUR, no rates)
        self.fx = fx or FxTable()
        self.auto_refresh = auto_refresh
        self.batch_size = batch_size
        self.runner = Runner(db)
        stale = self.runner.setup()
        if stale:
            log.info("built read models %s from the stored timelines", ", ".join(stale))
        self.source = EmbeddedSource(store) if store is not None else None

    # ---- freshness -----------------------------------------------------------

    def refresh(self) -> int:
        """Catch up from the event store (embedded); returns the events applied."""
        if self.source is None:
            return 0
        return self.runner.catch_up(self.source, self.batch_size)

    def _fresh(self) -> None:
        if self.auto_refresh:
            self.refresh()

    # ---- queries -------------------------------------------------------------

    def funnel(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """Distinct leads per stage; with `q.interval` also one funnel per week or month of the window,
        with `q.compare_to` also the other window's funnel and the differences. By owner, each stage entry
        counts under the owner the lead had when it entered the stage. The counts of whole days are read
        from the pre-aggregated counts; with --known-at too, cut at K (`funnel.known_counts`), but for the
        leads `funnel.LATE` lists, whose rows are re-derived (`_known_at_rows`); --interval counts the rows. `from_rows` counts
        every entry row instead, re-derived for every lead with --known-at (the references the fast paths
        are tested against)."""
        w = check(q, bys=funnel.BYS)
        if q.compare_to is not None:
            return self._compared(lambda other: self.funnel(other, from_rows), q)
        rows = []
        if w.known_at is not None and not from_rows:
            sources = self._known_at_rows(w, "funnel", funnel.ENTRIES, funnel.LATE)
            rows = self._known_funnel(w, sources)
        else:
            tables = self._tables(w, BY_NAME["funnel"])
            sources = [(tables[funnel.ENTRIES.name], None)]
            if from_rows:
                rows = self._funnel_rows(w, sources)
            else:
                found = []
                for text, params in funnel.counts_sql(w, tables[funnel.COUNTS.name], sources[0][0]):
                    found += self.db.query(text, params)
                rows = funnel.regroup_all(found)
        answer = funnel.shape(w, rows)
        if q.interval is not None:
            answer["interval"] = q.interval
            answer["intervals"] = self._funnel_intervals(w, q.interval, sources)
        return answer

    def _funnel_rows(self, w: Window, sources: Sequence[tuple[str, str | None]],
                     sign: int = 1) -> list[tuple[Any, str, int]]:
        """(key, stage, count) of the entries `funnel.counted` describes in each (table, late) source."""
        rows = []
        for stage in FUNNEL_ORDER:
            for table, late in sources:
                for text, params in funnel.query_sql(w, table, late):
                    rows += [(key, st, sign * n) for key, st, n in
                             funnel.regroup(w.by, stage.value, self.db.query(text, [stage.value, *params]))]
        return rows

    def _known_funnel(self, w: Window, sources: Sequence[tuple[str, str | None]]) -> list[tuple[Any, str, int]]:
        """The funnel at (T, K) from the counts: every lead's live rows recorded by K (`funnel.known_counts`),
        but for the leads in `funnel.LATE` their re-derived rows instead of their live ones."""
        assert w.known_at is not None
        (live, late), (temp, _) = sources
        assert late is not None
        found = funnel.known_counts(w, self.db.name(funnel.COUNTS.name), self.db.name(funnel.RECORDED.name), live,
                                    self.db.query)
        rows = funnel.regroup_all(found)
        if self.db.query(f"SELECT 1 FROM {late} LIMIT 1"):
            theirs = (f"(SELECT * FROM {live} WHERE recorded_at <= {int(w.known_at)} AND lead_no IN "
                      f"(SELECT lead_no FROM {late})) AS late_live")
            rows += self._funnel_rows(w, [(theirs, None)], -1) + self._funnel_rows(w, [(temp, None)])
        net: dict[tuple[Any, str], int] = {}
        for key, stage, n in rows:
            net[key, stage] = net.get((key, stage), 0) + int(n)
        return [(key, stage, n) for (key, stage), n in net.items() if n]

    def _known_at_rows(self, w: Window, name: str, rows: Table, late_table: Table) -> list[tuple[str, str | None]]:
        """The rows of table `rows` of projection `name` known at (T, K), as (table, late) pairs for its
        query: the live rows (cut at K, but the leads in `late_table`), and those leads' rows re-derived
        from their facts visible at (T, K) into a temporary table."""
        self._fresh()
        projection = BY_NAME[name]
        live, late = self.db.name(rows.name), self.db.name(late_table.name)
        temp = self.db.create_temp([rows])[rows.name]
        insert = self.db.insert_sql(replace(rows, name=temp, upsert=False), temp=True)
        timeline = self.db.name(TIMELINE.name)
        pending: list[tuple[Any, ...]] = []
        # the few late leads first, then their timelines by key (a join may scan every timeline)
        late_nos = [int(no) for (no,) in self.db.query(f"SELECT lead_no FROM {late}")]
        for no, lead_id, blob in self.db.query_in(f"SELECT lead_no, lead_id, facts FROM {timeline}", "lead_no",
                                                  late_nos):
            seen = [f for f in visible_facts(unpack(blob), w.as_of, w.known_at) if f.name in projection.handles]
            if seen:
                pending += projection.derive_rows(Lead(int(no), lead_id), seen).rows.get(rows.name, ())
            if len(pending) > 20_000:
                self.db.executemany(insert, pending)
                pending.clear()
        self.db.executemany(insert, pending)
        return [(live, late), (temp, None)]

    def _known_at_view(self, w: Window, name: str, rows: Table, late_table: Table) -> str:
        """`_known_at_rows` as one table expression for a query's FROM: the live rows cut at K (but the
        leads in `late_table`) and those leads' rows re-derived, as one set."""
        assert w.known_at is not None
        (live, late), (temp, _) = self._known_at_rows(w, name, rows, late_table)
        columns = BY_NAME[name].known_columns(rows, w.known_at)
        return (f"(SELECT {columns} FROM {live} WHERE recorded_at <= {int(w.known_at)} AND lead_no NOT IN "
                f"(SELECT lead_no FROM {late}) UNION ALL SELECT * FROM {temp}) AS {rows.name}_known")

    def _funnel_intervals(self, w: Window, kind: str, sources: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
        start, end = w.start, w.end
        if start is None or end is None:
            spans = [self.db.query(*funnel.span_sql(w, table, late))[0] for table, late in sources]
            firsts = [int(first) for first, _ in spans if first is not None]
            lasts = [int(last) for _, last in spans if last is not None]
            if not firsts:
                return []
            start = windows.interval_start(kind, min(firsts)) if start is None else start
            end = windows.next_start(kind, windows.interval_start(kind, max(lasts))) if end is None else end
        bounds = windows.intervals(kind, start, end)
        if not bounds:
            return []
        span = replace(w, start=start, end=end)
        per: dict[int, list[tuple[Any, str, int]]] = {lo: [] for lo, _ in bounds}
        for stage in FUNNEL_ORDER:
            for table, late in sources:
                for text, params in funnel.interval_sql(span, table, bounds, late):
                    by_bucket: dict[int, list[tuple[Any, ...]]] = {}
                    for bucket, channel, campaign, count in self.db.query(text, [stage.value, *params]):
                        by_bucket.setdefault(int(bucket), []).append((channel, campaign, count))
                    for bucket, found in by_bucket.items():
                        per[bucket] += funnel.regroup(w.by, stage.value, found)
        out = []
        for lo, hi in bounds:
            shaped = funnel.shape(replace(w, start=lo, end=hi), per[lo])
            out.append({"label": windows.label(kind, lo), "from": shaped["from"], "to": shaped["to"],
                        "groups": shaped["groups"]})
        return out

    def _compared(self, ask: Callable[[Query], dict[str, Any]], q: Query) -> dict[str, Any]:
        """The answer for q's window, the same figures for the other window and the differences
        (current − other) per group of the whole windows; both at the same as-of (and known-at) time. With an
        interval, each window has its own intervals."""
        other = windows.compare_window(q)
        current = ask(replace(q, compare_to=None))
        theirs = ask(replace(q, compare_to=None, from_=other[0], to=other[1]))
        compare = {"from": format_time(other[0]), "to": format_time(other[1]), "groups": theirs["groups"],
                   **({"intervals": theirs["intervals"]} if "intervals" in theirs else {})}
        return {**current, "compare": compare,
                "difference": {"groups": windows.group_differences(current["groups"], theirs["groups"])}}

    def velocity(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """Time in stage and time to stage per group: from the counts per duration bucket where they answer
        the window (`velocity.counted_interval`), each percentile read from its bucket's rows; else, and with
        `from_rows` (the reference the counts are tested against), from the rows alone: with --known-at the
        live rows cut at K and the late leads' re-derived (`from_rows`: every lead's re-derived)."""
        w = check(q)
        if q.compare_to is not None:
            return self._compared(lambda other: self.velocity(other, from_rows), q)
        if w.known_at is not None and not from_rows:
            tables = {t.name: self._known_at_view(w, "velocity", t, velocity.LATE)
                      for t in (velocity.STAYS, velocity.FIRSTS)}
        else:
            tables = self._tables(w, BY_NAME["velocity"])
        if not from_rows and velocity.counted_interval(w) is not None:
            correlated = self.db.correlated_offset
            stays = velocity.Counted(w, "s", tables, self.db.query, correlated).compute()
            firsts = velocity.Counted(w, "f", tables, self.db.query, correlated).compute()
            return velocity.shape(w, stays, firsts)
        stays_rows = velocity.Stats(w, tables[velocity.STAYS.name], "duration_us", "left_at", self.db.query)
        firsts_rows = velocity.Stats(w, tables[velocity.FIRSTS.name], "since_capture_us", "entered_at", self.db.query)
        return velocity.shape(w, stays_rows.compute(), firsts_rows.compute())

    def attribution(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """Credit per group; with --known-at from the live rows cut at K and the re-derived rows of the
        leads `attribution.LATE` lists. `from_rows`: with --known-at, re-derive every lead's rows instead
        (the reference the fast path is tested against)."""
        w = check_attribution(q)
        if q.compare_to is not None:
            return self._compared(lambda other: self.attribution(other, from_rows), q)
        if w.known_at is not None and not from_rows:  # the live rows cut at K, the late leads' re-derived
            sources = self._known_at_rows(w, "attribution", attribution.CREDITS, attribution.LATE)
        else:
            sources = [(self._tables(w, BY_NAME["attribution"])[attribution.CREDITS.name], None)]
        found = []
        for table, late in sources:
            found += self.db.query(*attribution.query_sql(w, q.model, q.conversion, table, self.fx, late))
        return attribution.shape(w, q.model, q.conversion, found, self.fx)

    def speed(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """Speed to lead per group; with --known-at from the live rows cut at K and the re-derived rows of
        the leads `speed.LATE` lists (`from_rows`: re-derive every lead's rows instead, the reference the
        fast path is tested against)."""
        w = check(q, bys=("owner", "channel", "campaign"))
        if q.compare_to is not None:
            return self._compared(lambda other: self.speed(other, from_rows), q)
        tables = self._known_tables(w, BY_NAME["speed"], from_rows)
        known = [v for v in self.policies().versions if w.known_at is None or dt_to_us(v.recorded_at) <= w.known_at]
        return speed.compute(w, tables[speed.ASSIGNMENTS.name], tables[speed.RESPONSES.name], self.db.query,
                             tables[speed.WAITS.name], speed.routing_timeline(known))

    def qualification(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """MQL entries in [from, to) by source (scorer, external, override) and the MQL → won rate of each
        (--known-at: see `_known_tables`)."""
        w = qualification.check_qualification(q)
        tables = self._known_tables(w, BY_NAME["qualification"], from_rows)
        return qualification.compute(w, tables[qualification.ENTRIES.name], tables[qualification.WINS.name],
                                     self.db.query)

    def pipeline(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """The leads open at the as-of instant (mql, sal, sql) per owner, channel or campaign, and the
        expected value of those in sql in the reporting currency (--known-at: see `_known_tables`)."""
        w = pipeline.check_pipeline(q)
        tables = self._known_tables(w, BY_NAME["pipeline"], from_rows)
        return pipeline.compute(w, tables[pipeline.SPANS.name], self.db.query, self.fx)

    def sla(self, q: Query, now: datetime | None = None) -> dict[str, Any]:
        """SLA compliance per rule or owner, from every lead's timeline and the published policies
        (`now`: the evaluation instant without --as-of / --known-at; default the current time)."""
        w = sla.check_sla(q)
        self._fresh()
        return sla.compute(w, self.runner.timelines(), self.policies(), now or datetime.now(UTC))

    def plan(self, q: plan.PlanQuery, now: datetime | None = None, policy: Policy | None = None) -> dict[str, Any]:
        """What a revenue target for a period asks of each group, from the cohort captured in the lookback
        window before the as-of time (`now`: the as-of time when the query has none; default the current
        time). The capacity check uses `policy`, else the latest published policy."""
        w = plan.check_plan(q, now or datetime.now(UTC).replace(microsecond=0))
        version = None
        if policy is None:
            published = self.policies().latest
            policy, version = (published.policy, published.version) if published else (None, None)
        cohort = Query(by=q.by, from_=_dt(w.history_from), to=_dt(w.as_of), as_of=_dt(w.as_of))
        groups = self.funnel(cohort)["groups"]
        # the funnel above caught the read models up; a plan has no known-at, so these are the live tables
        names = {t.name: self.db.name(t.name) for t in (*BY_NAME["attribution"].tables, *BY_NAME["velocity"].tables)}
        firsts = names[velocity.FIRSTS.name]
        wins = self.db.query(*plan.wins_sql(w, names[attribution.CREDITS.name], firsts))
        times = self.db.query(*plan.time_to_won_sql(w, firsts))
        stays = self.db.query(*plan.open_time_sql(w, names[velocity.STAYS.name]))
        history = plan.history(w, groups, wins, times, stays, self.fx)
        return plan.compute(w, history, self.fx, policy, version, q.lookback)

    def policies(self) -> PolicyTimeline:
        """The published policy versions (parsed once per version while they stay the same)."""
        if self.policy_versions is None:
            return self._policies
        versions = list(self.policy_versions())
        if [v.hash for v in versions] != [v.hash for v in self._policies.versions]:
            self._policies = PolicyTimeline(versions)
        return self._policies

    def leads(self, q: Query) -> dict[str, Any]:
        if drill.asks_cell(q):
            return self.drill(q)
        w = check_leads(q)
        self._fresh()
        table = self.db.name(leads.LEADS.name)
        if w.as_of is None and w.known_at is None:
            text, params = leads.list_sql(q.stage, q.channel, q.owner, q.limit, table)
            return leads.shape(None, (leads.item(r) for r in self.db.query(text, params)))
        return leads.shape(w.as_of, self._leads_as_of(q, w))

    def drill(self, q: Query) -> dict[str, Any]:
        """The leads one funnel cell counts (`leads --reached`), a page at a time, each with its current
        stage and owner (at the as-of / known-at instant when one is given). With --known-at the cell's
        entries are the funnel's: its live rows cut at K, and the re-derived rows of the leads it lists
        as late (`_known_at_rows`)."""
        cell = drill.check_drill(q)
        w = cell.window
        if w.known_at is not None:  # the funnel's own known-at rows: the live ones cut at K, the late re-derived
            sources = self._known_at_rows(w, "funnel", funnel.ENTRIES, funnel.LATE)
        else:
            sources = [(self._tables(w, BY_NAME["funnel"])[funnel.ENTRIES.name], None)]
        ends = [int(found[0][0]) for text, params in drill.bound_sql(cell, sources)
                if (found := self.db.query(text, params))]
        bound = min(ends) if ends else None
        rows = self.db.query(*drill.page_sql(cell, sources, self.db.name(leads.LEADS.name), bound))
        if w.as_of is None and w.known_at is None:
            return drill.shape(cell, rows)
        timeline = self.db.name(TIMELINE.name)

        def facts_of(numbers: Sequence[int]) -> dict[int, Any]:
            return {int(no): blob for no, blob in self.db.query_in(
                f"SELECT lead_no, facts FROM {timeline}", "lead_no", list(numbers))}

        def row_of(no: int, lead_id: str, blob: Any) -> tuple[Any, ...] | None:
            return leads.lead_row(Lead(no, lead_id), visible_facts(unpack(blob), w.as_of, w.known_at))

        return drill.shape(cell, rows, drill.refolded(drill.page_leads(rows, cell.limit), facts_of, row_of))

    def history(self, lead_id: UUID, as_of: datetime | None = None,
                known_at: datetime | None = None) -> dict[str, Any] | None:
        """The history of one lead (from the event store), None if unknown."""
        if self.store is None:
            raise QueryError("history needs the event store (embedded mode)")
        return lead_history(self.store, lead_id, as_of, known_at)

    def reasons(self, q: Query, from_rows: bool = False) -> dict[str, Any]:
        """The reasons given by the events entering `q.stage` (lost, disqualified, recycled; rejected: the
        rejections by sales alone) that occurred in [from, to): per group, the events and each reason's count
        and share (--known-at: see `_known_tables`)."""
        w = check_reasons(q)
        assert q.stage is not None
        tables = self._known_tables(w, BY_NAME["reasons"], from_rows)
        text, params = reasons.query_sql(w, q.stage, tables[reasons.EVENTS.name])
        return reasons.shape(w, q.stage, self.db.query(text, params))

    def close(self) -> None:
        self.db.close()
        if self.store is not None:
            self.store.close()

    # ---- the exact known-at path ----------------------------------------------

    def _known_tables(self, w: Window, projection: Projection, from_rows: bool = False) -> dict[str, str]:
        """Names (or table expressions) to query: with --known-at and a projection that lists its late
        leads, each rows table as `_known_at_view` (unless `from_rows`); else `_tables`."""
        late = projection.late
        if w.known_at is None or late is None or from_rows:
            return self._tables(w, projection)
        return {t.name: self._known_at_view(w, projection.name, t, late)
                for t in projection.tables if t is not late and not t.summed}

    def _tables(self, w: Window, projection: Projection) -> dict[str, str]:
        """Names to query: the read model's tables, or temporary ones re-derived at (T, K)."""
        self._fresh()
        if not w.slow:
            return {t.name: self.db.name(t.name) for t in projection.tables}
        rows_tables = [t for t in projection.tables if not t.summed]  # the exact path reads rows, not counts
        names = self.db.create_temp(rows_tables)
        pending: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in rows_tables}
        inserts = {t.name: self.db.insert_sql(replace(t, name=names[t.name], upsert=False), temp=True)
                   for t in rows_tables}
        for lead, facts in self.runner.timelines():
            seen = [f for f in visible_facts(facts, w.as_of, w.known_at) if f.name in projection.handles]
            if not seen:
                continue
            for table, rows in projection.derive_rows(lead, seen).rows.items():
                pending[table].extend(rows)
            if sum(len(r) for r in pending.values()) > 20_000:
                self._flush(inserts, pending)
        self._flush(inserts, pending)
        return names

    def _flush(self, inserts: dict[str, str], pending: dict[str, list[tuple[Any, ...]]]) -> None:
        for table, rows in pending.items():
            self.db.executemany(inserts[table], rows)
            rows.clear()

    def _leads_as_of(self, q: Query, w: Window) -> list[dict[str, Any]]:
        """Newest first, each lead re-folded from its facts visible at (T, K)."""
        out: list[dict[str, Any]] = []
        table = self.db.name(leads.LEADS.name)
        conds, params = ("WHERE captured_at <= ?", [w.as_of]) if w.as_of is not None else ("", [])
        candidates = self.db.query(
            f"SELECT lead_no, lead_id FROM {table} {conds} ORDER BY captured_at DESC, lead_id DESC", params)
        timeline = self.db.name(TIMELINE.name)
        for i in range(0, len(candidates), 500):
            chunk = candidates[i:i + 500]
            blobs = {int(no): facts for no, facts in self.db.query(
                f"SELECT lead_no, facts FROM {timeline} WHERE lead_no IN ({','.join('?' * len(chunk))})",
                [int(no) for no, _ in chunk])}
            for no, lead_id in chunk:
                seen = visible_facts(unpack(blobs[int(no)]), w.as_of, w.known_at)
                row = leads.lead_row(Lead(int(no), lead_id), seen)
                if row is None:
                    continue
                entry = leads.item(row[1:])
                if leads.matches(entry, q.stage, q.channel, q.owner):
                    out.append(entry)
                    if len(out) >= q.limit:
                        return out
        return out
