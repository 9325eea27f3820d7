"""Inbound decoding refuses values no store could hold, with reasons (no IO)."""

from __future__ import annotations

import orjson
import pytest

from lifecycle.domain import commands as cmd
from lifecycle.domain.stages import TRIGGERS
from schemas.inbound import BadMessage, decode, load_schema


def message(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "specversion": "1.0", "id": "m-1", "source": "web-forms",
        "type": "leadledger.inbound.capture.v1", "time": "2026-03-02T09:15:00Z",
        "data": {"email": "ada@example.com", "channel": "webinar"},
    }
    base.update(overrides)
    return orjson.dumps(base)


def test_a_valid_capture_decodes_to_a_command() -> None:
    command = decode(message())
    assert isinstance(command, cmd.Capture)
    assert command.message_key == ("web-forms", "m-1")


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("0001-01-01T00:00:00+01:00", "out of range"),  # overflows when moved to UTC
        ("9999-12-31T23:59:59-01:00", "out of range"),
        ("1900-01-01T00:00:00Z", "outside 1970-2199"),
        ("2026-03-02T09:15:00", "must be date-time"),  # no zone
    ],
)
def test_times_no_lead_can_have_are_refused_with_a_reason(time: str, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        decode(message(time=time))


@pytest.mark.parametrize(
    "overrides",
    [
        {"id": "m\x00-1"},
        {"source": "web\x00forms"},
        {"data": {"email": "ada@example.com", "channel": "web\x00inar"}},
    ],
)
def test_nul_characters_are_refused_anywhere(overrides: dict[str, object]) -> None:
    with pytest.raises(BadMessage, match="NUL"):
        decode(message(**overrides))


def test_the_text_of_the_escape_is_no_nul_character() -> None:
    # a backslash, then "u0000": JSON writes it \\u0000, which holds the escape's bytes but no NUL
    command = decode(message(source="web\\u0000forms"))
    assert command.actor == "web\\u0000forms"


def test_the_published_transition_schema_names_exactly_the_stage_tables_triggers() -> None:
    # the file is a contract upstream senders read: a new row of the stage table goes here too
    trigger = load_schema("inbound/transition.v1.json")["properties"]["trigger"]
    assert trigger["enum"] == list(TRIGGERS)


def test_a_qualify_sql_message_passes_its_expected_amount_and_currency() -> None:
    bant = {"budget": "50k", "authority": "CFO", "need": "reporting", "timeline": "Q3"}
    command = decode(message(type="leadledger.inbound.transition.v1", data={
        "email": "ada@example.com", "trigger": "qualify_sql", "bant": bant, "amount": 12000, "currency": "eur"}))
    assert isinstance(command, cmd.Transition)
    assert (command.trigger, command.bant, command.amount, command.currency) == ("qualify_sql", bant, 12000.0, "eur")
    without = decode(message(type="leadledger.inbound.transition.v1", data={
        "email": "ada@example.com", "trigger": "qualify_sql", "bant": bant}))
    assert isinstance(without, cmd.Transition)
    assert (without.amount, without.currency) == (None, None)
