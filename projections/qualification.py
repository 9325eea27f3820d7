"""Qualification: MQL entries by source and the MQL → won rate of each source, docs/contract.md

An entry row is owned by its LeadQualifiedAsMQL event and keeps the event's source: `scorer`
(leadledger's scorer qualified the lead, actor `scorer`), `override` (a person qualified it by
override, with a reason) or `external` (any other MQL: the guard passed on a score that came from
upstream). A win row is owned by its LeadWon.

The window is always on the MQL entry (an entry counts when it occurred in [from, to)), as the sla
query's is on each clock's start: the entries are the group followed to won, and a cohort of
captures would mix the qualification habits of every period a lead was qualified in. Per source:
`entries` (MQL events), `leads` (distinct leads among them), `won` (those leads with a LeadWon
that occurred at or after one of their counted entries of that source: a lead qualified twice, by
two sources, counts for both) and `rate` = won / leads (null without leads). As of T, every one
of them (entry, capture, win) occurred at or before T; with known-at, also recorded by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from projections.base import AppendProjection, Lead, Table
from projections.funnel import in_range, visible
from projections.query import Query, QueryError, Window, check
from schemas.facts import MQL_SOURCES, Fact, format_us

Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

ENTRIES = Table(
    "rm_qualification_entries",
    (("lead_no", "int"), ("version", "int"), ("source", "text"), ("entered_at", "int"), ("captured_at", "int"),
     ("recorded_at", "int")),
    key=("lead_no", "version"),
    indexes=(("source", "entered_at", "captured_at"),),
)
WINS = Table(
    "rm_qualification_wins",
    (("lead_no", "int"), ("version", "int"), ("won_at", "int"), ("recorded_at", "int")),
    key=("lead_no", "version"),
    indexes=(("lead_no", "won_at"),),  # a counted entry looks up its lead's wins at or after it
)
#: The leads whose rows cut at the recording time are not their rows known then: --known-at re-derives
#: theirs from their timelines (`AppendProjection.late`).
LATE = Table("rm_qualification_late", (("lead_no", "int"),), key=("lead_no",))


class Qualification(AppendProjection):
    name = "qualification"
    version = 2  # 2: recorded_at and the late leads
    handles = frozenset({"LeadCaptured", "LeadQualifiedAsMQL", "LeadWon"})
    tables = (ENTRIES, WINS, LATE)
    late = LATE

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        if f.name == "LeadQualifiedAsMQL":
            yield ENTRIES.name, (lead.lead_no, f.version, f.source, f.occurred,
                                 capture.occurred if capture else None, f.recorded)
        elif f.name == "LeadWon":
            yield WINS.name, (lead.lead_no, f.version, f.occurred, f.recorded)


def check_qualification(q: Query) -> Window:
    """The window of a qualification query: no `by` (the rows are the sources) and no `mode` (the
    window is always on the MQL entry)."""
    if q.mode != "cohort":
        raise QueryError("qualification takes no --mode: its window [--from, --to) is always on the MQL entry")
    if q.by is not None:
        raise QueryError("qualification takes no --by: its rows are the MQL sources")
    return check(replace(q, mode="period"), bys=())


def compute(w: Window, entries: str, wins: str, query: Rows) -> dict[str, Any]:
    """Per source (and over all of them): entries, distinct leads, leads won after an entry, rate.
    `entries` and `wins` are tables or table expressions (an aliased subquery, read through one more so
    the statement can name it)."""
    entries, wins = (f"(SELECT * FROM {t})" if t.startswith("(") else t for t in (entries, wins))
    conds: list[str] = []
    params: list[Any] = []
    visible(w, "entered_at", conds, params)
    in_range("entered_at", w, conds, params)
    cut = "" if w.as_of is None else " AND w.won_at <= ?"
    won_after = (f"CASE WHEN EXISTS (SELECT 1 FROM {wins} w WHERE w.lead_no = e.lead_no "
                 f"AND w.won_at >= e.entered_at{cut}) THEN e.lead_no END")
    head = [] if w.as_of is None else [w.as_of]
    select = (f"SELECT {{}}COUNT(*), COUNT(DISTINCT e.lead_no), COUNT(DISTINCT {won_after}) "
              f"FROM {entries} e WHERE {' AND '.join(conds)}")
    counts = {str(source): (int(n), int(leads), int(won)) for source, n, leads, won in query(
        select.format("e.source, ") + " GROUP BY e.source", [*head, *params]) if source is not None}
    ((n, leads, won),) = query(select.format(""), [*head, *params])

    def row(key: str, figures: tuple[int, int, int]) -> dict[str, Any]:
        n, leads, won = figures
        return {"source": key, "entries": n, "leads": leads, "won": won, "rate": won / leads if leads else None}

    return {"from": format_us(w.start), "to": format_us(w.end), "as_of": format_us(w.as_of),
            "known_at": format_us(w.known_at),
            "sources": [row(s, counts.get(s, (0, 0, 0))) for s in MQL_SOURCES],
            "total": row("all", (int(n), int(leads or 0), int(won or 0)))}
