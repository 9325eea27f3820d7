"""The Lead refuses an impossible history and absurd money, and stores channel keys normalized.

- Time: nothing happens to a lead before its capture; a stage change never goes before the
  lead's latest stage change (touches, scores, assignments, contacts may arrive late between
  stage changes). The refusal names the lead and both times. Only commands check: applying
  stored events (replay) never does.
- Money: a won amount is finite, > 0 and at most 1e12; its currency is 3 letters (ISO 4217
  form), stored upper-case.
- Channel and campaign keys are stored trimmed and lower-case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from lifecycle.domain import events as ev
from lifecycle.domain.errors import GuardFailed, ImpossibleTime, InvalidCommand, LifecycleError
from lifecycle.domain.lead import Lead
from lifecycle.domain.stages import MAX_AMOUNT, Stage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
BANT = {"budget": "50k", "authority": "CFO", "need": "reporting", "timeline": "Q3"}


def captured(at: datetime = T0) -> Lead:
    lead = Lead.capture(uuid4(), channel="webinar", occurred_at=at, actor="t", email="ada@example.com")
    lead.collect_events()
    return lead


def fire(lead: Lead, trigger: str, at: datetime, **data: Any) -> None:
    lead.transition(trigger, occurred_at=at, actor="t", mql_threshold=70, **data)


def at_sql(at: datetime = T0) -> Lead:
    """A lead captured at T0 that reached sql at T0 + 3 h (stage changes at +1 h, +2 h, +3 h)."""
    lead = captured()
    lead.record_score(total=90, occurred_at=T0, actor="t")
    fire(lead, "qualify_mql", T0 + H)
    lead.assign(owner="ana", occurred_at=T0 + H, actor="t")
    fire(lead, "accept", T0 + 2 * H)
    fire(lead, "qualify_sql", T0 + 3 * H, bant=BANT)
    lead.collect_events()
    return lead


def refused(lead: Lead, error: type[LifecycleError], action: Callable[[], None]) -> str:
    version = lead.version
    with pytest.raises(error) as info:
        action()
    assert lead.version == version and not lead.pending_events
    return str(info.value)


# ---------------------------------------------------------------- time


BEFORE = T0 - timedelta(minutes=1)
NON_STAGE: dict[str, Callable[[Lead, datetime], None]] = {
    "a touch": lambda lead, at: lead.touch(channel="email", occurred_at=at, actor="t"),
    "a score": lambda lead, at: lead.record_score(total=50, occurred_at=at, actor="t"),
    "an assignment": lambda lead, at: lead.assign(owner="ana", occurred_at=at, actor="t"),
    "a contact": lambda lead, at: lead.contact(owner="ana", occurred_at=at, actor="t"),
    "a consent change": lambda lead, at: lead.set_consent(given=False, occurred_at=at, actor="t"),
    "an erasure": lambda lead, at: lead.erase_personal_data(occurred_at=at, actor="t"),
}


@pytest.mark.parametrize("what", sorted(NON_STAGE))
def test_nothing_happens_before_the_capture(what: str) -> None:
    lead = captured()
    message = refused(lead, ImpossibleTime, lambda: NON_STAGE[what](lead, BEFORE))
    assert str(lead.id) in message and what in message
    assert "2026-03-02T08:59:00Z" in message and "2026-03-02T09:00:00Z" in message  # both times
    assert "capture" in message


def test_a_stage_change_before_the_capture_is_refused_naming_both_times() -> None:
    lead = captured()
    lead.record_score(total=90, occurred_at=T0, actor="t")
    lead.collect_events()
    message = refused(lead, ImpossibleTime, lambda: fire(lead, "qualify_mql", T0 - 2 * H))
    assert message == (f"lead {lead.id}: 'qualify_mql' that occurred at 2026-03-02T07:00:00Z is refused: it is "
                       "before the lead's capture at 2026-03-02T09:00:00Z: nothing happens to a lead before it "
                       "is captured (check occurred_at)")


def test_a_stage_change_before_the_latest_stage_change_is_refused_naming_both_times() -> None:
    lead = at_sql()
    message = refused(lead, ImpossibleTime,
                      lambda: fire(lead, "win", T0 + 2 * H, amount=100.0, currency="EUR"))
    assert str(lead.id) in message and "'win'" in message
    assert "2026-03-02T11:00:00Z" in message and "2026-03-02T12:00:00Z" in message
    assert "latest stage change (into 'sql')" in message
    assert isinstance(ImpossibleTime(lead.id, "x", T0, "capture", T0), InvalidCommand)  # a command's data is wrong


def test_times_given_in_another_zone_are_named_in_utc() -> None:
    lead = captured()
    cet = datetime(2026, 3, 2, 9, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Zurich"))
    message = refused(lead, ImpossibleTime, lambda: lead.record_score(total=1, occurred_at=cet - H, actor="t"))
    assert "2026-03-02T08:30:00Z" in message


def test_late_non_stage_events_between_stage_changes_are_accepted() -> None:
    lead = at_sql()
    for what, act in NON_STAGE.items():
        if what != "an erasure":
            act(lead, T0 + 30 * timedelta(minutes=1))  # after the capture, before the latest stage change
    lead.erase_personal_data(occurred_at=T0, actor="t")  # at the capture instant itself
    assert len(lead.collect_events()) == 6
    assert lead.stage is Stage.SQL


def test_a_stage_change_at_the_same_instant_as_the_latest_one_is_accepted() -> None:
    lead = at_sql()
    fire(lead, "win", T0 + 3 * H, amount=100.0, currency="EUR")
    fire(lead, "recycle", T0 + 3 * H, reason="upsell")
    assert [type(e) for e in lead.collect_events()] == [ev.LeadWon, ev.LeadRecycled]


def test_replaying_stored_history_never_re_checks_the_times() -> None:
    """A store written before the rules (an event before its capture) still folds: apply only assigns."""
    lead = Lead.capture(uuid4(), channel="webinar", occurred_at=T0, actor="t", email="ada@example.com")
    lead.record_score(total=90, occurred_at=T0, actor="t")
    fire(lead, "qualify_mql", T0 + H)
    events = lead.collect_events()
    # the qualification moved to before the capture, as an old store may hold it
    events[-1] = dataclasses.replace(events[-1], occurred_at=T0 - 5 * H)
    folded = None
    for event in events:
        folded = event.mutate(folded)
    assert folded is not None and folded.stage is Stage.MQL and folded.last_change_at == T0 - 5 * H


# ---------------------------------------------------------------- money


@pytest.mark.parametrize("amount", [1.7e308, MAX_AMOUNT * (1 + 1e-12), 5e12, 0.0, -3.0])
def test_an_absurd_or_non_positive_amount_is_refused_saying_the_bound(amount: float) -> None:
    lead = at_sql()
    message = refused(lead, GuardFailed, lambda: fire(lead, "win", T0 + 4 * H, amount=amount, currency="EUR"))
    assert "1,000,000,000,000" in message and "--amount" in message and f"got {amount:g}" in message
    assert "--currency" not in message


def test_the_largest_amount_is_accepted() -> None:
    lead = at_sql()
    fire(lead, "win", T0 + 4 * H, amount=MAX_AMOUNT, currency="EUR")
    (won,) = lead.collect_events()
    assert isinstance(won, ev.LeadWon) and won.amount == MAX_AMOUNT


@pytest.mark.parametrize("currency", ["EURO", "E1R", "EU", "€€€", "ÄÖÜ", "US D"])
def test_a_currency_not_in_iso_4217_form_is_refused(currency: str) -> None:
    lead = at_sql()
    message = refused(lead, GuardFailed, lambda: fire(lead, "win", T0 + 4 * H, amount=10.0, currency=currency))
    assert "ISO 4217" in message and repr(currency) in message and "--amount" not in message


@pytest.mark.parametrize(("given", "stored"), [("usd", "USD"), (" Chf ", "CHF"), ("EUR", "EUR")])
def test_a_currency_is_stored_upper_case(given: str, stored: str) -> None:
    lead = at_sql()
    fire(lead, "win", T0 + 4 * H, amount=10.0, currency=given)
    (won,) = lead.collect_events()
    assert isinstance(won, ev.LeadWon) and won.currency == stored


# ---------------------------------------------------------------- channel keys


def test_capture_and_touch_store_channel_and_campaign_trimmed_and_lower_case() -> None:
    lead = Lead.capture(uuid4(), channel=" Webinar ", campaign="Q1-Cloud ", occurred_at=T0, actor="t",
                        email="ada@example.com")
    lead.touch(channel="PAID_search", campaign="  Brand-Search", occurred_at=T0 + H, actor="t")
    capture, touch = lead.collect_events()
    assert isinstance(capture, ev.LeadCaptured) and isinstance(touch, ev.LeadTouched)
    assert (capture.channel, capture.campaign) == ("webinar", "q1-cloud")
    assert (touch.channel, touch.campaign) == ("paid_search", "brand-search")
    assert (lead.channel, lead.campaign) == ("webinar", "q1-cloud")
