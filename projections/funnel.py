"""Funnel: how many distinct leads entered each stage (cohort or period mode, docs/contract.md).

One row per stage entry, owned by the entering event, carrying the time of the
lead's previous entry into the same stage: `prev_at IS NULL` marks the first
entry (cohort mode), and `prev_at < from` marks the first entry inside a period
window, so distinct leads are counted without DISTINCT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from lifecycle.domain.stages import FUNNEL_ORDER, MAIN_PATH, OWNER_CLEARING_EVENTS, STAGE_EVENTS
from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.query import Window
from schemas.facts import Fact, format_us

ENTRIES = Table(
    "rm_funnel_entries",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"),
     ("prev_at", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"), ("owner", "text")),
    key=("lead_no", "version"),
    # per stage: first entries (prev_at NULL) in one index range, grouped in index order
    indexes=(("stage", "prev_at", "channel", "campaign", "captured_at", "entered_at", "owner"),
             # --by owner: first entries grouped in owner order
             ("stage", "prev_at", "owner", "captured_at", "entered_at")),
)
#: what `--by` can group the funnel by: the capture's channel or campaign, or the owner at the stage entry
BYS = ("channel", "campaign", "owner")


class Funnel(AppendProjection):
    name = "funnel"
    version = 2  # 2: the owner at each stage entry
    handles = STAGE_EVENTS | frozenset({"LeadAssigned"})
    tables = (ENTRIES,)

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
                             owner_at(facts, i))


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


def visible(w: Window, time_col: str, conds: list[str], params: list[Any]) -> None:
    """Add the as-of cut (event and capture at or before T) to a WHERE clause."""
    conds.append("captured_at IS NOT NULL")
    if w.as_of is not None:
        conds.append(f"{time_col} <= ?")
        conds.append("captured_at <= ?")
        params += [w.as_of, w.as_of]


def in_range(column: str, w: Window, conds: list[str], params: list[Any]) -> None:
    if w.start is not None:
        conds.append(f"{column} >= ?")
        params.append(w.start)
    if w.end is not None:
        conds.append(f"{column} < ?")
        params.append(w.end)


def counted(w: Window) -> list[tuple[list[str], list[Any]]]:
    """The entries the funnel counts for one stage, as one or two disjoint sets of WHERE conditions
    (each with its parameters after the stage's, which `stage = ?` leaves to the caller): a lead's
    first entry (cohort mode, and period mode without `from`), or in period mode its first entry in
    the window, whose previous entry into the stage is before `from` (none, or one before `from`).
    Each matches at most one entry per lead: counting them counts distinct leads."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params)
    in_range("captured_at" if w.mode == "cohort" else "entered_at", w, conds, params)
    sets = [(["stage = ?", "prev_at IS NULL", *conds], params)]
    if w.mode == "period" and w.start is not None:
        sets.append((["stage = ?", "prev_at IS NOT NULL", "prev_at < ?", *conds], [w.start, *params]))
    return sets


def query_sql(w: Window, table: str) -> list[tuple[str, list[Any]]]:
    """Counts of one stage (each statement's first parameter) per (channel, campaign): ranges of
    the covering index, grouped in index order; the caller runs them per stage and adds them up
    (`counted` says which entries count)."""
    cols = group_columns(w.by)
    return [(f"SELECT {cols}, COUNT(*) FROM {table} WHERE {' AND '.join(conds)} "
             f"GROUP BY {grouped(w.by)}", params) for conds, params in counted(w)]


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


def interval_sql(w: Window, table: str, bounds: Sequence[tuple[int, int]]) -> list[tuple[str, list[Any]]]:
    """`query_sql` per interval in one pass: the counts of one stage (each statement's first parameter)
    per (interval start, channel, campaign). The window [w.start, w.end) is the intervals' union.
    Cohort mode buckets a lead's first entry by its capture; period mode an entry by its own time,
    counted when the lead's previous entry into the stage is before that interval's start."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params)
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


def span_sql(w: Window, table: str) -> tuple[str, list[Any]]:
    """The earliest and latest time a trend without --from/--to covers: captures (cohort) or stage
    entries (period) visible at the as-of time."""
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params)
    in_range("captured_at" if w.mode == "cohort" else "entered_at", w, conds, params)
    column = "captured_at" if w.mode == "cohort" else "entered_at"
    if w.mode == "cohort":
        conds.append("stage = 'captured'")
    return f"SELECT MIN({column}), MAX({column}) FROM {table} WHERE {' AND '.join(conds)}", params
