"""The event schema files: one per event type, in sync with their generator and with the codec."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from lifecycle.domain.errors import GuardFailed, LifecycleError
from lifecycle.domain.events import EVENT_CLASSES, LeadEvent
from lifecycle.domain.lead import Lead
from schemas import codec
from schemas.events import load_event_schema, validate_envelope
from schemas.generate_event_schemas import EVENTS_DIR, envelope_schema, expected_files, stale_files

FILE_NAME = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>[0-9]+)\.json$")
LEAD_ID = UUID("0b7e2f0c-3c55-8d7a-9a21-5e0f4f6c1d2a")
DATA_KEY = bytes(range(32))
THRESHOLD = 70


def _schema_files() -> dict[str, Path]:
    return {path.name: path for path in EVENTS_DIR.glob("*.json")}


def test_every_event_class_has_a_schema_file_for_its_current_version() -> None:
    files = _schema_files()
    for name, cls in EVENT_CLASSES.items():
        assert f"{name}.v{cls.SCHEMA_VERSION}.json" in files, f"{name} has no schema: run the generator"


def test_every_schema_file_belongs_to_an_event_class_and_version() -> None:
    for file_name in _schema_files():
        match = FILE_NAME.match(file_name)
        assert match, f"schemas/events/{file_name}: expected <EventName>.v<N>.json"
        name, version = match["name"], int(match["version"])
        assert name in EVENT_CLASSES, f"schemas/events/{file_name}: no event class {name}"
        assert 1 <= version <= EVENT_CLASSES[name].SCHEMA_VERSION, (
            f"schemas/events/{file_name}: no such version"
        )


def test_schema_files_on_disk_equal_what_the_generator_builds() -> None:
    assert stale_files() == [], "run: python -m schemas.generate_event_schemas"
    assert set(expected_files()) <= set(_schema_files())


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_each_schema_names_its_own_type_and_file(name: str) -> None:
    version = EVENT_CLASSES[name].SCHEMA_VERSION
    schema = load_event_schema(name, version)
    assert schema is not None
    assert json.loads((EVENTS_DIR / f"{name}.v{version}.json").read_text()) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/events/{name}.v{version}.json")
    props = schema["properties"]
    assert props["type"] == {"const": codec.event_type(name, version)}
    assert props["dataschema"] == {"const": f"schemas/events/{name}.v{version}.json"}
    assert schema["additionalProperties"] is False
    assert props["data"]["additionalProperties"] is False
    assert set(props["data"]["required"]) == set(props["data"]["properties"])
    assert schema == envelope_schema(name)


# ---- every event class, through the aggregate and the codec (no IO) -----------------


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)

    def __call__(self) -> dict[str, Any]:
        self.now += timedelta(minutes=3)
        return {"occurred_at": self.now, "actor": "cli:test"}


def _one_of_each() -> list[LeadEvent]:
    at = _Clock()
    lead = Lead.capture(
        LEAD_ID,
        channel="webinar",
        campaign="q1",
        email="ada@example.com",
        name="Ada",
        causation="web-forms/1",
        attributes={"country": "DE", "employees": 1200, "email_domain_kind": "business",
                    "account_key": "0" * 32},
        **at(),
    )
    lead.touch(channel="email", kind="open", **at())
    lead.transition("nurture", mql_threshold=THRESHOLD, **at())
    lead.record_score(total=75, fit=80, behaviour=70, **at())
    lead.transition("qualify_mql", mql_threshold=THRESHOLD, **at())
    lead.queue_for_routing(rule="dach", policy_version=1, excluded=[{"rep": "sam", "reason": "outside_hours"}],
                           causation=None, **_when(at))
    lead.route_to(owner="sam", rule="dach", method="round_robin", policy_version=1,
                  candidates=[{"rep": "sam", "weight": 2, "current_before": 0, "open": 3, "capacity": 40}],
                  excluded=[{"rep": "kim", "reason": "absent"}], causation="lead-event:1", **_when(at))
    started = at.now
    lead.sla_timer(breached=False, sla="first-contact", started_at=started, deadline=started + timedelta(minutes=5),
                   owner="sam", policy_version=1, **_when(at))
    lead.sla_timer(breached=True, sla="first-contact", started_at=started, deadline=started + timedelta(minutes=5),
                   owner="sam", policy_version=1, **_when(at))
    lead.assign(owner="sam", rule="round-robin", **at())
    lead.contact(**at())
    lead.transition("reject", reason="not now", mql_threshold=THRESHOLD, **at())
    lead.transition("qualify_mql", override=True, reason="event follow-up", mql_threshold=THRESHOLD, **at())
    lead.assign(owner="kim", **at())
    lead.transition("accept", mql_threshold=THRESHOLD, **at())
    bant = {"budget": "10k", "authority": "yes", "need": "audit", "timeline": "Q3"}
    lead.transition("qualify_sql", bant=bant, mql_threshold=THRESHOLD, **at())
    lead.transition("lose", reason="price", mql_threshold=THRESHOLD, **at())
    lead.transition("recycle", reason="new budget", mql_threshold=THRESHOLD, **at())
    lead.transition("qualify_mql", mql_threshold=THRESHOLD, **at())
    lead.assign(owner="sam", **at())
    lead.transition("accept", mql_threshold=THRESHOLD, **at())
    lead.transition("qualify_sql", bant=bant, amount=1000.0, currency="chf", mql_threshold=THRESHOLD, **at())
    lead.transition("win", amount=999.99, currency="chf", mql_threshold=THRESHOLD, **at())
    lead.set_consent(given=False, **at())
    lead.set_consent(given=True, purpose="product news", **at())
    lead.transition("disqualify", reason="duplicate", mql_threshold=THRESHOLD, **at())
    lead.erase_personal_data(**at())
    return _collect(lead)


def _when(at: _Clock) -> dict[str, Any]:
    """The next instant, for the operator's decisions (their actor is fixed)."""
    return {"occurred_at": at()["occurred_at"]}


def _collect(lead: Lead) -> list[LeadEvent]:
    events = lead.collect_events()
    assert all(isinstance(e, LeadEvent) for e in events)
    return [e for e in events if isinstance(e, LeadEvent)]


def _encoded(events: list[LeadEvent]) -> Iterator[dict[str, Any]]:
    prev = codec.GENESIS
    for event in events:
        stored, prev = codec.encode(event, prev, DATA_KEY)
        yield orjson.loads(stored.state)


def test_one_event_of_every_class_encodes_to_a_valid_envelope() -> None:
    envelopes = list(_encoded(_one_of_each()))
    for envelope in envelopes:
        validate_envelope(envelope)
    assert {e["type"] for e in envelopes} == {
        codec.event_type(name, cls.SCHEMA_VERSION) for name, cls in EVENT_CLASSES.items()
    }


def test_a_capture_without_personal_data_validates() -> None:
    lead = Lead.capture(
        LEAD_ID, channel="import", occurred_at=datetime(2026, 1, 1, tzinfo=UTC), actor="cli:test"
    )
    (envelope,) = _encoded(_collect(lead))
    assert envelope["data"]["personal"] is None
    validate_envelope(envelope)


# ---- known gaps between the domain's guards and the schema contract -------------------


def _sql_lead() -> Lead:
    at = _Clock()
    lead = Lead.capture(LEAD_ID, channel="webinar", email="ada@example.com", **at())
    lead.transition("qualify_mql", override=True, reason="vip", mql_threshold=THRESHOLD, **at())
    lead.assign(owner="sam", **at())
    lead.transition("accept", mql_threshold=THRESHOLD, **at())
    return lead


def _expect(lead: Lead, trigger: str, refused_with: tuple[type[LifecycleError], str] | None, **fields: Any) -> None:
    """Fire `trigger`: refused with the named error (class, message pattern) and nothing recorded, or
    (None) accepted, recording one event, and every event of the lead valid against its schema."""
    before = lead.version

    def fire() -> None:
        lead.transition(
            trigger,
            mql_threshold=THRESHOLD,
            occurred_at=datetime(2026, 6, 1, tzinfo=UTC),
            actor="cli:test",
            **fields,
        )

    if refused_with is not None:
        error, pattern = refused_with
        with pytest.raises(error, match=pattern):
            fire()
        assert lead.version == before
        return
    fire()
    assert lead.version == before + 1
    for envelope in _encoded(_collect(lead)):
        validate_envelope(envelope)


BANT = {"budget": "10k", "authority": "cto", "need": "audit", "timeline": "Q3"}


def test_whitespace_only_bant_is_refused() -> None:
    _expect(_sql_lead(), "qualify_sql", (GuardFailed, "BANT is incomplete: missing budget"),
            bant={**BANT, "budget": "  "})


def test_padded_bant_is_accepted_trimmed_and_valid() -> None:
    _expect(_sql_lead(), "qualify_sql", None, bant={**BANT, "budget": "  10k "})


def _won_ready_lead() -> Lead:
    lead = _sql_lead()
    lead.transition(
        "qualify_sql",
        bant=BANT,
        mql_threshold=THRESHOLD,
        occurred_at=datetime(2026, 5, 1, tzinfo=UTC),
        actor="cli:test",
    )
    return lead


def test_a_currency_that_is_not_a_3_letter_code_is_refused() -> None:
    _expect(_won_ready_lead(), "win", (GuardFailed, "a 3-letter ISO 4217 currency code"),
            amount=100.0, currency="dollars")


def test_a_padded_lower_case_currency_is_accepted_and_valid() -> None:
    _expect(_won_ready_lead(), "win", None, amount=100.0, currency=" usd ")


def test_an_sql_with_an_expected_amount_is_accepted_and_valid() -> None:
    _expect(_sql_lead(), "qualify_sql", None, bant=BANT, amount=12_000.0, currency=" eur ")


def test_an_sql_with_an_amount_but_no_currency_is_refused() -> None:
    _expect(_sql_lead(), "qualify_sql", (GuardFailed, "a 3-letter ISO 4217 currency code"), bant=BANT,
            amount=12_000.0)
