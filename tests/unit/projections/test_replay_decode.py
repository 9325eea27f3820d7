"""The lean decode a replay runs a million times: the same Fact as the plain reading of the
envelope, for every event type; anything else is a CorruptEvent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lifecycle.domain.events import EVENT_CLASSES
from lifecycle.domain.stages import STAGE_EVENTS
from schemas.codec import CorruptEvent
from schemas.facts import Fact, decode_state, fact_from_data, parse_us

DATA: dict[str, Any] = {"to_stage": "mql", "from_stage": "nurtured", "channel": "webinar", "campaign": "q1",
                        "owner": "ana", "total": 71, "amount": 1200, "currency": "EUR", "reason": "budget cut"}


def reference(name: str, version: int, occurred: int, recorded: int, data: dict[str, Any]) -> Fact:
    """What each event type contributes, spelled out field by field."""
    stage = channel = campaign = owner = value = currency = source = reason = None
    if name in ("LeadCaptured", "LeadTouched"):
        stage, channel, campaign = data.get("to_stage"), data.get("channel"), data.get("campaign")
    elif name == "LeadScored":
        value = None if data.get("total") is None else float(data["total"])
    elif name in ("LeadAssigned", "LeadContacted"):
        owner = data.get("owner")
    elif name in STAGE_EVENTS:
        stage = data.get("to_stage")
        owner = data.get("owner") if name == "LeadAcceptedBySales" else None
        deal = name in ("LeadWon", "LeadQualifiedAsSQL")  # the won or the expected amount
        value = float(data["amount"]) if deal and data.get("amount") is not None else None
        currency = data.get("currency") if deal else None
        source = ("override" if data.get("override") else "external") if name == "LeadQualifiedAsMQL" else None
        reason = data.get("reason") if name in ("LeadLost", "LeadDisqualified", "LeadRecycled",
                                                "LeadRejectedBySales") else None
    return Fact(occurred, version, name, recorded, stage, channel, campaign, owner, value, currency, source, reason)


def envelope(name: str, data: dict[str, Any], schema: int | None = None) -> bytes:
    return orjson.dumps({
        "type": f"leadledger.lead.{name}.v{EVENT_CLASSES[name].SCHEMA_VERSION if schema is None else schema}",
        "time": "2026-03-02T09:15:00.000001Z", "recordedat": "2026-03-02T09:15:01.5+01:00",
        "id": "e", "subject": "s", "sequence": 3, "data": data,
    }, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
@pytest.mark.parametrize("data", [DATA, {}, {"total": None, "amount": None, "to_stage": None}])
def test_every_event_type_decodes_to_its_fact(name: str, data: dict[str, Any]) -> None:
    occurred, recorded = parse_us("2026-03-02T09:15:00.000001Z"), parse_us("2026-03-02T08:15:01.5Z")
    want = reference(name, 3, occurred, recorded, data)
    got = decode_state(3, envelope(name, data))
    assert got == want and type(got) is Fact
    assert [type(v) for v in got] == [type(v) for v in want]  # 1200 becomes 1200.0, as before
    assert fact_from_data(name, 3, occurred, recorded, data) == want


@pytest.mark.parametrize("state", [
    b"{not json",
    b"[]",
    orjson.dumps({"type": "other.LeadWon.v1", "time": "2026-03-02T09:15:00Z", "recordedat": "2026-03-02T09:15:00Z",
                  "data": {}}),
    orjson.dumps({"type": 7, "time": "2026-03-02T09:15:00Z", "recordedat": "2026-03-02T09:15:00Z", "data": {}}),
    orjson.dumps({"type": ["x"], "time": "2026-03-02T09:15:00Z", "recordedat": "2026-03-02T09:15:00Z", "data": {}}),
    envelope("LeadWon", DATA, schema=9),  # newer than this code understands
    envelope("LeadWon", DATA, schema=0),  # older, and no upcaster registered
    envelope("LeadWon", DATA).replace(b"09:15:00.000001Z", b"09:15:00.000001"),  # a time without a zone
    envelope("LeadWon", DATA).replace(b"09:15:00.000001Z", b"yesterday"),
])
def test_anything_else_is_a_corrupt_event(state: bytes) -> None:
    with pytest.raises(CorruptEvent):
        decode_state(3, state)
