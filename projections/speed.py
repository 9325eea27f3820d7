"""Speed to lead: for each assignment, the time to the lead's first contact after it, docs/contract.md

An assignment row is owned by the assignment; a response row is owned by the
first contact after the lead's latest assignment (a reassignment before any
contact leaves the earlier assignment without a response row: uncontacted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.funnel import group_column, in_range, visible
from projections.query import Window
from schemas.facts import SECOND, Fact, format_us

WITHIN_US = 300 * SECOND  # "within 5 minutes" is <= 300 s

ASSIGNMENTS = Table(
    "rm_speed_assignments",
    (("lead_no", "int"), ("version", "int"), ("owner", "text"), ("assigned_at", "int"), ("captured_at", "int"),
     ("channel", "text"), ("campaign", "text")),
    key=("lead_no", "version"),
    indexes=(("owner", "assigned_at", "captured_at"), ("channel", "assigned_at", "captured_at"),
             ("campaign", "assigned_at", "captured_at")),
)
RESPONSES = Table(
    "rm_speed_responses",
    (("lead_no", "int"), ("version", "int"), ("owner", "text"), ("assigned_at", "int"), ("contacted_at", "int"),
     ("response_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text")),
    key=("lead_no", "version"),  # version of the assignment answered
    indexes=(("response_us", "contacted_at", "assigned_at", "captured_at"),
             *((g, "response_us", "contacted_at", "assigned_at", "captured_at") for g in ("owner", "channel", "campaign"))),
)


class Speed(AppendProjection):
    name = "speed"
    version = 1
    handles = frozenset({"LeadCaptured", "LeadAssigned", "LeadContacted"})
    tables = (ASSIGNMENTS, RESPONSES)

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        cap_at = capture.occurred if capture else None
        channel = capture.channel if capture else None
        campaign = campaign_key(capture.campaign) if capture else None
        if f.name == "LeadAssigned":
            yield ASSIGNMENTS.name, (lead.lead_no, f.version, f.owner, f.occurred, cap_at, channel, campaign)
        elif f.name == "LeadContacted":
            for j in range(i - 1, -1, -1):
                prev = facts[j]
                if prev.name == "LeadContacted":
                    return  # the latest assignment was answered already
                if prev.name == "LeadAssigned":
                    yield RESPONSES.name, (lead.lead_no, prev.version, prev.owner, prev.occurred, f.occurred,
                                           f.occurred - prev.occurred, cap_at, channel, campaign)
                    return


def _where(w: Window, time_col: str) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    visible(w, time_col, conds, params)
    in_range("captured_at" if w.mode == "cohort" else "assigned_at", w, conds, params)
    return " AND ".join(conds), params


def compute(w: Window, assignments: str, responses: str,
            query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]) -> dict[str, Any]:
    """Counts by grouped index scans; p50/p90 read at their rank along the (group, response) index."""
    g = group_column(w.by)
    group_by = "" if w.by is None else f" GROUP BY {g}"
    where, params = _where(w, "assigned_at")
    assigned = {None if w.by is None else k: int(n) for k, n in query(
        f"SELECT {g} AS k, COUNT(*) FROM {assignments} WHERE {where}{group_by}", params)}
    where, params = _where(w, "contacted_at")
    answered = query(f"SELECT {g} AS k, COUNT(*), SUM(CASE WHEN response_us <= {WITHIN_US} THEN 1 ELSE 0 END) "
                     f"FROM {responses} WHERE {where}{group_by}", params)
    same_group = "" if w.by is None else f"{g} = ? AND "
    pick = f"SELECT response_us FROM {responses} WHERE {same_group}{where} ORDER BY response_us {{}} LIMIT 1 OFFSET ?"
    stats: dict[Any, tuple[int, int, int | None, int | None]] = {}
    for key, count, within in answered:
        n = int(count)
        if n == 0:
            continue
        head = [] if w.by is None else [key]
        values = []
        for rank in ((n + 1) // 2, (9 * n + 9) // 10):  # ceil(n/2), ceil(9n/10)
            if rank - 1 <= n - rank:
                values.append(int(query(pick.format("ASC"), [*head, *params, rank - 1])[0][0]))
            else:
                values.append(int(query(pick.format("DESC"), [*head, *params, n - rank])[0][0]))
        stats[None if w.by is None else key] = (n, int(within or 0), values[0], values[1])
    keys = set(assigned) | set(stats)
    if w.by is None:
        keys.add(None)
    groups = []
    for k in sorted(keys, key=lambda k: (k is None, k or "")):
        n, within, p50, p90 = stats.get(k, (0, 0, None, None))
        groups.append({"key": k, "assignments": assigned.get(k, 0), "contacted": n, "within_5m": within,
                       "p50_s": None if p50 is None else p50 / SECOND,
                       "p90_s": None if p90 is None else p90 / SECOND})
    return {"by": w.by, "as_of": format_us(w.as_of), "groups": groups}
