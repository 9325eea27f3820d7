"""Funnel: how many distinct leads entered each stage (cohort or period mode, docs/contract.md).

One row per stage entry, owned by the entering event, carrying the time of the
lead's previous entry into the same stage: `prev_at IS NULL` marks the first
entry (cohort mode), and `prev_at < from` marks the first entry inside a period
window, so distinct leads are counted without DISTINCT. Beside the rows, counts of them per stage,
group and cell of days (`COUNTS`): a funnel sums the cells of whole days and counts only the rows of
partial days (`counts_sql`). Each row also keeps when its event was recorded: a lead whose events were
recorded in metric order answers --known-at from its live rows (`LATE` lists the others), and per cell of
days the first and last recording time of its rows (`RECORDED`) let --known-at sum the counts of the
cells recorded by then (`known_counts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from lifecycle.domain.stages import FUNNEL_ORDER, MAIN_PATH, OWNER_CLEARING_EVENTS, STAGE_EVENTS
from projections.base import AppendProjection, Changes, Lead, Table, campaign_key, floor_div, null_key, summed
from projections.query import Window
from schemas.facts import Fact, format_us

ENTRIES = Table(
    "rm_funnel_entries",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"),
     ("prev_at", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"), ("owner", "text"),
     ("recorded_at", "int")),
    key=("lead_no", "version"),
    # per stage: first entries (prev_at NULL) in one index range, grouped in index order (recorded_at and
    # lead_no: --known-at's cuts, read from the index too)
    indexes=(("stage", "prev_at", "channel", "campaign", "captured_at", "entered_at", "owner", "recorded_at",
              "lead_no"),
             # --by owner: first entries grouped in owner order
             ("stage", "prev_at", "owner", "captured_at", "entered_at", "recorded_at", "lead_no"),
             # the entries of one partial day (the counts' edges), by capture, entry or previous entry
             # (and --known-at's cut, and the recording times of a cell of days: `RECORDED`)
             ("captured_at", "entered_at", "prev_at", "stage", "channel", "campaign", "owner", "recorded_at"),
             ("entered_at", "captured_at", "prev_at", "stage", "channel", "campaign", "owner", "recorded_at"),
             # the drill-down: a cell's first entries in entry order (its page's bound read without sorting)
             ("stage", "prev_at", "entered_at", "captured_at"),
             *(("stage", "prev_at", g, "entered_at", "captured_at") for g in ("channel", "campaign", "owner"))),
)
#: Counts of the entries above (of leads with a capture), per stage and group and per cell of time:
#: first entries per (capture, entry) cell at the grains `grain` names (D: the UTC day, B: a block of
#: BLOCK days; first letter the capture's, second the entry's), re-entries (`grain` R) per (capture
#: day, entry day, previous entry day), once per `kind` of group (`g`: the capture's channel or
#: campaign, or the owner at the entry); every kind counts every entry once. `gnull` 1: g is NULL
#: (stored as ''; key columns are never NULL).
COUNTS = Table(
    "rm_funnel_counts",
    (("grain", "text"), ("kind", "text"), ("c", "int"), ("e", "int"), ("p", "int"), ("stage", "text"),
     ("gnull", "int"), ("g", "text"), ("n", "int")),
    key=("grain", "kind", "c", "e", "p", "stage", "gnull", "g"),
    # period mode: cells by entry time first
    indexes=(("grain", "kind", "e", "c", "p", "stage", "gnull", "g", "n"),),
    per_lead=False,
    summed=True,
)
#: Per cell of time of the counts (`grain`, `c`, `e`, `p`: every stage, kind and group together), how
#: many entry rows it holds and when the first and the last of them was recorded (µs): --known-at K sums
#: the counts of a cell whose rows were all recorded at or before K, skips one whose rows were all
#: recorded after K, and refines the others (a block into its days, a day into its rows).
RECORDED = Table(
    "rm_funnel_recorded",
    (("grain", "text"), ("c", "int"), ("e", "int"), ("p", "int"), ("n", "int"), ("rmin", "int"), ("rmax", "int")),
    key=("grain", "c", "e", "p"),
    per_lead=False,
    refreshed=True,
)
#: The leads whose live rows cut at the recording time are not their rows known then (`known_in_order`
#: fails): --known-at re-derives theirs from their timelines.
LATE = Table("rm_funnel_late", (("lead_no", "int"),), key=("lead_no",))
DAY = 86_400_000_000  # µs
#: days per coarse cell: a long window sums a block's cell instead of its days'
BLOCK = 32
#: what `--by` can group the funnel by: the capture's channel or campaign, or the owner at the stage entry
BYS = ("channel", "campaign", "owner")


class Funnel(AppendProjection):
    name = "funnel"
    # 2: the owner at each stage entry; 3: the counts; 4: recorded_at and the late leads; 5: the recording
    # times per cell
    version = 5
    handles = STAGE_EVENTS | frozenset({"LeadAssigned"})
    tables = (ENTRIES, COUNTS, LATE, RECORDED)
    late = LATE
    bulk_built = (COUNTS, RECORDED)

    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        """The entry rows, and what they change in the counts: +1 per new row; a lead whose rows are
        re-derived also takes back (-1) the rows its earlier events gave (those of `history` alone).
        A lead's row in `LATE` once its facts are no longer `known_in_order` (again when re-derived).
        For `RECORDED`, per cell of time each row of either set is in: (cell, +1 or -1, its recording time)."""
        changes = super().fold(lead, history, new)
        rows = changes.rows.get(ENTRIES.name, [])
        deltas = [cell for row in rows for cell in count_cells(row, 1)]
        touched = [(*key, 1, row[-1]) for row in rows for key in cell_keys(row)]
        if changes.replace_lead and history:
            old = self._rows(lead, [], history).rows.get(ENTRIES.name, ())
            deltas += [cell for row in old for cell in count_cells(row, -1)]
            touched += [(*key, -1, row[-1]) for row in old for key in cell_keys(row)]
        if changes.replace_lead:  # the old rows' cells mostly cancel the new ones
            deltas = summed(deltas)
        if deltas:  # (the runner adds up a batch's numbers per key)
            changes.rows[COUNTS.name] = deltas
        if touched:
            changes.rows[RECORDED.name] = touched
        return changes

    def bulk_sql(self, name: Callable[[Table], str]) -> list[str]:
        return [*counts_from_entries(name(ENTRIES), name(COUNTS)), *recorded_from_entries(name(ENTRIES), name(RECORDED))]

    def refresh(self, table: Table, keys: Sequence[tuple[Any, ...]],
                name: Callable[[Table], str]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        assert table is RECORDED
        return recorded_refresh(keys, name(ENTRIES), name(RECORDED))

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        if f.stage is None:
            return
        prev_at = None
        for j in range(i - 1, -1, -1):
            if facts[j].stage == f.stage:
                prev_at = facts[j].occurred
                break
        cap_at = capture.occurred if capture else None
        channel = capture.channel if capture else None
        campaign = campaign_key(capture.campaign) if capture else None
        yield ENTRIES.name, (lead.lead_no, f.version, f.stage, f.occurred, prev_at, cap_at, channel, campaign,
                             owner_at(facts, i), f.recorded)


def count_cells(row: tuple[Any, ...], n: int) -> Iterator[tuple[Any, ...]]:
    """The counts rows (with number n) of one entry row: a first entry in the four grains, a re-entry
    in one, each once per kind of group; an entry of a lead without a capture counts nowhere."""
    _, _, stage, entered_at, prev_at, captured_at, channel, campaign, owner, _ = row
    if captured_at is None:
        return
    c, e = captured_at // DAY, entered_at // DAY
    if prev_at is None:
        p = 0
        cells: tuple[tuple[str, int, int], ...] = (
            ("DD", c, e), ("DB", c, e // BLOCK), ("BD", c // BLOCK, e), ("BB", c // BLOCK, e // BLOCK))
    else:
        p = prev_at // DAY
        cells = (("R", c, e),)
    for kind, g in (("channel", channel), ("campaign", campaign), ("owner", owner)):
        for grain, cx, ex in cells:
            yield grain, kind, cx, ex, p, stage, int(g is None), g or "", n


def cell_keys(row: tuple[Any, ...]) -> tuple[tuple[str, int, int, int], ...]:
    """The cells of time (`RECORDED`'s keys) one entry row is counted in; none without a capture."""
    _, _, _, entered_at, prev_at, captured_at, *_ = row
    if captured_at is None:
        return ()
    c, e = captured_at // DAY, entered_at // DAY
    if prev_at is not None:
        return (("R", c, e, prev_at // DAY),)
    return (("DD", c, e, 0), ("DB", c, e // BLOCK, 0), ("BD", c // BLOCK, e, 0), ("BB", c // BLOCK, e // BLOCK, 0))


#: the block cells as SQL over the day cells' columns c and e: (grain, its capture cell, its entry cell)
_BLOCK_CELLS = (("DB", "c", floor_div("e", BLOCK)), ("BD", floor_div("c", BLOCK), "e"),
                ("BB", floor_div("c", BLOCK), floor_div("e", BLOCK)))


def cell_days(grain: str, c: int, e: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The capture days and the entry days [first, stop) of the first-entry cell (grain, c, e)."""
    return ((c * BLOCK, (c + 1) * BLOCK) if grain[0] == "B" else (c, c + 1),
            (e * BLOCK, (e + 1) * BLOCK) if grain[1] == "B" else (e, e + 1))


#: a `RECORDED` row from (count, first, last) of its rows, left out when it has none
_RECORDED_ROW = "SELECT ?, ?, ?, ?, n, lo, hi FROM ({}) AS x WHERE n > 0"


def recorded_refresh(changes: Sequence[tuple[Any, ...]], entries: str,
                     recorded: str) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Statements that bring the `RECORDED` rows of the cells in `changes` ((grain, c, e, p, +1 or -1,
    recording time) per entry row added or taken back) up to date. A cell that only gained rows takes
    their number and widens its first and last time (an upsert); a cell that lost one (a re-derived
    lead's row that is gone or moved) is derived again: the day cells (DD, R) from the entry rows (a
    range of the (captured_at, entered_at, ...) index each), then the block cells from those. A cell
    left without rows loses its row."""
    net: dict[tuple[Any, ...], dict[int, int]] = {}  # cell -> recording time -> rows gained
    for grain, c, e, p, n, at in changes:
        per = net.setdefault((grain, c, e, p), {})
        per[at] = per.get(at, 0) + n
    cols = ", ".join(RECORDED.column_names)
    gains, firsts, again, blocks = [], [], [], []
    for key, per in sorted(net.items()):
        grain, c, e, p = key
        if all(n >= 0 for n in per.values()):
            added = [at for at, n in per.items() if n]
            if added:
                gains.append((*key, sum(per.values()), min(added), max(added)))
        elif grain == "DD":
            firsts.append((*key, c * DAY, (c + 1) * DAY, e * DAY, (e + 1) * DAY))
        elif grain == "R":
            again.append((*key, c * DAY, (c + 1) * DAY, e * DAY, (e + 1) * DAY, p * DAY, (p + 1) * DAY))
        else:
            cs, es = cell_days(grain, c, e)
            blocks.append((*key, *cs, *es))
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    if gains:
        out.append((f"INSERT INTO {recorded} AS t ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(grain, c, e, p) DO UPDATE SET n = t.n + excluded.n, "
                    "rmin = CASE WHEN excluded.rmin < t.rmin THEN excluded.rmin ELSE t.rmin END, "
                    "rmax = CASE WHEN excluded.rmax > t.rmax THEN excluded.rmax ELSE t.rmax END", gains))
    delete = f"DELETE FROM {recorded} WHERE grain = ? AND c = ? AND e = ? AND p = ?"
    into = f"INSERT INTO {recorded} ({cols}) "
    rows = ("SELECT COUNT(*) AS n, MIN(recorded_at) AS lo, MAX(recorded_at) AS hi FROM " + entries +
            " WHERE captured_at >= ? AND captured_at < ? AND entered_at >= ? AND entered_at < ? AND {}")
    days = ("SELECT SUM(n) AS n, MIN(rmin) AS lo, MAX(rmax) AS hi FROM " + recorded +
            " WHERE grain = 'DD' AND c >= ? AND c < ? AND e >= ? AND e < ?")
    for found, text in ((firsts, into + _RECORDED_ROW.format(rows.format("prev_at IS NULL"))),
                        (again, into + _RECORDED_ROW.format(rows.format("prev_at >= ? AND prev_at < ?"))),
                        (blocks, into + _RECORDED_ROW.format(days))):
        if found:
            out += [(delete, [row[:4] for row in found]), (text, found)]
    return out


def recorded_from_entries(entries: str, recorded: str) -> list[str]:
    """`RECORDED` from every row of the table `entries` (the empty table `recorded`): the day cells
    grouped from the rows, the block cells from those."""
    c, e, p = (floor_div(col, DAY) for col in ("captured_at", "entered_at", "prev_at"))
    into = f"INSERT INTO {recorded} ({', '.join(RECORDED.column_names)}) "
    stmts = [
        f"{into}SELECT '{grain}', c, e, p, COUNT(*), MIN(recorded_at), MAX(recorded_at) FROM "
        f"(SELECT {c} AS c, {e} AS e, {p_cell} AS p, recorded_at FROM {entries} "
        f"WHERE captured_at IS NOT NULL AND {which}) AS x GROUP BY c, e, p"
        for grain, p_cell, which in (("DD", "0", "prev_at IS NULL"), ("R", p, "prev_at IS NOT NULL"))]
    for grain, c_cell, e_cell in _BLOCK_CELLS:
        stmts.append(
            f"{into}SELECT '{grain}', cx, ex, 0, SUM(n), MIN(rmin), MAX(rmax) FROM "
            f"(SELECT {c_cell} AS cx, {e_cell} AS ex, n, rmin, rmax FROM {recorded} WHERE grain = 'DD') AS x "
            f"GROUP BY cx, ex")
    return stmts


def counts_from_entries(entries: str, counts: str) -> list[str]:
    """`count_cells` of every row of the table `entries`, added up per key, as SQL filling the empty
    table `counts`: the day cells (DD, R) grouped from the rows, once per kind of group; the block
    cells (DB, BD, BB) grouped from the DD cells."""
    c, e, p = (floor_div(col, DAY) for col in ("captured_at", "entered_at", "prev_at"))
    into = f"INSERT INTO {counts} ({', '.join(COUNTS.column_names)}) "
    stmts = []
    for kind in BYS:
        for grain, p_cell, which in (("DD", "0", "prev_at IS NULL"), ("R", p, "prev_at IS NOT NULL")):
            stmts.append(
                f"{into}SELECT '{grain}', '{kind}', c, e, p, stage, gnull, g, COUNT(*) FROM "
                f"(SELECT {c} AS c, {e} AS e, {p_cell} AS p, stage, {null_key(kind)} FROM {entries} "
                f"WHERE captured_at IS NOT NULL AND {which}) AS x GROUP BY c, e, p, stage, gnull, g")
    for grain, c_cell, e_cell in _BLOCK_CELLS:
        stmts.append(
            f"{into}SELECT '{grain}', kind, cx, ex, 0, stage, gnull, g, SUM(n) FROM "
            f"(SELECT kind, {c_cell} AS cx, {e_cell} AS ex, stage, gnull, g, n FROM {counts} "
            f"WHERE grain = 'DD') AS x GROUP BY kind, cx, ex, stage, gnull, g")
    return stmts


def owner_at(facts: Sequence[Fact], i: int) -> str | None:
    """The owner the lead had when facts[i] happened (before a clearing event cleared it): the latest
    assignment or acceptance before it, unless a clearing event came between."""
    if facts[i].name == "LeadAcceptedBySales":
        return facts[i].owner
    for j in range(i - 1, -1, -1):
        name = facts[j].name
        if name in ("LeadAssigned", "LeadAcceptedBySales"):
            return facts[j].owner
        if name in OWNER_CLEARING_EVENTS:
            return None
    return None


def group_column(by: str | None) -> str:
    return {"channel": "channel", "campaign": "campaign", "owner": "owner"}.get(by or "", "NULL")


def visible(w: Window, time_col: str, conds: list[str], params: list[Any], late: str | None = None) -> None:
    """Add the as-of cut (event and capture at or before T) to a WHERE clause; with `late` (the live rows
    at a known-at time K), also the known-at cut: rows recorded at or before K, of the leads not in `late`
    (`known_in_order`)."""
    conds.append("captured_at IS NOT NULL")
    if w.as_of is not None:
        conds.append(f"{time_col} <= ?")
        conds.append("captured_at <= ?")
        params += [w.as_of, w.as_of]
    if late is not None and w.known_at is not None:
        conds.append("recorded_at <= ?")
        conds.append(f"lead_no NOT IN (SELECT lead_no FROM {late})")
        params.append(w.known_at)


def in_range(column: str, w: Window, conds: list[str], params: list[Any]) -> None:
    if w.start is not None:
        conds.append(f"{column} >= ?")
        params.append(w.start)
    if w.end is not None:
        conds.append(f"{column} < ?")
        params.append(w.end)


def counted(w: Window, late: str | None = None) -> list[tuple[list[str], list[Any]]]:
    """The entries the funnel counts for one stage, as one or two disjoint sets of WHERE conditions
    (each with its parameters after the stage's, which `stage = ?` leaves to the caller): a lead's
    first entry (cohort mode, and period mode without `from`), or in period mode its first entry in
    the window, whose previous entry into the stage is before `from` (none, or one before `from`).
    Each matches at most one entry per lead: counting them counts distinct leads. `late`: see `visible`."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params, late)
    in_range("captured_at" if w.mode == "cohort" else "entered_at", w, conds, params)
    sets = [(["stage = ?", "prev_at IS NULL", *conds], params)]
    if w.mode == "period" and w.start is not None:
        sets.append((["stage = ?", "prev_at IS NOT NULL", "prev_at < ?", *conds], [w.start, *params]))
    return sets


def query_sql(w: Window, table: str, late: str | None = None) -> list[tuple[str, list[Any]]]:
    """Counts of one stage (each statement's first parameter) per (channel, campaign): ranges of
    the covering index, grouped in index order; the caller runs them per stage and adds them up
    (`counted` says which entries count; `late`: see `visible`)."""
    cols = group_columns(w.by)
    return [(f"SELECT {cols}, COUNT(*) FROM {table} WHERE {' AND '.join(conds)} "
             f"GROUP BY {grouped(w.by)}", params) for conds, params in counted(w, late)]


def group_columns(by: str | None) -> str:
    """The two grouping columns a statement selects: (channel, campaign), or (owner, NULL) by owner."""
    return "owner, NULL" if by == "owner" else "channel, campaign"


def grouped(by: str | None) -> str:
    """What a statement groups by (PostgreSQL refuses a constant in GROUP BY)."""
    return "owner" if by == "owner" else "channel, campaign"


def regroup(by: str | None, stage: str, rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, str, int]]:
    """(channel, campaign, count) rows of one stage -> (key, stage, count) for `by` ((owner, NULL, count)
    rows by owner)."""
    out: dict[Any, int] = {}
    for channel, campaign, count in rows:
        key = channel if by in ("channel", "owner") else campaign if by == "campaign" else None
        out[key] = out.get(key, 0) + int(count)
    return [(key, stage, count) for key, count in out.items()]


def shape(w: Window, rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """The funnel JSON (docs/contract.md) from (key, stage, count) rows."""
    groups: dict[str | None, dict[str, int]] = {}
    if w.by is None:
        groups[None] = {}
    for key, stage, count in rows:
        counts = groups.setdefault(None if w.by is None else key, {})
        counts[stage] = counts.get(stage, 0) + int(count)
    out = []
    for key in sorted(groups, key=lambda k: (k is None, k or "")):
        counts = groups[key]
        stages = {s.value: counts.get(s.value, 0) for s in FUNNEL_ORDER}
        conversion = {}
        for a, b in pairwise(MAIN_PATH):
            reached = stages[a.value]
            conversion[f"{a.value}->{b.value}"] = stages[b.value] / reached if reached else None
        out.append({"key": key, "stages": stages, "conversion": conversion})
    return {"mode": w.mode, "from": format_us(w.start), "to": format_us(w.end), "as_of": format_us(w.as_of),
            "by": w.by, "groups": out}


def bucket_case(column: str, bounds: Sequence[tuple[int, int]]) -> str:
    """A SQL expression: the start of the interval of `bounds` holding `column` (which the WHERE clause
    keeps inside [bounds[0][0], bounds[-1][1])). The bounds are integers computed here, written as
    literals (a decade of weeks would pass SQLite's old 999-parameter limit)."""
    whens = " ".join(f"WHEN {column} < {int(hi)} THEN {int(lo)}" for lo, hi in bounds)
    return f"CASE {whens} END"


def interval_sql(w: Window, table: str, bounds: Sequence[tuple[int, int]],
                 late: str | None = None) -> list[tuple[str, list[Any]]]:
    """`query_sql` per interval in one pass: the counts of one stage (each statement's first parameter)
    per (interval start, channel, campaign). The window [w.start, w.end) is the intervals' union.
    Cohort mode buckets a lead's first entry by its capture; period mode an entry by its own time,
    counted when the lead's previous entry into the stage is before that interval's start. `late`: see
    `visible`."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params, late)
    column = "captured_at" if w.mode == "cohort" else "entered_at"
    in_range(column, w, conds, params)
    bucket = bucket_case(column, bounds)
    cols = group_columns(w.by)
    firsts = ["stage = ?", "prev_at IS NULL", *conds]
    statements = [(f"SELECT {bucket} AS bucket, {cols}, COUNT(*) FROM {table} "
                   f"WHERE {' AND '.join(firsts)} GROUP BY bucket, {grouped(w.by)}", params)]
    if w.mode == "period":
        again = ["stage = ?", "prev_at IS NOT NULL", f"prev_at < {bucket}", *conds]
        statements.append((f"SELECT {bucket} AS bucket, {cols}, COUNT(*) FROM {table} "
                           f"WHERE {' AND '.join(again)} GROUP BY bucket, {grouped(w.by)}", params))
    return statements


def span_sql(w: Window, table: str, late: str | None = None) -> tuple[str, list[Any]]:
    """The earliest and latest time a trend without --from/--to covers: captures (cohort) or stage
    entries (period) visible at the as-of time (`late`: see `visible`)."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params, late)
    in_range("captured_at" if w.mode == "cohort" else "entered_at", w, conds, params)
    column = "captured_at" if w.mode == "cohort" else "entered_at"
    if w.mode == "cohort":
        conds.append("stage = 'captured'")
    return f"SELECT MIN({column}), MAX({column}) FROM {table} WHERE {' AND '.join(conds)}", params


# ---------------------------------------------------------------- the funnel from the counts
#
# What the funnel counts is, per family of entries, a conjunction of one interval per column: cohort,
# first entries with captured_at in [from, to) and both captured_at and entered_at at or before as-of;
# period, first entries with entered_at in [from, to) (and the same as-of cut), and re-entries likewise
# whose prev_at is before `from`. Each interval is split at UTC midnights: the whole days it covers and
# at most two partial days. The entries whose every column lies in whole days are summed from the
# counts; the others are counted from the rows, split so that nothing is counted twice: for the k-th
# column, the entries in its partial days whose earlier columns lie in whole days (their later columns
# anywhere in their intervals).

Interval = tuple[int | None, int | None]  # [lo, hi) in µs; None: unbounded


@dataclass(frozen=True)
class Span:
    """One column's interval [lo, hi) split at UTC midnights: the whole days [first, stop) it covers
    (None: unbounded) and the parts of partial days (µs)."""

    first: int | None
    stop: int | None
    edges: tuple[tuple[int | None, int | None], ...]

    @property
    def has_days(self) -> bool:
        return self.first is None or self.stop is None or self.first < self.stop

    @property
    def days_us(self) -> Interval:
        """The whole days, as an interval in µs."""
        return (None if self.first is None else self.first * DAY, None if self.stop is None else self.stop * DAY)


def span(lo: int | None, hi: int | None) -> Span:
    first = None if lo is None else -(-lo // DAY)
    stop = None if hi is None else hi // DAY
    if first is not None and stop is not None and first >= stop:
        return Span(0, 0, ((lo, hi),))
    edges = []
    if lo is not None and first is not None and lo < first * DAY:
        edges.append((lo, first * DAY))
    if hi is not None and stop is not None and stop * DAY < hi:
        edges.append((stop * DAY, hi))
    return Span(first, stop, tuple(edges))


def pieces(s: Span) -> list[tuple[str, int | None, int | None]]:
    """The whole days of `s` as cells: (grain, first, stop) with grain B (blocks) or D (days)."""
    if not s.has_days:
        return []
    first, stop = s.first, s.stop
    bfirst = None if first is None else -(-first // BLOCK)
    bstop = None if stop is None else stop // BLOCK
    if bfirst is not None and bstop is not None and bfirst >= bstop:
        return [("D", first, stop)]
    out: list[tuple[str, int | None, int | None]] = [("B", bfirst, bstop)]
    if first is not None and bfirst is not None and first < bfirst * BLOCK:
        out.append(("D", first, bfirst * BLOCK))
    if stop is not None and bstop is not None and bstop * BLOCK < stop:
        out.append(("D", bstop * BLOCK, stop))
    return out


def _meet(lo: int | None, hi: int | None, cut: int | None) -> Interval:
    """[lo, hi) ∩ (-inf, cut]."""
    if cut is None:
        return lo, hi
    return lo, cut + 1 if hi is None else min(hi, cut + 1)


def _empty(i: Interval) -> bool:
    return i[0] is not None and i[1] is not None and i[0] >= i[1]


def families(w: Window) -> list[tuple[bool, dict[str, Interval]]]:
    """What the funnel counts as (re-entries?, column -> interval), the columns in refinement order."""
    window = (w.start, w.end)
    upto = _meet(None, None, w.as_of)
    if w.mode == "cohort":
        return [(False, {"captured_at": _meet(*window, w.as_of), "entered_at": upto})]
    entered = _meet(*window, w.as_of)
    out = [(False, {"entered_at": entered, "captured_at": upto})]
    if w.start is not None:
        out.append((True, {"entered_at": entered, "captured_at": upto, "prev_at": (None, w.start)}))
    return out


def _range(column: str, i: Interval, conds: list[str], params: list[Any]) -> None:
    if i[0] is not None:
        conds.append(f"{column} >= ?")
        params.append(i[0])
    if i[1] is not None:
        conds.append(f"{column} < ?")
        params.append(i[1])


#: what the statements over the counts select (stage, key, n) and group by (without --by: the kind with
#: the fewest groups, and no key)
_COUNT_GROUPS = ("CASE WHEN gnull = 1 THEN NULL ELSE g END", "stage, gnull, g")
_UNGROUPED_KIND = "owner"
_STAGE_LIST = ", ".join(f"'{s.value}'" for s in FUNNEL_ORDER)
_CELL_COLUMN = {"captured_at": "c", "entered_at": "e", "prev_at": "p"}


def counts_sql(w: Window, counts: str, entries: str) -> list[tuple[str, list[Any]]]:
    """Statements whose (stage, key, count) rows add up to the funnel of `w` (no known-at): sums over
    the counts for the whole days, counts of entry rows for the partial ones (`regroup_all` reads
    them). Exactly the entries `counted` describes, each once."""
    statements: list[tuple[str, list[Any]]] = []
    for again, intervals in families(w):
        if not any(_empty(i) for i in intervals.values()):
            spans = {column: span(*i) for column, i in intervals.items()}
            statements += _cell_statements(w.by, again, spans, counts)
            statements += _edge_statements(w.by, again, intervals, spans, entries)
    return statements


def _cell_statements(by: str | None, again: bool, spans: dict[str, Span],
                     counts: str) -> list[tuple[str, list[Any]]]:
    """The entries whose every column lies in whole days, from the counts: one statement per
    combination of grains (blocks, and the days before and after them, per column)."""
    if not all(s.has_days for s in spans.values()):
        return []
    select, group = _COUNT_GROUPS if by else ("NULL", "stage")
    grids = [[("R", s.first, s.stop)] for s in spans.values()] if again else [pieces(s) for s in spans.values()]
    out = []
    for cells in _product(grids):
        grains = {column: cell[0] for column, cell in zip(spans, cells, strict=True)}
        grain = "R" if again else grains["captured_at"] + grains["entered_at"]
        conds, params = ["grain = ?", "kind = ?"], [grain, by or _UNGROUPED_KIND]
        for column, (_, first, stop) in zip(spans, cells, strict=True):
            _range(_CELL_COLUMN[column], (first, stop), conds, params)
        out.append((f"SELECT stage, {select}, SUM(n) FROM {counts} WHERE {' AND '.join(conds)} GROUP BY {group}",
                    params))
    return out


def _edge_statements(by: str | None, again: bool, intervals: dict[str, Interval], spans: dict[str, Span],
                     entries: str, known_at: int | None = None) -> list[tuple[str, list[Any]]]:
    """The other entries, from the rows: for the k-th column, those in its partial days whose earlier
    columns lie in whole days (so no entry is counted twice); with `known_at`, those recorded by then."""
    select, group = (by, f"stage, {by}") if by else ("NULL", "stage")
    columns = list(spans)
    out = []
    for k, column in enumerate(columns):
        if any(not spans[c].has_days for c in columns[:k]):
            break
        for edge in spans[column].edges:
            conds = ["captured_at IS NOT NULL", "prev_at IS NOT NULL" if again else "prev_at IS NULL"]
            params: list[Any] = []
            if known_at is not None:
                conds.append(f"recorded_at <= {int(known_at)}")
            if column == "prev_at":  # along the (stage, prev_at) index, every stage
                conds.append(f"stage IN ({_STAGE_LIST})")
            _range(column, edge, conds, params)
            for before in columns[:k]:
                _range(before, spans[before].days_us, conds, params)
            for after in columns[k + 1:]:
                _range(after, intervals[after], conds, params)
            out.append((f"SELECT stage, {select}, COUNT(*) FROM {entries} WHERE {' AND '.join(conds)} "
                        f"GROUP BY {group}", params))
    return out


Run = Callable[[str, list[Any]], list[tuple[Any, ...]]]


def known_counts(w: Window, counts: str, recorded: str, entries: str, run: Run) -> list[tuple[Any, ...]]:
    """(stage, key, count) rows that add up to the funnel of `w` over every lead's live entry rows
    recorded at or before K = `w.known_at` (`counts_sql` with one more cut): a cell of whole days is
    summed from the counts when its rows were all recorded by K (`RECORDED`), skipped when none was,
    and otherwise refined, a block into its days and a day into its rows; partial days are counted
    from the rows, cut at K. `run` runs a statement (the refinement depends on what it finds)."""
    assert w.known_at is not None
    known = int(w.known_at)
    found: list[tuple[Any, ...]] = []
    for again, intervals in families(w):
        if any(_empty(i) for i in intervals.values()):
            continue
        spans = {column: span(*i) for column, i in intervals.items()}
        if all(s.has_days for s in spans.values()):
            grids = ([[("R", s.first, s.stop)] for s in spans.values()] if again
                     else [pieces(s) for s in spans.values()])
            for cells in _product(grids):
                box = {column: (first, stop) for column, (_, first, stop) in zip(spans, cells, strict=True)}
                grains = {column: cell[0] for column, cell in zip(spans, cells, strict=True)}
                grain = "R" if again else grains["captured_at"] + grains["entered_at"]
                found += _known_box(w.by, grain, box, known, counts, recorded, entries, run)
        for text, params in _edge_statements(w.by, again, intervals, spans, entries, known):
            found += run(text, params)
    return found


def _known_box(by: str | None, grain: str, box: dict[str, Interval], known: int, counts: str, recorded: str,
               entries: str, run: Run) -> list[tuple[Any, ...]]:
    """The cells of `grain` in `box` (column -> [first, stop) in the grain's units) as known at `known`."""
    select, group = _COUNT_GROUPS if by else ("NULL", "stage")
    columns = list(box)
    conds, params = ["k.grain = ?", "k.kind = ?"], [grain, by or _UNGROUPED_KIND]
    for column in columns:
        _range("k." + _CELL_COLUMN[column], box[column], conds, params)
    found = run(f"SELECT k.stage, {select}, SUM(k.n) FROM {counts} k JOIN {recorded} r ON r.grain = k.grain "
                f"AND r.c = k.c AND r.e = k.e AND r.p = k.p WHERE {' AND '.join(conds)} AND r.rmax <= {known} "
                f"GROUP BY {group}", params)
    conds, params = ["grain = ?"], [grain]
    for column in columns:
        _range(_CELL_COLUMN[column], box[column], conds, params)
    part = run(f"SELECT c, e, p FROM {recorded} WHERE {' AND '.join(conds)} AND rmin <= {known} AND rmax > {known} "
               "ORDER BY c, e, p", params)
    if grain in ("DD", "R"):
        return found + _known_rows(by, grain, [(int(c), int(e), int(p)) for c, e, p in part], known, entries, run)
    for c, e, _ in part:  # a block cell partly recorded by K: its days
        cs, es = cell_days(grain, int(c), int(e))
        found += _known_box(by, "DD", {"captured_at": cs, "entered_at": es}, known, counts, recorded, entries, run)
    return found


def _known_rows(by: str | None, grain: str, cells: list[tuple[int, int, int]], known: int, entries: str,
                run: Run) -> list[tuple[Any, ...]]:
    """The entry rows recorded by `known` of day cells (c, e, p) of `grain`: one statement per run of
    cells with the same entry (and previous entry) day and consecutive capture days."""
    select, group = (by, f"stage, {by}") if by else ("NULL", "stage")
    runs: list[list[int]] = []  # [first c, last c, e, p]
    for c, e, p in sorted(cells, key=lambda cell: (cell[1], cell[2], cell[0])):
        if runs and runs[-1][2:] == [e, p] and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c, e, p])
    found: list[tuple[Any, ...]] = []
    for first, last, e, p in runs:
        conds = ["captured_at >= ?", "captured_at < ?", "entered_at >= ?", "entered_at < ?",
                 f"recorded_at <= {known}"]
        params: list[Any] = [first * DAY, (last + 1) * DAY, e * DAY, (e + 1) * DAY]
        if grain == "R":
            conds += ["prev_at >= ?", "prev_at < ?"]
            params += [p * DAY, (p + 1) * DAY]
        else:
            conds.append("prev_at IS NULL")
        found += run(f"SELECT stage, {select}, COUNT(*) FROM {entries} WHERE {' AND '.join(conds)} GROUP BY {group}",
                     params)
    return found


def _product(grids: list[list[tuple[str, int | None, int | None]]]) -> Iterator[tuple[Any, ...]]:
    if not grids:
        yield ()
        return
    for head in grids[0]:
        for rest in _product(grids[1:]):
            yield (head, *rest)


def regroup_all(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, str, int]]:
    """(stage, key, count) rows of `counts_sql` -> (key, stage, count), one per (key, stage)."""
    out: dict[tuple[Any, str], int] = {}
    for stage, key, count in rows:
        out[key, stage] = out.get((key, stage), 0) + int(count)
    return [(key, stage, count) for (key, stage), count in out.items()]
