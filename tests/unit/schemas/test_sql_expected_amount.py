"""LeadQualifiedAsSQL v2 carries the deal's expected amount; a stored v1 SQL reads as one without."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from lifecycle.domain.events import LeadQualifiedAsSQL
from schemas import codec
from schemas.events import validate_envelope
from schemas.facts import decode_state, from_record

LEAD_ID = UUID("0b7e2f0c-3c55-4d7a-9a21-5e0f4f6c1d2a")
BANT = {"budget": "50k", "authority": "CFO", "need": "reporting", "timeline": "Q3"}


def stored(type_version: int, data: dict[str, Any]) -> bytes:
    """A stored SQL row as the codec of `type_version` wrote it (hash included)."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "6f1d0c2e-8b7a-4c3d-9e2f-1a2b3c4d5e6f",
        "source": codec.SOURCE,
        "type": f"leadledger.lead.LeadQualifiedAsSQL.v{type_version}",
        "subject": str(LEAD_ID),
        "time": "2026-03-02T09:15:00.000000Z",
        "sequence": 5,
        "datacontenttype": "application/json",
        "dataschema": f"schemas/events/LeadQualifiedAsSQL.v{type_version}.json",
        "recordedat": "2026-03-02T09:15:01.000000Z",
        "actor": "crm",
        "prevhash": "1" * 64,
        "data": data,
    }
    body["hash"] = codec.content_hash(body)
    return codec.canonical(body)


V1_DATA = {"from_stage": "sal", "to_stage": "sql", "bant": BANT}


def test_a_stored_v1_sql_is_valid_against_its_own_schema() -> None:
    validate_envelope(codec.load_envelope(stored(1, V1_DATA)))


def test_a_stored_v1_sql_upcasts_to_v2_without_an_expected_amount() -> None:
    record = codec.to_record(LEAD_ID, 5, stored(1, V1_DATA))
    assert record.schema_version == 1
    assert record.data == {**V1_DATA, "amount": None, "currency": None}
    event = codec.to_domain(record, None)
    assert isinstance(event, LeadQualifiedAsSQL)
    assert (event.bant, event.amount, event.currency) == (BANT, None, None)
    fact = decode_state(5, stored(1, V1_DATA))
    assert (fact.stage, fact.value, fact.currency) == ("sql", None, None)
    assert from_record(record) == fact


def test_a_v2_sql_fact_carries_the_expected_amount_and_currency() -> None:
    data = {**V1_DATA, "amount": 12_000, "currency": "EUR"}
    validate_envelope(codec.load_envelope(stored(2, data)))
    fact = decode_state(5, stored(2, data))
    assert (fact.name, fact.stage, fact.value, fact.currency) == ("LeadQualifiedAsSQL", "sql", 12_000.0, "EUR")


def test_a_v2_sql_without_an_expected_amount_is_valid_and_its_fact_has_none() -> None:
    data = {**V1_DATA, "amount": None, "currency": None}
    validate_envelope(codec.load_envelope(stored(2, data)))
    fact = decode_state(5, stored(2, data))
    assert (fact.value, fact.currency) == (None, None)
