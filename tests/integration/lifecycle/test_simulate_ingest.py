"""Simulated traffic through the real write path (SQLite store): nothing refused, re-deliveries deduplicated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.domain.commands import LeadRef
from lifecycle.domain.stages import RULES, Stage
from lifecycle.inbound import InboundHandler, Tally
from lifecycle.settings import Settings
from lifecycle.simulate import generate

START = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LeadLedger]:
    ledger = bootstrap(Settings(home=tmp_path, secret=b"test-secret-of-16-bytes"))
    yield ledger
    ledger.store.close()


def expected_stages(messages: list[dict[str, object]]) -> dict[str, Stage]:
    """Each lead's final stage according to the messages (first deliveries only)."""
    stages: dict[str, Stage] = {}
    seen: set[tuple[object, object]] = set()
    for m in messages:
        key = (m["source"], m["id"])
        if key in seen:
            continue
        seen.add(key)
        data = m["data"]
        assert isinstance(data, dict)
        email = data["email"]
        if m["type"] == "leadledger.inbound.capture.v1":
            stages.setdefault(email, Stage.CAPTURED)
        elif m["type"] == "leadledger.inbound.transition.v1":
            stages[email] = RULES[data["trigger"]].dest
    return stages


def test_simulated_traffic_is_applied_without_a_single_refusal(app: LeadLedger) -> None:
    messages = list(generate(leads=300, seed=11, start=START, days=45))
    redeliveries = len(messages) - len({(m["source"], m["id"]) for m in messages})
    assert redeliveries > 0

    tally = Tally()
    refused: list[str] = []
    handler = InboundHandler(app, batch_size=250)
    for result in handler.handle_stream((i, orjson.dumps(m)) for i, m in enumerate(messages, start=1)):
        tally.add(result)
        if result.status == "dead":
            refused.append(f"message {result.position}: {result.reason}")

    assert refused == []
    assert tally.dead_lettered == 0
    assert tally.duplicates == redeliveries
    assert tally.applied == len(messages) - redeliveries

    # The store agrees with the simulator about where every lead ended up.
    expected = expected_stages(messages)
    assert len(expected) == 300
    for email, stage in expected.items():
        lead = app.load(app.lead_id_for(LeadRef(email=email)))
        assert lead is not None, email
        assert lead.stage is stage, email
    assert len(set(expected.values())) >= 5  # a real mix of outcomes, not one happy path


def test_feeding_the_same_traffic_again_changes_nothing(app: LeadLedger) -> None:
    messages = [orjson.dumps(m) for m in generate(leads=40, seed=5, start=START, days=10)]
    handler = InboundHandler(app)
    first, second = Tally(), Tally()
    for result in handler.handle_stream(enumerate(messages)):
        first.add(result)
    head = app.store.head_position()
    for result in handler.handle_stream(enumerate(messages)):
        second.add(result)
    assert first.dead_lettered == 0
    assert second.as_json() == {"applied": 0, "duplicates": len(messages), "dead_lettered": 0, "skipped": 0}
    assert app.store.head_position() == head
