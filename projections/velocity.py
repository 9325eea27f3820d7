"""Velocity: time in stage (completed stays) and time to stage (first entry - capture), docs/contract.md

A stay row is owned by the event that ends it (the lead's next stage change), so
`left_at <= T` keeps exactly the stays completed as of T; a first-entry row is
owned by the lead's first entry into mql, sal, sql or won.

Beside the rows, counts and sums of them per duration bucket (`BOUNDS`, a fixed partition of
durations), stage, group and cell of days of one time column (`COUNTS`): a velocity sums the cells
of whole days, reads the rows of partial days, finds the bucket holding each percentile's rank and
reads only that bucket's rows for the value at the rank (`Counted`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from lifecycle.domain.stages import FUNNEL_ORDER, STAGE_EVENTS, Stage
from projections.base import AppendProjection, Changes, Lead, Table, campaign_key, floor_div, null_key, summed
from projections.funnel import BLOCK, DAY, Interval, group_column, in_range, pieces, span, visible
from projections.query import Window
from schemas.facts import SECOND, Fact, format_us

TO_STAGES = (Stage.MQL, Stage.SAL, Stage.SQL, Stage.WON)
_TO_STAGE_NAMES = frozenset(s.value for s in TO_STAGES)

STAYS = Table(
    "rm_velocity_stays",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"), ("left_at", "int"),
     ("duration_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"), ("bucket", "int"),
     ("recorded_at", "int")),
    key=("lead_no", "version"),
    # percentiles walk these in value order (ORDER BY .. LIMIT 1 OFFSET rank-1), per grouping, within
    # the duration range of one bucket
    indexes=(("stage", "duration_us", "left_at", "captured_at"),
             ("stage", "channel", "duration_us", "left_at", "captured_at"),
             ("stage", "campaign", "duration_us", "left_at", "captured_at"),
             # the rows of one partial day (the counts' edges), by its time or by capture
             ("left_at", "captured_at", "stage", "channel", "campaign", "bucket", "duration_us"),
             ("captured_at", "left_at", "stage", "channel", "campaign", "bucket", "duration_us")),
)
FIRSTS = Table(
    "rm_velocity_firsts",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"),
     ("since_capture_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"),
     ("bucket", "int"), ("recorded_at", "int")),
    key=("lead_no", "version"),
    indexes=(("stage", "since_capture_us", "entered_at", "captured_at"),
             ("stage", "channel", "since_capture_us", "entered_at", "captured_at"),
             ("stage", "campaign", "since_capture_us", "entered_at", "captured_at"),
             ("entered_at", "captured_at", "stage", "channel", "campaign", "bucket", "since_capture_us"),
             ("captured_at", "entered_at", "stage", "channel", "campaign", "bucket", "since_capture_us")),
)
#: The rows (of both tables, `src` s: a stay, f: a first entry) captured after their own time (a capture
#: that arrived later in metric order than the row's events): the counts leave them out (so a row they
#: count has captured_at <= its time, and an as-of cut on its time cuts its capture too); every velocity
#: from the counts reads these from here instead.
ODD = Table(
    "rm_velocity_odd",
    (("lead_no", "int"), ("version", "int"), ("src", "text"), ("stage", "text"), ("value_us", "int"),
     ("at", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"), ("bucket", "int")),
    key=("lead_no", "version", "src"),
)
#: Counts of the rows above with a capture at or before their time, per `src` (s, f), `grain` (A: all
#: time, x 0; cD / cB: the capture's UTC day / block of BLOCK days, x its number; tD / tB: the row's
#: own time's day / block), `kind` of group (`g`: the capture's channel or campaign; `all`: g ''),
#: stage and duration bucket `b` (`bucket`): n rows; the rows with b = SUM_BUCKET hold
#: the sum of the cell's durations (µs) in n instead. `gnull` 1: g is NULL (stored as '').
COUNTS = Table(
    "rm_velocity_counts",
    (("src", "text"), ("grain", "text"), ("kind", "text"), ("x", "int"), ("stage", "text"), ("gnull", "int"),
     ("g", "text"), ("b", "int"), ("n", "int")),
    key=("src", "grain", "kind", "x", "stage", "gnull", "g", "b"),
    per_lead=False,
    summed=True,
)
#: the duration buckets' bounds (µs): bucket 0 holds durations below 0, bucket i (1 <= i < len(BOUNDS))
#: [BOUNDS[i-1], BOUNDS[i]), the last one durations from BOUNDS[-1] on: 2^(1/8) apart (9 %) from 1 µs
#: to 2^52 µs (142 years), a few hundred buckets
BOUNDS: tuple[int, ...] = tuple(sorted({0, *(round(2 ** (k / 8)) for k in range(52 * 8 + 1))}))
#: The leads whose stay and first-entry rows cut at the recording time are not their rows known then:
#: --known-at re-derives theirs from their timelines (`AppendProjection.late`).
LATE = Table("rm_velocity_late", (("lead_no", "int"),), key=("lead_no",))
SUM_BUCKET = -1
SRCS = {"s": (STAYS, "duration_us", "left_at"), "f": (FIRSTS, "since_capture_us", "entered_at")}


def bucket(us: int) -> int:
    return bisect_right(BOUNDS, us)


def bucket_range(b: int) -> Interval:
    """[lo, hi) of bucket b (None: unbounded)."""
    return (BOUNDS[b - 1] if b > 0 else None, BOUNDS[b] if b < len(BOUNDS) else None)


class Velocity(AppendProjection):
    name = "velocity"
    version = 3  # 2: the duration buckets, the counts and the odd rows; 3: recorded_at and the late leads
    handles = STAGE_EVENTS
    tables = (STAYS, FIRSTS, ODD, COUNTS, LATE)
    late = LATE
    bulk_built = (COUNTS,)

    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        """The rows, and what they change in the counts: +1 per new row; a lead whose rows are
        re-derived also takes back (-1) the rows its earlier events gave (those of `history` alone)."""
        changes = super().fold(lead, history, new)
        deltas = list(_cells_of(changes, 1))
        if changes.replace_lead and history:
            deltas += _cells_of(self._rows(lead, [], history), -1)
        if changes.replace_lead:  # the old rows' cells mostly cancel the new ones
            deltas = summed(deltas)
        if deltas:  # (the runner adds up a batch's numbers per key)
            changes.rows[COUNTS.name] = deltas
        return changes

    def bulk_sql(self, name: Callable[[Table], str]) -> list[str]:
        return counts_from_rows(name)

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        if f.stage is None:
            return
        cap_at = capture.occurred if capture else None
        channel = capture.channel if capture else None
        campaign = campaign_key(capture.campaign) if capture else None
        if i > 0:
            prev = facts[i - 1]  # every handled fact is a stage change
            d = f.occurred - prev.occurred
            yield STAYS.name, (lead.lead_no, f.version, prev.stage, prev.occurred, f.occurred,
                               d, cap_at, channel, campaign, bucket(d), f.recorded)
            if cap_at is not None and cap_at > f.occurred:
                yield ODD.name, (lead.lead_no, f.version, "s", prev.stage, d, f.occurred, cap_at, channel, campaign,
                                 bucket(d))
        if f.stage in _TO_STAGE_NAMES and capture is not None and all(
            facts[j].stage != f.stage for j in range(i)
        ):
            d = f.occurred - capture.occurred
            yield FIRSTS.name, (lead.lead_no, f.version, f.stage, f.occurred, d, cap_at, channel, campaign,
                                bucket(d), f.recorded)
            if capture.occurred > f.occurred:
                yield ODD.name, (lead.lead_no, f.version, "f", f.stage, d, f.occurred, cap_at, channel, campaign,
                                 bucket(d))


def _cells_of(changes: Changes, n: int) -> Iterator[tuple[Any, ...]]:
    for src, table in (("s", STAYS.name), ("f", FIRSTS.name)):
        for row in changes.rows.get(table, ()):
            yield from count_cells(src, row, n)


def count_cells(src: str, row: tuple[Any, ...], n: int) -> Iterator[tuple[Any, ...]]:
    """The counts rows (number n, and n times the duration in the sum rows) of one stay (src s) or
    first-entry (f) row; a row without a capture, or captured after its own time (`ODD`), counts nowhere."""
    if src == "s":
        _, _, stage, _, at, value, captured_at, channel, campaign, b, _ = row
    else:
        _, _, stage, at, value, captured_at, channel, campaign, b, _ = row
    if captured_at is None or captured_at > at:
        return
    c, t = captured_at // DAY, at // DAY
    total = n * value
    cells = (("A", 0), ("cD", c), ("cB", c // BLOCK), ("tD", t), ("tB", t // BLOCK))
    for kind, gnull, g in (("all", 0, ""), ("channel", int(channel is None), channel or ""),
                           ("campaign", int(campaign is None), campaign or "")):
        for grain, x in cells:
            yield src, grain, kind, x, stage, gnull, g, b, n
            yield src, grain, kind, x, stage, gnull, g, SUM_BUCKET, total


def counts_from_rows(name: Callable[[Table], str]) -> list[str]:
    """`count_cells` of every stay and first-entry row, added up per key, as SQL filling the empty
    counts table (`name(table)`: each table's name): per src and kind of group, the day cells (cD, tD)
    grouped from the rows, the number per bucket and the sum of the durations (kept unless 0) from
    one grouping; the coarser cells (A, cB from cD; tB from tD) grouped from the day cells."""
    counts = name(COUNTS)
    into = f"INSERT INTO {counts} ({', '.join(COUNTS.column_names)}) "
    stmts = []
    for src, (table, value, at) in SRCS.items():
        for kind in ("all", "channel", "campaign"):
            key = "0 AS gnull, '' AS g" if kind == "all" else null_key(kind)
            for grain, column in (("cD", "captured_at"), ("tD", at)):
                cells = (f"SELECT x, stage, gnull, g, bucket, COUNT(*) AS n, SUM(v) AS total FROM "
                         f"(SELECT {floor_div(column, DAY)} AS x, stage, {key}, bucket, {value} AS v "
                         f"FROM {name(table)} WHERE captured_at IS NOT NULL AND captured_at <= {at}) AS r "
                         f"GROUP BY x, stage, gnull, g, bucket")
                head = f"'{src}', '{grain}', '{kind}', x, stage, gnull, g"
                stmts.append(
                    f"WITH cells AS ({cells}) {into}"
                    f"SELECT {head}, bucket, n FROM cells UNION ALL "
                    f"SELECT {head}, {SUM_BUCKET}, SUM(total) FROM cells GROUP BY x, stage, gnull, g "
                    f"HAVING SUM(total) <> 0")
        for grain, x, day_grain in (("A", "0", "cD"), ("cB", floor_div("x", BLOCK), "cD"),
                                    ("tB", floor_div("x", BLOCK), "tD")):
            stmts.append(
                f"{into}SELECT '{src}', '{grain}', kind, xx, stage, gnull, g, b, SUM(n) FROM "
                f"(SELECT kind, {x} AS xx, stage, gnull, g, b, n FROM {counts} "
                f"WHERE src = '{src}' AND grain = '{day_grain}') AS c "
                f"GROUP BY kind, xx, stage, gnull, g, b HAVING SUM(n) <> 0")
    return stmts


class Stats:
    """Exact count, mean, p50, p90 per (group, stage) of one duration column.

    Count and sum come from one grouped scan; each percentile is the value at its rank,
    read with ORDER BY value LIMIT 1 OFFSET rank-1 along the (stage, group, value) index, so
    no duration leaves the database except the ones reported."""

    def __init__(self, w: Window, table: str, value: str, time_col: str,
                 query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]) -> None:
        self.w, self.table, self.value, self.query = w, table, value, query
        self.where, self.params = _where(w, time_col)

    def compute(self) -> list[tuple[Any, str, int, int, int, int]]:
        """(key, stage, count, sum, p50, p90) rows, values in µs."""
        g = group_column(self.w.by)
        # grouped in the order of the (stage, group, value) index: no sorting
        grouping = "stage" if self.w.by is None else f"stage, {g}"
        rows = self.query(f"SELECT {g} AS k, stage, COUNT(*), SUM({self.value}) FROM {self.table} "
                          f"WHERE {self.where} GROUP BY {grouping}", self.params)
        out = []
        same_group = "" if self.w.by is None else f" AND {g} = ?"
        pick = (f"SELECT {self.value} FROM {self.table} WHERE stage = ?{same_group} AND {self.where} "
                f"ORDER BY {self.value} {{}} LIMIT 1 OFFSET ?")
        ascending, descending = pick.format("ASC"), pick.format("DESC")
        for key, stage, count, total in rows:
            n = int(count)
            head = [stage] if self.w.by is None else [stage, key]
            values: dict[int, int] = {}
            p50, p90 = ranks(n)
            for rank in (p50, p90):
                if rank not in values:
                    # walk the index from the nearer end
                    if rank - 1 <= n - rank:
                        found = self.query(ascending, [*head, *self.params, rank - 1])
                    else:
                        found = self.query(descending, [*head, *self.params, n - rank])
                    values[rank] = int(found[0][0])
            out.append((None if self.w.by is None else key, stage, n, int(total), values[p50], values[p90]))
        return out


def ranks(n: int) -> tuple[int, int]:
    """The nearest ranks of p50 and p90 among n values: ceil(n/2), ceil(9n/10)."""
    return (n + 1) // 2, (9 * n + 9) // 10


# ---------------------------------------------------------------- velocity from the counts
#
# The rows a velocity reads, but for the few captured after their own time (`ODD`, read apart), have
# captured_at <= their time: then every window the counts answer is an interval of ONE column, split
# at UTC midnights into whole days (or blocks, or all time) summed from the counts and partial days
# read from the rows: cohort mode without as-of, the capture in [from, to); cohort mode with as-of
# and no from/to, the row's time at or before T (its capture is then too); period mode, the row's
# time in [from, to) and at or before T (its capture too). Cohort mode with as-of and a from or to
# reads the rows (`Stats`), as does known-at.


def counted_interval(w: Window) -> tuple[str, Interval] | None:
    """The column ('c': the capture, 't': the row's own time) and interval the counts answer `w` with;
    None when they do not."""
    if w.known_at is not None:
        return None
    if w.mode == "cohort":
        if w.as_of is None:
            return "c", (w.start, w.end)
        if w.start is None and w.end is None:
            return "t", (None, w.as_of + 1)
        return None
    end = w.end if w.as_of is None else w.as_of + 1 if w.end is None else min(w.end, w.as_of + 1)
    return "t", (w.start, end)


class Counted:
    """What `Stats` computes, from the counts: count, sum and the count per duration bucket of every
    (group, stage) from the cells of whole days (or blocks, or all time) plus the rows of the partial
    days at the interval's edges plus the odd rows; then each percentile's rank is found in a bucket,
    and the value at its rank within that bucket read from the rows in that bucket's duration range
    only (the (stage, group, duration) index walked from the nearer end of the bucket)."""

    def __init__(self, w: Window, src: str, tables: dict[str, str],
                 query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]], correlated: bool = False) -> None:
        plan = counted_interval(w)
        assert plan is not None
        self.w, self.src, self.query = w, src, query
        #: whether a subquery's OFFSET may name the outer query's columns (`ReadModelDB.correlated_offset`)
        self.correlated = correlated
        self.column, self.interval = plan
        table, self.value, self.time_col = SRCS[src]
        self.table, self.counts, self.odd = tables[table.name], tables[COUNTS.name], tables[ODD.name]
        self.where, self.params = _where(w, self.time_col)

    def tallies(self) -> dict[tuple[Any, str], tuple[dict[int, int], int]]:
        """(key, stage) -> (count per bucket, sum of durations)."""
        by = self.w.by
        g = group_column(by)
        out: dict[tuple[Any, str], tuple[dict[int, int], list[int]]] = {}

        def add(stage: str, key: Any, b: int, n: int, total: int) -> None:
            counts, acc = out.setdefault((None if by is None else key, stage), ({}, [0]))
            if b != SUM_BUCKET:
                counts[int(b)] = counts.get(int(b), 0) + int(n)
            acc[0] += int(total)

        for text, params in self._cell_statements():
            for stage, key, b, n in self.query(text, params):
                if b == SUM_BUCKET:
                    add(stage, key, b, 0, n)
                else:
                    add(stage, key, b, n, 0)
        rows_sql: list[tuple[str, list[Any]]] = []
        lo, hi = self.interval
        if not (lo is not None and hi is not None and lo >= hi):
            x = "captured_at" if self.column == "c" else self.time_col
            for edge in span(lo, hi).edges:
                rows_sql.append((f"SELECT stage, {g}, bucket, COUNT(*), SUM({self.value}) FROM {self.table} "
                                 f"WHERE captured_at IS NOT NULL AND captured_at <= {self.time_col} AND {x} >= ? "
                                 f"AND {x} < ? GROUP BY stage, {'' if by is None else g + ', '}bucket", list(edge)))
        conds, params = _conds(self.w, "at")
        rows_sql.append((f"SELECT stage, {g}, bucket, COUNT(*), SUM(value_us) FROM {self.odd} WHERE src = ? AND "
                         f"{' AND '.join(conds)} GROUP BY stage, {'' if by is None else g + ', '}bucket",
                         [self.src, *params]))
        for text, params in rows_sql:
            for stage, key, b, n, total in self.query(text, params):
                add(stage, key, b, n, total)
        return {k: (counts, acc[0]) for k, (counts, acc) in out.items() if sum(counts.values())}

    def _cell_statements(self) -> list[tuple[str, list[Any]]]:
        lo, hi = self.interval
        if lo is not None and hi is not None and lo >= hi:
            return []
        by = self.w.by
        if lo is None and hi is None:
            cells: list[tuple[str, int | None, int | None]] = [("A", None, None)]
        else:
            cells = [(self.column + level, first, stop) for level, first, stop in pieces(span(lo, hi))]
        select, group = ("CASE WHEN gnull = 1 THEN NULL ELSE g END", "stage, gnull, g, b") if by else ("NULL", "stage, b")
        out = []
        for grain, first, stop in cells:
            conds = ["src = ?", "grain = ?", "kind = ?"]
            params: list[Any] = [self.src, grain, by or "all"]
            if grain == "A":  # one cell: its rows are the sums
                conds.append("x = 0")
                out.append((f"SELECT stage, {select}, b, n FROM {self.counts} WHERE {' AND '.join(conds)}", params))
                continue
            if first is not None:
                conds.append("x >= ?")
                params.append(first)
            if stop is not None:
                conds.append("x < ?")
                params.append(stop)
            out.append((f"SELECT stage, {select}, b, SUM(n) FROM {self.counts} WHERE {' AND '.join(conds)} "
                        f"GROUP BY {group}", params))
        return out

    def compute(self) -> list[tuple[Any, str, int, int, int, int]]:
        """(key, stage, count, sum, p50, p90) rows, values in µs."""
        found: list[tuple[int, int, int, int]] = []  # (key, stage) index, count, p50, p90
        walks: list[Walk] = []
        slots: dict[tuple[int, int], int] = {}  # (index, rank) -> walk
        tallies = list(self.tallies().items())
        for i, ((key, stage), (counts, _)) in enumerate(tallies):
            n = sum(counts.values())
            p50, p90 = ranks(n)
            found.append((i, n, p50, p90))
            order = sorted(counts)
            for rank in (p50, p90):
                if (i, rank) in slots:
                    continue
                seen = 0
                for b in order:
                    if seen + counts[b] >= rank:
                        break
                    seen += counts[b]
                inside, size = rank - seen, counts[b]
                lo, hi = bucket_range(b)
                # walk the bucket from its nearer end
                desc, offset = (False, inside - 1) if inside - 1 <= size - inside else (True, size - inside)
                slots[i, rank] = len(walks)
                walks.append(Walk(stage, key, MIN_US if lo is None else lo, MAX_US if hi is None else hi - 1, desc,
                                  offset))
        values = self._read_correlated(walks) if self.correlated else self._read(walks)
        return [(tallies[i][0][0], tallies[i][0][1], n, tallies[i][1][1], values[slots[i, p50]], values[slots[i, p90]])
                for i, n, p50, p90 in found]

    def _read(self, walks: list[Walk]) -> list[int]:
        """The value each walk reads, one statement each."""
        g = group_column(self.w.by)
        same_group = "" if self.w.by is None else f" AND {g} = ?"
        pick = (f"SELECT {self.value} FROM {self.table} WHERE stage = ?{same_group} AND {self.value} >= ? AND "
                f"{self.value} <= ? AND {self.where} ORDER BY {self.value} {{}} LIMIT 1 OFFSET ?")
        texts = {False: pick.format("ASC"), True: pick.format("DESC")}
        out = []
        for walk in walks:
            head = [walk.stage] if self.w.by is None else [walk.stage, walk.key]
            found = self.query(texts[walk.desc], [*head, walk.lo, walk.hi, *self.params, walk.offset])
            out.append(int(found[0][0]))
        return out

    def _read_correlated(self, walks: list[Walk]) -> list[int]:
        """The value each walk reads, a statement per direction and WALKS_PER_STATEMENT walks: a list of walks
        (VALUES), each read by one subquery whose OFFSET is the walk's (planned once)."""
        g = group_column(self.w.by)
        grouped = self.w.by is not None
        out = [0] * len(walks)
        for desc in (False, True):
            mine = [(i, walk) for i, walk in enumerate(walks) if walk.desc == desc]
            for first in range(0, len(mine), WALKS_PER_STATEMENT):
                part = mine[first:first + WALKS_PER_STATEMENT]
                width = 6 if grouped else 5
                typed = ", ".join(["CAST(? AS BIGINT)", "CAST(? AS TEXT)", *(["CAST(? AS TEXT)"] if grouped else []),
                                   "CAST(? AS BIGINT)", "CAST(? AS BIGINT)", "CAST(? AS BIGINT)"])
                rows = ", ".join([f"({typed})", *[f"({', '.join('?' * width)})"] * (len(part) - 1)])
                names = f"wi, ws, {'wg, ' if grouped else ''}wlo, whi, wk"
                text = (f"SELECT w.wi, (SELECT {self.value} FROM {self.table} WHERE stage = w.ws"
                        f"{f' AND {g} = w.wg' if grouped else ''} AND {self.value} >= w.wlo AND {self.value} <= w.whi "
                        f"AND {self.where} ORDER BY {self.value} {'DESC' if desc else 'ASC'} LIMIT 1 OFFSET w.wk) "
                        f"FROM (VALUES {rows}) AS w({names})")
                params: list[Any] = []
                for i, walk in part:
                    params += [i, walk.stage, *([walk.key] if grouped else []), walk.lo, walk.hi, walk.offset]
                # the subquery's WHERE conditions come first in the text, the list after them
                for i, v in self.query(text, [*self.params, *params]):
                    out[int(i)] = int(v)
        return out


class Walk(NamedTuple):
    """One value to read: the row at `offset` in duration order (descending if `desc`) among the rows of
    (stage, key) in the window with a duration in [lo, hi] (one bucket)."""

    stage: str
    key: Any
    lo: int
    hi: int
    desc: bool
    offset: int


#: walks sent in one statement where a subquery's OFFSET may be the outer row's (PostgreSQL)
WALKS_PER_STATEMENT = 200
MIN_US, MAX_US = -(2**63), 2**63 - 1


def _conds(w: Window, time_col: str) -> tuple[list[str], list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    visible(w, time_col, conds, params)
    in_range("captured_at" if w.mode == "cohort" else time_col, w, conds, params)
    return conds, params


def _where(w: Window, time_col: str) -> tuple[str, list[Any]]:
    conds, params = _conds(w, time_col)
    return " AND ".join(conds), params


def _stat(count: int, total: int, p50: int, p90: int) -> dict[str, float | int | None]:
    return {"count": count, "mean_s": total / count / SECOND, "p50_s": p50 / SECOND, "p90_s": p90 / SECOND}


EMPTY: dict[str, float | int | None] = {"count": 0, "mean_s": None, "p50_s": None, "p90_s": None}


def shape(w: Window, stay_rows: Iterable[tuple[Any, ...]], first_rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """The velocity JSON (docs/contract.md) from (key, stage, count, sum, p50, p90) rows."""
    stays: dict[Any, dict[str, dict[str, float | int | None]]] = {}
    firsts: dict[Any, dict[str, dict[str, float | int | None]]] = {}
    for target, rows in ((stays, stay_rows), (firsts, first_rows)):
        for key, stage, count, total, p50, p90 in rows:
            target.setdefault(key, {})[stage] = _stat(count, total, p50, p90)
    keys = set(stays) | set(firsts)
    if w.by is None:
        keys.add(None)
    groups = []
    for key in sorted(keys, key=lambda k: (k is None, k or "")):
        s, f = stays.get(key, {}), firsts.get(key, {})
        groups.append({
            "key": key,
            "time_in_stage": {st.value: dict(s.get(st.value, EMPTY)) for st in FUNNEL_ORDER},
            "time_to_stage": {st.value: dict(f.get(st.value, EMPTY)) for st in TO_STAGES},
        })
    return {"by": w.by, "as_of": format_us(w.as_of), "groups": groups}
