"""SLA clocks of SPEC §9.3: business and 24x7 time, weekends, holidays, DST, restarts, stops at the deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from lifecycle.operations.policy import SlaRule, parse_policy
from lifecycle.operations.sla import Clock, ClockEvent, clock_at, clocks, runs, timers

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = parse_policy("""
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }
holidays = ["2026-12-24", "2026-12-25"]
[calendars.apac]
timezone = "Asia/Tokyo"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
[reps.maria]
calendar = "emea"
[reps.kenji]
calendar = "apac"

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "5m"
clock = "business"
warn_at = 0.8
on_breach = ["alert", "reassign"]

[[sla]]
id = "office"
start = "assigned"
stop = ["contacted", "disqualified"]
target = "2h"
clock = "business"
calendar = "emea"

[[sla]]
id = "to-owner"
start = "mql"
stop = ["assigned"]
target = "2h"
clock = "business"

[[sla]]
id = "day"
start = "sal"
stop = ["sql", "recycled"]
target = "24h"
clock = "calendar"
warn_at = 0.5
""")
RULES = {rule.id: rule for rule in POLICY.sla}
FIRST, OFFICE, TO_OWNER, DAY = RULES["first-contact"], RULES["office"], RULES["to-owner"], RULES["day"]


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
           micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def ev(at: datetime, *kinds: str, owner: str | None = "maria") -> ClockEvent:
    return ClockEvent(at, frozenset(kinds), owner)


FAR = utc(2027, 6, 1)


def only(rule: SlaRule, events: list[ClockEvent], as_of: datetime = FAR) -> Clock:
    found = clocks(POLICY, rule, events, as_of)
    assert len(found) == 1
    return found[0]


def test_a_business_clock_skips_the_weekend() -> None:
    clock = only(FIRST, [ev(berlin(2026, 2, 27, 17, 58), "assigned")])  # a Friday, 2 min before closing
    assert clock.warn_at == berlin(2026, 3, 2, 8, 2)  # 4 min: 2 on Friday, 2 on Monday
    assert clock.deadline == berlin(2026, 3, 2, 8, 3)
    assert clock.status == "breached" and clock.owner == "maria"
    sunday = clock_at(POLICY, FIRST, [ev(berlin(2026, 2, 27, 17, 58), "assigned")], berlin(2026, 3, 1, 12, 0))
    assert sunday is not None and (sunday.status, sunday.accumulated) == ("open", timedelta(minutes=2))


def test_a_business_clock_skips_holidays() -> None:
    clock = only(FIRST, [ev(berlin(2026, 12, 23, 17, 59), "assigned")])  # Wednesday; Thu, Fri are holidays
    assert clock.deadline == berlin(2026, 12, 28, 8, 4)
    assert clock.warn_at == berlin(2026, 12, 28, 8, 3)


def test_a_business_clock_across_each_berlin_dst_change() -> None:
    spring = only(FIRST, [ev(berlin(2026, 3, 27, 17, 58), "assigned")])  # Friday CET → Monday CEST
    assert spring.deadline == berlin(2026, 3, 30, 8, 3) == utc(2026, 3, 30, 6, 3)
    autumn = only(FIRST, [ev(berlin(2026, 10, 23, 17, 58), "assigned")])  # Friday CEST → Monday CET
    assert autumn.deadline == berlin(2026, 10, 26, 8, 3) == utc(2026, 10, 26, 7, 3)


def test_a_calendar_clock_counts_real_time_across_dst() -> None:
    spring = only(DAY, [ev(berlin(2026, 3, 28, 12, 0), "sal")])
    assert spring.deadline == berlin(2026, 3, 29, 13, 0)  # 24 h later; the wall clock lost an hour
    assert spring.warn_at == berlin(2026, 3, 29, 0, 0)
    autumn = only(DAY, [ev(berlin(2026, 10, 24, 12, 0), "sal")])
    assert autumn.deadline == berlin(2026, 10, 25, 11, 0)


def test_the_owners_calendar_counts_and_a_rules_calendar_overrides_it() -> None:
    start = utc(2026, 3, 2, 8, 30)  # Monday 09:30 in Berlin, 17:30 in Tokyo (closed)
    kenji = only(FIRST, [ev(start, "assigned", owner="kenji")])
    assert kenji.deadline == utc(2026, 3, 3, 0, 5)  # Tuesday 09:05 in Tokyo
    assert only(FIRST, [ev(start, "assigned", owner="maria")]).deadline == utc(2026, 3, 2, 8, 35)
    # `office` counts emea's hours whoever owns the lead
    assert only(OFFICE, [ev(start, "assigned", owner="kenji")]).deadline == utc(2026, 3, 2, 10, 30)


def test_without_an_owner_a_business_clock_counts_24x7_until_one_is_assigned() -> None:
    saturday = berlin(2026, 3, 7, 10, 0)
    clock = only(TO_OWNER, [ev(saturday, "mql", owner=None)], as_of=saturday + timedelta(hours=1))
    assert clock.deadline == saturday + timedelta(hours=2) and clock.status == "open"
    # owned after an hour by maria (not a stop of this rule): the second hour is hers, on Monday morning
    reassigned = [ev(saturday, "mql", owner=None), ev(saturday + timedelta(hours=1), "touched", owner="maria")]
    clock = only(TO_OWNER, reassigned)
    assert clock.deadline == berlin(2026, 3, 9, 9, 0)
    assert clock.owners == ((saturday, None), (saturday + timedelta(hours=1), "maria"))


def test_a_new_start_restarts_the_clock() -> None:
    t0 = berlin(2026, 3, 2, 9, 0)
    events = [ev(t0, "assigned"), ev(t0 + timedelta(minutes=3), "assigned", owner="kenji")]
    first, second = clocks(POLICY, OFFICE, events, FAR)
    assert (first.status, first.ended_by, first.ended_at) == ("restarted", "restart", t0 + timedelta(minutes=3))
    assert first.accumulated == timedelta(minutes=3)
    assert second.started_at == t0 + timedelta(minutes=3) and second.deadline == t0 + timedelta(hours=2, minutes=3)
    assert second.status == "breached" and second.owner == "kenji"
    # a restart after the deadline leaves the first clock breached
    late = [ev(t0, "assigned"), ev(t0 + timedelta(hours=3), "assigned")]
    assert [c.status for c in clocks(POLICY, OFFICE, late, FAR)] == ["breached", "breached"]


def test_a_stop_exactly_at_the_deadline_is_met() -> None:
    t0 = berlin(2026, 3, 2, 9, 0)
    deadline = t0 + timedelta(minutes=5)
    met = only(FIRST, [ev(t0, "assigned"), ev(deadline, "contacted")])
    assert (met.status, met.deadline, met.ended_at, met.accumulated) == ("met", deadline, deadline, timedelta(minutes=5))
    late = only(FIRST, [ev(t0, "assigned"), ev(deadline + timedelta(microseconds=1), "contacted")])
    assert late.status == "breached" and late.accumulated == timedelta(minutes=5, microseconds=1)
    # the operator fires only what is due strictly before the event it handles next
    assert [t.kind for t in timers(POLICY, FIRST, [ev(t0, "assigned"), ev(deadline, "contacted")], FAR)] == ["warned"]
    assert [(t.kind, t.at) for t in timers(POLICY, FIRST, [ev(t0, "assigned")], deadline)] == [
        ("warned", t0 + timedelta(minutes=4))]
    due = timers(POLICY, FIRST, [ev(t0, "assigned")], deadline + timedelta(microseconds=1))
    assert [(t.kind, t.at, t.owner, t.started_at, t.deadline) for t in due] == [
        ("warned", t0 + timedelta(minutes=4), "maria", t0, deadline), ("breached", deadline, "maria", t0, deadline)]


def test_a_restart_exactly_at_the_deadline_is_late() -> None:
    """The breach's own reassignment restarts the clock at the deadline instant: that run breached (a stop
    there is in time, a restart is not), and the operator's timers agree with the query's status."""
    t0 = berlin(2026, 3, 2, 9, 0)
    deadline = t0 + timedelta(minutes=5)
    events = [ev(t0, "assigned"), ev(deadline, "assigned", owner="jonas")]
    first, second = clocks(POLICY, FIRST, events, FAR)
    assert (first.status, first.ended_by, first.ended_at) == ("breached", "restart", deadline)
    assert second.started_at == deadline and second.status == "breached"  # nobody ever called
    due = timers(POLICY, FIRST, events, deadline + timedelta(microseconds=1))
    assert [(t.kind, t.started_at) for t in due] == [("warned", t0), ("breached", t0)]
    early = [ev(t0, "assigned"), ev(deadline - timedelta(microseconds=1), "assigned", owner="jonas")]
    assert clocks(POLICY, FIRST, early, FAR)[0].status == "restarted"


def test_the_state_of_an_open_clock_at_an_instant() -> None:
    t0 = berlin(2026, 3, 2, 17, 58)
    events = [ev(t0, "assigned")]
    deadline = berlin(2026, 3, 3, 8, 3)
    assert clock_at(POLICY, FIRST, events, t0 - timedelta(seconds=1)) is None
    at_close = clock_at(POLICY, FIRST, events, berlin(2026, 3, 2, 23, 0))
    assert at_close is not None and (at_close.status, at_close.accumulated) == ("open", timedelta(minutes=2))
    at_deadline = clock_at(POLICY, FIRST, events, deadline)
    assert at_deadline is not None and (at_deadline.status, at_deadline.accumulated) == ("open", timedelta(minutes=5))
    after = clock_at(POLICY, FIRST, events, deadline + timedelta(microseconds=1))
    assert after is not None and after.status == "breached"


def test_only_the_first_stop_counts_and_stops_before_a_start_do_nothing() -> None:
    t0 = berlin(2026, 3, 2, 9, 0)
    events = [ev(t0 - timedelta(minutes=1), "contacted"), ev(t0, "assigned"), ev(t0 + timedelta(minutes=1), "contacted"),
              ev(t0 + timedelta(minutes=9), "contacted")]
    clock = only(FIRST, events)
    assert (clock.status, clock.ended_at) == ("met", t0 + timedelta(minutes=1))
    assert timers(POLICY, FIRST, events, FAR) == ()


def test_events_are_taken_by_occurred_at_even_when_they_arrive_late() -> None:
    t0 = berlin(2026, 3, 2, 9, 0)
    in_store_order = [ev(t0 + timedelta(minutes=2), "contacted"), ev(t0, "assigned")]  # the contact arrived first
    assert only(FIRST, in_store_order).status == "met"


def test_an_event_of_a_stop_kind_and_the_start_kind_stops_then_starts() -> None:
    t0 = berlin(2026, 3, 2, 9, 0)
    rule = SlaRule("s", "recycled", frozenset({"rejected"}), timedelta(hours=1), "calendar", None, None, ())
    rejected = ClockEvent(t0 + timedelta(minutes=10), frozenset({"rejected", "recycled"}), None)
    first, second = clocks(POLICY, rule, [ClockEvent(t0, frozenset({"recycled"}), None), rejected], FAR)
    assert (first.status, first.ended_by) == ("met", "stop")
    assert second.started_at == rejected.at and second.status == "breached"


def test_runs_remembered_between_calls_are_the_runs_computed_afresh() -> None:
    """The operator asks for a lead's runs at each of its events; with a cache, runs whose start, end and
    owners did not change are taken from it — and every answer equals the one computed from scratch,
    also when an event arrives late (an insertion in the middle) or the owner changes during a run."""
    t0 = berlin(2026, 3, 2, 9, 0)
    stream = [ev(t0, "assigned"), ev(t0 + timedelta(minutes=3), "touched", owner="jonas"),
              ev(t0 + timedelta(hours=2), "assigned", owner="jonas"), ev(t0 + timedelta(hours=30), "contacted"),
              ev(t0 + timedelta(days=3), "assigned"), ev(t0 + timedelta(minutes=1), "assigned", owner="jonas")]
    cache: dict[tuple[object, ...], object] = {}
    known: list[ClockEvent] = []
    for event in stream:
        known = sorted([*known, event], key=lambda e: e.at)
        assert runs(POLICY, FIRST, known, cache) == runs(POLICY, FIRST, known)  # type: ignore[arg-type]
    assert len(runs(POLICY, FIRST, known)) == 4 and cache
