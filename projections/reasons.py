"""Reasons: why leads were lost, disqualified, recycled or rejected by sales (docs/contract.md).

One row per event entering lost, disqualified or recycled (a rejection by sales enters recycled
too, flagged `rejected`), owned by that event: the reason it gives, as stored, when it occurred,
the lead's capture (time, channel, campaign) and the owner the lead had just before the event
(an event that clears the owner reports the owner it cleared).

A query counts the events of one stage that occurred in [from, to): `lost` (LeadLost),
`disqualified` (LeadDisqualified), `recycled` (every event entering recycled: LeadRecycled and
LeadRejectedBySales) or `rejected` (LeadRejectedBySales alone), per reason and per group (the
capture's channel or campaign, or the owner at the event).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lifecycle.domain.stage import Stage
from lifecycle.domain.stages import OWNER_CLEARING_EVENTS, TABLE
from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.funnel import in_range, visible
from projections.query import Window
from schemas.facts import Fact, format_us

#: the stages whose entering events give a reason, and the events that enter them
REASON_EVENTS: frozenset[str] = frozenset(
    rule.event.__name__ for rule in TABLE if rule.dest in (Stage.LOST, Stage.DISQUALIFIED, Stage.RECYCLED))
REJECTED = "LeadRejectedBySales"
#: the events that give a lead its owner (the rest of what `leads.lead_row` follows clears it)
OWNER_SETTING_EVENTS = frozenset({"LeadAssigned", "LeadAcceptedBySales"})

#: query stage -> (stored stage, the `rejected` flags it counts)
SELECTION: dict[str, tuple[str, tuple[int, ...]]] = {
    "lost": ("lost", (0,)),
    "disqualified": ("disqualified", (0,)),
    "recycled": ("recycled", (0, 1)),
    "rejected": ("recycled", (1,)),
}

EVENTS = Table(
    "rm_reason_events",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("rejected", "int"), ("reason", "text"),
     ("occurred_at", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"),
     ("owner", "text"), ("recorded_at", "int")),
    key=("lead_no", "version"),
    # one index range per (stage, rejected) over the window, covering every column a query reads
    indexes=(("stage", "rejected", "occurred_at", "captured_at", "channel", "campaign", "owner", "reason"),),
)


def owner_before(facts: Sequence[Fact], i: int) -> str | None:
    """The lead's owner just before `facts[i]`: set by the latest assignment or acceptance,
    unless an owner-clearing event came after it."""
    for j in range(i - 1, -1, -1):
        f = facts[j]
        if f.name in OWNER_SETTING_EVENTS:
            return f.owner
        if f.name in OWNER_CLEARING_EVENTS:
            return None
    return None


#: The leads whose rows cut at the recording time are not their rows known then: --known-at re-derives
#: theirs from their timelines (`AppendProjection.late`).
LATE = Table("rm_reasons_late", (("lead_no", "int"),), key=("lead_no",))


class Reasons(AppendProjection):
    name = "reasons"
    version = 2  # 2: recorded_at and the late leads
    handles = frozenset({"LeadCaptured"}) | REASON_EVENTS | OWNER_SETTING_EVENTS | OWNER_CLEARING_EVENTS
    tables = (EVENTS, LATE)
    late = LATE

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        if f.name not in REASON_EVENTS:
            return
        cap_at = capture.occurred if capture else None
        channel = capture.channel if capture else None
        campaign = campaign_key(capture.campaign) if capture else None
        yield EVENTS.name, (lead.lead_no, f.version, f.stage, int(f.name == REJECTED), f.reason, f.occurred,
                            cap_at, channel, campaign, owner_before(facts, i), f.recorded)


def query_sql(w: Window, stage: str, table: str) -> tuple[str, list[Any]]:
    """(group key, reason, events) of `stage`'s events that occurred in the window, visible at the
    as-of time; the key is NULL without `by`."""
    stored, flags = SELECTION[stage]
    conds = ["stage = ?", f"rejected IN ({', '.join('?' * len(flags))})"]
    params: list[Any] = [stored, *flags]
    visible(w, "occurred_at", conds, params)
    in_range("occurred_at", w, conds, params)
    where = " AND ".join(conds)
    if w.by is None:
        return f"SELECT NULL, reason, COUNT(*) FROM {table} WHERE {where} GROUP BY reason", params
    column = {"channel": "channel", "campaign": "campaign", "owner": "owner"}[w.by]
    return f"SELECT {column}, reason, COUNT(*) FROM {table} WHERE {where} GROUP BY {column}, reason", params


def _reason_order(item: tuple[str | None, int]) -> tuple[int, bool, str]:
    reason, count = item
    return -count, reason is None, reason or ""


def shape(w: Window, stage: str, rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """The reasons JSON (docs/contract.md) from (key, reason, events) rows: a group per key with
    events, its reasons by count (most first, then by reason) and each one's share of the group."""
    groups: dict[str | None, dict[str | None, int]] = {}
    for key, reason, count in rows:
        counts = groups.setdefault(None if key is None else str(key), {})
        counts[reason] = counts.get(reason, 0) + int(count)
    out = []
    for key in sorted(groups, key=lambda k: (k is None, k or "")):
        counts = groups[key]
        total = sum(counts.values())
        out.append({"key": key, "events": total,
                    "reasons": [{"reason": reason, "count": count, "share": count / total}
                                for reason, count in sorted(counts.items(), key=_reason_order)]})
    return {"stage": stage, "from": format_us(w.start), "to": format_us(w.end), "as_of": format_us(w.as_of),
            "known_at": format_us(w.known_at), "by": w.by, "events": sum(g["events"] for g in out), "groups": out}
