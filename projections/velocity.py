"""Velocity: time in stage (completed stays) and time to stage (first entry - capture), docs/contract.md

A stay row is owned by the event that ends it (the lead's next stage change), so
`left_at <= T` keeps exactly the stays completed as of T; a first-entry row is
owned by the lead's first entry into mql, sal, sql or won.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lifecycle.domain.stages import FUNNEL_ORDER, STAGE_EVENTS, Stage
from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.funnel import group_column, in_range, visible
from projections.query import Window
from schemas.facts import SECOND, Fact, format_us

TO_STAGES = (Stage.MQL, Stage.SAL, Stage.SQL, Stage.WON)
_TO_STAGE_NAMES = frozenset(s.value for s in TO_STAGES)

STAYS = Table(
    "rm_velocity_stays",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"), ("left_at", "int"),
     ("duration_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text")),
    key=("lead_no", "version"),
    # percentiles walk these in value order (ORDER BY .. LIMIT 1 OFFSET rank-1), per grouping
    indexes=(("stage", "duration_us", "left_at", "captured_at"),
             ("stage", "channel", "duration_us", "left_at", "captured_at"),
             ("stage", "campaign", "duration_us", "left_at", "captured_at")),
)
FIRSTS = Table(
    "rm_velocity_firsts",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("entered_at", "int"),
     ("since_capture_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text")),
    key=("lead_no", "version"),
    indexes=(("stage", "since_capture_us", "entered_at", "captured_at"),
             ("stage", "channel", "since_capture_us", "entered_at", "captured_at"),
             ("stage", "campaign", "since_capture_us", "entered_at", "captured_at")),
)


class Velocity(AppendProjection):
    name = "velocity"
    version = 1
    handles = STAGE_EVENTS
    tables = (STAYS, FIRSTS)

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
            yield STAYS.name, (lead.lead_no, f.version, prev.stage, prev.occurred, f.occurred,
                               f.occurred - prev.occurred, cap_at, channel, campaign)
        if f.stage in _TO_STAGE_NAMES and capture is not None and all(
            facts[j].stage != f.stage for j in range(i)
        ):
            yield FIRSTS.name, (lead.lead_no, f.version, f.stage, f.occurred, f.occurred - capture.occurred,
                                cap_at, channel, campaign)


class Stats:
    """Exact count, mean, p50, p90 per (group, stage) of one duration column.

    Count and sum come from one grouped scan; each percentile is the value at its rank,
    read with ORDER BY value LIMIT 1 OFFSET rank-1 along the (stage, group, value) index, so
    no duration leaves the database except the ones reported."""

    def __init__(self, w: Window, table: str, value: str, time_col: str,
                 query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]) -> None:
        self.w, self.table, self.value, self.query = w, table, value, query
        conds: list[str] = []
        params: list[Any] = []
        visible(w, time_col, conds, params)
        in_range("captured_at" if w.mode == "cohort" else time_col, w, conds, params)
        self.where, self.params = " AND ".join(conds), params

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
            ranks = ((n + 1) // 2, (9 * n + 9) // 10)  # ceil(n/2), ceil(9n/10)
            values: dict[int, int] = {}
            for rank in ranks:
                if rank not in values:
                    # walk the index from the nearer end
                    if rank - 1 <= n - rank:
                        found = self.query(ascending, [*head, *self.params, rank - 1])
                    else:
                        found = self.query(descending, [*head, *self.params, n - rank])
                    values[rank] = int(found[0][0])
            out.append((None if self.w.by is None else key, stage, n, int(total), values[ranks[0]],
                        values[ranks[1]]))
        return out


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
