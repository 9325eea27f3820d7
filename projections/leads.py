"""Lead list: each lead's stage, owner, latest score and source, newest first (docs/contract.md).

One current row per lead, re-folded from the lead's events whenever a batch
brings it a new one (metric order, so a late event lands where it belongs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from lifecycle.domain.stages import OWNER_CLEARING_EVENTS, STAGE_EVENTS
from projections.base import Changes, Lead, Projection, Table
from schemas.facts import Fact, format_us

LEADS = Table(
    "rm_leads",
    (("lead_no", "int"), ("lead_id", "text"), ("stage", "text"), ("owner", "text"), ("score", "int"),
     ("channel", "text"), ("campaign", "text"), ("captured_at", "int"), ("last_change_at", "int")),
    key=("lead_no",),
    indexes=(("captured_at",),),
    upsert=True,
)

COLUMNS = ("lead_id", "stage", "owner", "score", "channel", "campaign", "captured_at", "last_change_at")


def lead_row(lead: Lead, facts: Sequence[Fact]) -> tuple[Any, ...] | None:
    """The lead's row from its metric-ordered facts (None before its capture is known)."""
    stage = owner = channel = campaign = None
    score = captured_at = last_change = None
    for f in facts:
        name = f.name
        if name in STAGE_EVENTS:
            stage, last_change = f.stage, f.occurred
            if name == "LeadCaptured" and captured_at is None:
                captured_at, channel, campaign = f.occurred, f.channel, f.campaign
            elif name == "LeadAcceptedBySales":
                owner = f.owner
            elif name in OWNER_CLEARING_EVENTS:
                owner = None
        elif name == "LeadAssigned":
            owner = f.owner
        elif name == "LeadScored":
            score = None if f.value is None else int(f.value)
    if captured_at is None:
        return None
    return (lead.lead_no, lead.lead_id, stage, owner, score, channel, campaign, captured_at, last_change)


class Leads(Projection):
    name = "leads"
    version = 1
    handles = STAGE_EVENTS | frozenset({"LeadScored", "LeadAssigned"})
    tables = (LEADS,)

    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        changes = Changes()
        if new:
            row = lead_row(lead, sorted(history + new))
            if row is not None:
                changes.add(LEADS.name, row)
        return changes


def list_sql(stage: str | None, channel: str | None, owner: str | None, limit: int,
             table: str) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    for column, value in (("stage", stage), ("channel", channel), ("owner", owner)):
        if value is not None:
            conds.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(conds)} " if conds else ""
    params.append(limit)
    return (f"SELECT {', '.join(COLUMNS)} FROM {table} {where}"
            f"ORDER BY captured_at DESC, lead_id DESC LIMIT ?"), params


def item(row: Sequence[Any]) -> dict[str, Any]:
    lead_id, stage, owner, score, channel, campaign, captured_at, last_change = row
    return {"lead_id": hyphenated(lead_id), "stage": stage, "owner": owner, "score": score, "channel": channel,
            "campaign": campaign, "captured_at": format_us(captured_at), "last_change_at": format_us(last_change)}


def hyphenated(lead_id: str) -> str:
    """The stored 32-hex-digit lead id in its hyphenated form (any other form through UUID)."""
    if len(lead_id) == 32 and lead_id.islower():
        return f"{lead_id[:8]}-{lead_id[8:12]}-{lead_id[12:16]}-{lead_id[16:20]}-{lead_id[20:]}"
    return str(UUID(lead_id))


def matches(entry: dict[str, Any], stage: str | None, channel: str | None, owner: str | None) -> bool:
    return ((stage is None or entry["stage"] == stage) and (channel is None or entry["channel"] == channel)
            and (owner is None or entry["owner"] == owner))


def shape(as_of: int | None, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"as_of": format_us(as_of), "leads": list(items)}
