"""Working hours, holidays, absences and business-time arithmetic, across weekends, holidays, DST and zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.operations.calendars import (
    absence_end,
    add_business,
    business_between,
    is_absent,
    is_working,
    next_change,
    working_periods,
)
from lifecycle.operations.policy import Absence, Calendar, Minutes, Rep

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS_8_18 = (((480, 1080),),) * 5 + ((), ())
EMEA = Calendar("emea", "Europe/Berlin", WEEKDAYS_8_18, frozenset({date(2026, 12, 24), date(2026, 12, 25)}))


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
           micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def only(day: int, *spans: Minutes, zone: str = "Europe/Berlin") -> Calendar:
    """Hours on one weekday (0 = Monday) only."""
    hours = tuple(tuple(spans) if d == day else () for d in range(7))
    return Calendar("c", zone, hours, frozenset())


def test_working_hours_are_start_inclusive_end_exclusive_in_the_local_zone() -> None:
    assert not is_working(EMEA, berlin(2026, 3, 2, 7, 59, 59))
    assert is_working(EMEA, berlin(2026, 3, 2, 8, 0))
    assert is_working(EMEA, berlin(2026, 3, 2, 17, 59, 59, 999999))
    assert not is_working(EMEA, berlin(2026, 3, 2, 18, 0))
    assert is_working(EMEA, utc(2026, 3, 2, 7, 0))  # 08:00 CET
    assert not is_working(EMEA, utc(2026, 7, 6, 16, 30))  # 18:30 CEST
    assert not is_working(EMEA, berlin(2026, 3, 7, 10, 0))  # Saturday
    assert not is_working(EMEA, berlin(2026, 12, 24, 10, 0))  # a holiday: a local date without hours


def test_next_change_is_the_next_flip_across_a_weekend_and_a_holiday() -> None:
    assert next_change(EMEA, berlin(2026, 3, 2, 10, 0)) == berlin(2026, 3, 2, 18, 0)
    assert next_change(EMEA, berlin(2026, 3, 2, 18, 0)) == berlin(2026, 3, 3, 8, 0)
    assert next_change(EMEA, berlin(2026, 3, 6, 18, 0)) == berlin(2026, 3, 9, 8, 0)  # Friday → Monday
    assert next_change(EMEA, berlin(2026, 12, 23, 18, 0)) == berlin(2026, 12, 28, 8, 0)  # 24, 25 + weekend
    always = Calendar("24x7", "UTC", (((0, 1440),),) * 7, frozenset())
    assert next_change(always, utc(2026, 1, 1)) is None  # working for the whole search limit


def test_the_monday_after_each_berlin_dst_change_starts_at_a_new_utc_hour() -> None:
    assert working_periods(EMEA, utc(2026, 3, 23), utc(2026, 3, 24)) == [(utc(2026, 3, 23, 7), utc(2026, 3, 23, 17))]
    assert working_periods(EMEA, utc(2026, 3, 30), utc(2026, 3, 31)) == [(utc(2026, 3, 30, 6), utc(2026, 3, 30, 16))]
    assert working_periods(EMEA, utc(2026, 10, 26), utc(2026, 10, 27)) == [
        (utc(2026, 10, 26, 7), utc(2026, 10, 26, 17))]


@pytest.mark.parametrize(("day", "hours", "expected"), [
    (date(2026, 3, 29), (0, 1440), timedelta(hours=23)),  # spring forward: 02:00-03:00 does not exist
    (date(2026, 10, 25), (0, 1440), timedelta(hours=25)),  # fall back: 02:00-03:00 happens twice
    (date(2026, 3, 29), (60, 240), timedelta(hours=2)),  # 01:00-04:00 on the short day
    (date(2026, 10, 25), (60, 240), timedelta(hours=4)),  # and on the long day
    (date(2026, 3, 29), (150, 160), timedelta(0)),  # 02:30-02:40 never happens
    (date(2026, 10, 25), (150, 160), timedelta(minutes=20)),  # 02:30-02:40 happens twice
    (date(2026, 4, 5), (150, 160), timedelta(minutes=10)),  # an ordinary Sunday
])
def test_a_working_day_over_a_berlin_dst_change(day: date, hours: Minutes, expected: timedelta) -> None:
    calendar = only(6, hours)  # Sundays
    start = datetime.combine(day, time(0), BERLIN)
    assert business_between(calendar, start, start + timedelta(days=1, hours=1)) == expected


def test_the_repeated_hour_counts_twice_and_the_skipped_hour_never() -> None:
    calendar = only(6, (150, 160))
    assert working_periods(calendar, utc(2026, 10, 24), utc(2026, 10, 26)) == [
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 40)), (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 1, 40))]
    assert next_change(calendar, utc(2026, 3, 28)) == utc(2026, 4, 5, 0, 30)  # the gap Sunday is skipped


def test_add_business_runs_over_a_weekend_and_holidays() -> None:
    assert add_business(EMEA, berlin(2026, 3, 6, 17, 0), timedelta(hours=2)) == berlin(2026, 3, 9, 9, 0)
    assert add_business(EMEA, berlin(2026, 12, 23, 17, 30), timedelta(hours=1)) == berlin(2026, 12, 28, 8, 30)
    assert add_business(EMEA, berlin(2026, 3, 7, 12, 0), timedelta(minutes=1)) == berlin(2026, 3, 9, 8, 1)
    assert add_business(EMEA, berlin(2026, 3, 2, 8, 0), timedelta(hours=10)) == berlin(2026, 3, 2, 18, 0)  # not Tue
    assert add_business(EMEA, berlin(2026, 3, 7, 12, 0), timedelta(0)) == berlin(2026, 3, 7, 12, 0)
    assert add_business(EMEA, berlin(2026, 3, 2, 9, 0), timedelta(hours=50)) == berlin(2026, 3, 9, 9, 0)  # a week
    with pytest.raises(ValueError, match="negative"):
        add_business(EMEA, berlin(2026, 3, 2), timedelta(seconds=-1))


def test_business_between_across_a_weekend_and_dst() -> None:
    assert business_between(EMEA, berlin(2026, 3, 27, 17, 0), berlin(2026, 3, 30, 9, 0)) == timedelta(hours=2)
    assert business_between(EMEA, berlin(2026, 3, 30, 9, 0), berlin(2026, 3, 27, 17, 0)) == -timedelta(hours=2)
    assert business_between(EMEA, utc(2026, 3, 23), utc(2026, 3, 30)) == timedelta(hours=50)


@pytest.mark.parametrize(("zone", "local_start", "expected_utc"), [
    # Friday 16:00 + 2 h of 09:00-17:00 → Monday 10:00 local, wherever the zone is:
    # west of UTC, DST from 2026-03-08 between them (EST −5 on Friday, EDT −4 on Monday)
    ("America/New_York", datetime(2026, 3, 6, 16, 0), utc(2026, 3, 9, 14, 0)),
    # east of UTC, no DST: Monday 10:00 JST is 01:00 UTC
    ("Asia/Tokyo", datetime(2026, 3, 6, 16, 0), utc(2026, 3, 9, 1, 0)),
    # southern hemisphere, DST ends on Sunday 2026-04-05 (AEDT +11 → AEST +10): Monday 10:00 is 00:00 UTC
    ("Australia/Sydney", datetime(2026, 4, 3, 16, 0), utc(2026, 4, 6, 0, 0)),
    # a half-hour offset
    ("Asia/Kolkata", datetime(2026, 3, 6, 16, 0), utc(2026, 3, 9, 4, 30)),
])
def test_add_business_in_zones_on_both_sides_of_utc(zone: str, local_start: datetime, expected_utc: datetime) -> None:
    calendar = Calendar("c", zone, (((9 * 60, 17 * 60),),) * 5 + ((), ()), frozenset())
    start = local_start.replace(tzinfo=ZoneInfo(zone))
    deadline = add_business(calendar, start, timedelta(hours=2))
    assert deadline == expected_utc
    assert deadline.astimezone(ZoneInfo(zone)).time() == time(10, 0)


def test_absences_cover_local_dates_in_the_reps_zone() -> None:
    sydney = Calendar("syd", "Australia/Sydney", WEEKDAYS_8_18, frozenset())
    rep = Rep("kim", "syd", None, (Absence(date(2026, 3, 2), date(2026, 3, 4)), Absence(date(2026, 3, 4), date(2026, 3, 5))))
    assert not is_absent(rep, sydney, utc(2026, 3, 1, 12, 59))  # 23:59 on 1 March in Sydney
    assert is_absent(rep, sydney, utc(2026, 3, 1, 13, 0))  # 00:00 on 2 March in Sydney (AEDT, +11)
    # back-to-back absences join: back at local midnight of 5 March
    assert absence_end(rep, sydney, utc(2026, 3, 2, 12)) == utc(2026, 3, 4, 13, 0)
    assert not is_absent(rep, sydney, utc(2026, 3, 4, 13, 0))
    assert absence_end(rep, sydney, utc(2026, 3, 6)) is None


def test_a_long_run_of_holidays_on_the_only_working_day_is_waited_out() -> None:
    sundays = [date(2026, 3, 1) + timedelta(weeks=i) for i in range(3)]
    calendar = Calendar("c", "Europe/Berlin", ((),) * 6 + (((600, 660),),), frozenset(sundays))
    assert next_change(calendar, berlin(2026, 2, 23)) == berlin(2026, 3, 22, 10, 0)  # 27 idle days
    assert add_business(calendar, berlin(2026, 2, 23), timedelta(hours=1)) == berlin(2026, 3, 22, 11, 0)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        is_working(EMEA, datetime(2026, 3, 2, 9))


# ---------------------------------------------------------------------------------------------- properties

ZONES = ["Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney",
         "Asia/Kolkata", "Pacific/Auckland", "America/Sao_Paulo", "UTC", "Europe/London", "Pacific/Chatham"]


def _spans(cuts: set[int]) -> tuple[Minutes, ...]:
    """An even number of distinct half-hour cuts, paired: sorted, non-overlapping spans of a day."""
    ordered = sorted(cuts)
    return tuple((ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2))


# built once at import: strategies built inside a draw are rebuilt for every example (slow)
SPANS = st.sets(st.integers(0, 48).map(lambda h: h * 30), max_size=6).map(_spans)
WEEKS = st.lists(SPANS, min_size=7, max_size=7)
HOLIDAYS = st.frozensets(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=20)


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    week = draw(WEEKS)
    if not any(week):
        week[draw(st.integers(0, 6))] = ((9 * 60, 17 * 60),)
    return Calendar("c", draw(st.sampled_from(ZONES)), tuple(week), draw(HOLIDAYS))


instants = st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC))
durations = st.integers(0, 30 * 86_400_000_000).map(lambda us: timedelta(microseconds=us))


def oracle_working(calendar: Calendar, at: datetime) -> bool:
    """Straight from the definition: the local wall time within the local date's hours, not a holiday."""
    local = at.astimezone(ZoneInfo(calendar.timezone))
    if local.date() in calendar.holidays:
        return False
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    return any(start * 60 <= seconds < end * 60 for start, end in calendar.hours[local.weekday()])


@settings(max_examples=300, deadline=None)
@given(calendars(), instants, durations)
def test_add_business_and_business_between_are_inverse(calendar: Calendar, start: datetime,
                                                       duration: timedelta) -> None:
    deadline = add_business(calendar, start, duration)
    assert deadline >= start
    assert business_between(calendar, start, deadline) == duration
    assert deadline == start or oracle_working(calendar, deadline - timedelta(microseconds=1))


@settings(max_examples=300, deadline=None)
@given(calendars(), instants, st.integers(0, 20 * 86_400).map(lambda s: timedelta(seconds=s)))
def test_adding_the_time_between_two_instants_reaches_the_later_one(calendar: Calendar, a: datetime,
                                                                    gap: timedelta) -> None:
    b = a + gap
    reached = add_business(calendar, a, business_between(calendar, a, b))
    assert a <= reached <= b
    assert business_between(calendar, reached, b) == timedelta(0)  # only idle time is left


@settings(max_examples=300, deadline=None)
@given(calendars(), instants)
def test_is_working_and_next_change_agree_with_the_definition(calendar: Calendar, at: datetime) -> None:
    state = is_working(calendar, at)
    assert state == oracle_working(calendar, at)
    flip = next_change(calendar, at)
    if flip is None:
        return
    assert flip > at
    assert oracle_working(calendar, flip) != state
    assert oracle_working(calendar, flip - timedelta(microseconds=1)) == state
    assert oracle_working(calendar, at + (flip - at) / 2) == state
