"""The HTTP parameters' declarations: the choices are the service's own, and a time parameter
accepts exactly what its published pattern admits (with a space for the + of an offset)."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadledger.http.params import (
    LEAD_ID_PATTERN,
    TIME_PATTERN,
    Conversion,
    FunnelBy,
    LeadsBy,
    Mode,
    Model,
    ParameterError,
    ReasonsBy,
    ReasonStage,
    SlaBy,
    SpeedBy,
    Stage,
    parse_lead_id,
    parse_time,
)
from lifecycle.domain.stages import FUNNEL_ORDER
from projections import sla
from projections.funnel import BYS as FUNNEL_BYS
from projections.query import CONVERSIONS, LEAD_BYS, MODELS, MODES, REASON_BYS, REASON_STAGES, SPEED_BYS

ADMITTED = re.compile(TIME_PATTERN.removesuffix("$") + r"\Z")


@pytest.mark.parametrize(("choice", "service"), [
    (Mode, MODES), (Model, MODELS), (Conversion, CONVERSIONS), (LeadsBy, LEAD_BYS), (FunnelBy, FUNNEL_BYS),
    (SpeedBy, SPEED_BYS), (SlaBy, sla.BYS), (Stage, tuple(s.value for s in FUNNEL_ORDER)),
    (ReasonStage, REASON_STAGES), (ReasonsBy, REASON_BYS),
])
def test_the_choices_are_the_services_own(choice: Any, service: tuple[str, ...]) -> None:
    assert get_args(choice) == service


@pytest.mark.parametrize(("text", "iso"), [
    ("2026-02-01T10:30:00+01:00", "2026-02-01T09:30:00+00:00"),
    ("2026-02-01T10:30:00 01:00", "2026-02-01T09:30:00+00:00"),  # '+' decoded to a space
    ("2026-02-01 10:30 01:00", "2026-02-01T09:30:00+00:00"),
    ("2026-02-01T08:30:00-01:00", "2026-02-01T09:30:00+00:00"),
])
def test_a_space_for_the_plus_of_an_offset_is_a_plus(text: str, iso: str) -> None:
    parsed = parse_time(text, "as_of")
    assert parsed is not None and parsed.isoformat() == iso


@pytest.mark.parametrize("text", ["", " 2026-02-01", "2026-02-01 ", "2026-02-01\n", "2026-02-01T10:30:00  01:00",
                                  "2026-02-01T10:30:00 0100", "0001-01-01T00:30:00 01:00"])
def test_what_the_pattern_refuses_is_a_400(text: str) -> None:
    assert ADMITTED.fullmatch(text) is None
    with pytest.raises(ParameterError, match=r"^as_of: "):
        parse_time(text, "as_of")


@settings(max_examples=200, deadline=None)
@given(st.from_regex(ADMITTED, fullmatch=True))
def test_everything_the_pattern_admits_is_parsed(text: str) -> None:
    assert parse_time(text, "from") is not None


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2})?([Zz]|[+ -][0-9]{2}:?[0-9]{2})?)?",
                     fullmatch=True) | st.text(max_size=30))
def test_parsed_exactly_when_admitted(text: str) -> None:
    try:
        parse_time(text, "to")
    except ParameterError:
        assert ADMITTED.fullmatch(text) is None, text
    else:
        assert ADMITTED.fullmatch(text) is not None, text


def test_a_lead_id_is_a_hyphenated_uuid() -> None:
    assert str(parse_lead_id("0A3C8F2E-0000-4000-8000-00000000000B")) == "0a3c8f2e-0000-4000-8000-00000000000b"
    for text in ("0a3c8f2e000040008000000000000000", "{0a3c8f2e-0000-4000-8000-00000000000b}",
                 "urn:uuid:0a3c8f2e-0000-4000-8000-00000000000b", "0a3c8f2e-0000-4000-8000-00000000000b\n"):
        assert re.fullmatch(LEAD_ID_PATTERN.removesuffix("$"), text) is None
        with pytest.raises(ParameterError, match=r"^lead_id: "):
            parse_lead_id(text)
