"""Trend intervals (ISO weeks, UTC months), the window a comparison is made with, and differences."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import windows
from projections.query import Query, QueryError
from schemas.facts import dt_to_us, format_us


def us(text: str) -> int:
    return dt_to_us(datetime.fromisoformat(text))


def test_weeks_are_iso_weeks_from_monday_and_the_edges_are_the_windows_own() -> None:
    # 2026-12-31 is a Thursday of ISO week 53 of 2026; 2027-01-04 a Monday, week 1 of 2027
    got = windows.intervals("week", us("2026-12-30T12:00:00+00:00"), us("2027-01-06T00:00:00+00:00"))
    assert [(format_us(a), format_us(b)) for a, b in got] == [
        ("2026-12-30T12:00:00.000000Z", "2027-01-04T00:00:00.000000Z"),
        ("2027-01-04T00:00:00.000000Z", "2027-01-06T00:00:00.000000Z"),
    ]
    assert [windows.label("week", windows.interval_start("week", a)) for a, _ in got] == ["2026-W53", "2027-W01"]


def test_months_are_utc_calendar_months() -> None:
    got = windows.intervals("month", us("2026-01-15T00:00:00+00:00"), us("2026-04-01T00:00:00+00:00"))
    assert [(format_us(a)[:10], format_us(b)[:10]) for a, b in got] == [
        ("2026-01-15", "2026-02-01"), ("2026-02-01", "2026-03-01"), ("2026-03-01", "2026-04-01")]
    assert [windows.label("month", a) for a, _ in got] == ["2026-01", "2026-02", "2026-03"]
    # a time just before midnight UTC on the last day, written with an offset, is still in that month
    assert windows.label("month", windows.interval_start("month", us("2026-02-01T00:30:00+01:00"))) == "2026-01"


def test_too_many_intervals_are_refused_with_what_to_do() -> None:
    with pytest.raises(QueryError, match="more than 1000 intervals: use a shorter window"):
        windows.intervals("week", us("2000-01-01T00:00:00+00:00"), us("2030-01-01T00:00:00+00:00"))


@given(st.integers(min_value=us("1990-01-01T00:00:00+00:00"), max_value=us("2090-01-01T00:00:00+00:00")),
       st.integers(min_value=1, max_value=400 * 86_400 * 1_000_000), st.sampled_from(["week", "month"]))
def test_intervals_tile_the_window_and_each_lies_in_one_calendar_interval(start: int, length: int, kind: str) -> None:
    got = windows.intervals(kind, start, start + length)
    assert got[0][0] == start and got[-1][1] == start + length
    assert all(a < b for a, b in got) and all(b == c for (_, b), (c, _) in itertools.pairwise(got))
    for a, b in got:
        lo = windows.interval_start(kind, a)
        assert lo <= a and b <= windows.next_start(kind, lo)
        assert windows.interval_start(kind, b - 1) == lo


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("2026-04-01", "2026-07-01", ("2026-01-01", "2026-04-01")),  # a quarter: the previous quarter (90, not 91 days)
    ("2026-03-01", "2026-04-01", ("2026-02-01", "2026-03-01")),  # a month: the previous month (28 days)
    ("2026-01-01", "2027-01-01", ("2025-01-01", "2026-01-01")),
    ("2026-03-10", "2026-03-17", ("2026-03-03", "2026-03-10")),  # not whole months: the same length before
    ("2026-03-01", "2026-03-15", ("2026-02-15", "2026-03-01")),
])
def test_the_previous_window(start: str, end: str, expected: tuple[str, str]) -> None:
    assert windows.previous_window(day(start), day(end)) == (day(expected[0]), day(expected[1]))


def test_compare_previous_needs_both_ends_and_an_explicit_window_must_be_ordered() -> None:
    with pytest.raises(QueryError, match="--compare-to previous needs --from and --to"):
        windows.compare_window(Query(from_=day("2026-01-01"), compare_to="previous"))
    with pytest.raises(QueryError, match="the start must be before the end"):
        windows.compare_window(Query(compare_to=(day("2026-02-01"), day("2026-01-01"))))
    assert windows.compare_window(Query(compare_to=(day("2026-01-01"), day("2026-02-01")))) == (
        day("2026-01-01"), day("2026-02-01"))


def test_differences_per_group_with_a_group_in_one_window_only() -> None:
    mine = [{"key": "email", "stages": {"captured": 5, "won": 1}, "conversion": {"a->b": 0.5}, "p50_s": None}]
    theirs = [{"key": "email", "stages": {"captured": 3, "won": 1}, "conversion": {"a->b": 0.25}, "p50_s": 4.0},
              {"key": "web", "stages": {"captured": 2, "won": 0}, "conversion": {"a->b": None}, "p50_s": 1.0}]
    assert windows.group_differences(mine, theirs) == [
        {"key": "email", "stages": {"captured": 2, "won": 0}, "conversion": {"a->b": 0.25}, "p50_s": None},
        {"key": "web", "stages": {"captured": -2, "won": 0}, "conversion": {"a->b": None}, "p50_s": None},
    ]
