"""The time syntax people type (CLI flags, HTTP parameters): what is a time, what it means in UTC,
why the rest is refused; and the published pattern accepts exactly what the parser does."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.times import TimeFormatError, parse_user_time, time_pattern

PATTERN = re.compile(time_pattern().removesuffix("$") + r"\Z")


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),  # a leap year
    ("2000-02-29", datetime(2000, 2, 29, tzinfo=UTC)),  # divisible by 400
    ("2026-02-01T09:30:00Z", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),
    ("2026-02-01t09:30:00z", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),  # RFC 3339 allows lower case
    ("2026-02-01 09:30:00Z", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),  # ...and a space
    ("2026-02-01T09:30Z", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),  # seconds optional
    ("2026-02-01T10:30:00+01:00", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),
    ("2026-02-01T00:30:00+01:00", datetime(2026, 1, 31, 23, 30, tzinfo=UTC)),
    ("2026-02-01T09:30:00-00:00", datetime(2026, 2, 1, 9, 30, tzinfo=UTC)),
    ("2026-02-01T09:30:00.5Z", datetime(2026, 2, 1, 9, 30, 0, 500000, tzinfo=UTC)),
    ("2026-02-01T09:30:00.123456789Z", datetime(2026, 2, 1, 9, 30, 0, 123456, tzinfo=UTC)),  # cut to µs
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("0001-01-01T00:30:00-01:00", datetime(1, 1, 1, 1, 30, tzinfo=UTC)),
    ("0001-01-02T00:00:00+23:59", datetime(1, 1, 1, 0, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("9999-12-31T00:00:00+23:59", datetime(9999, 12, 30, 0, 1, tzinfo=UTC)),
    ("9999-12-30T23:59:00-23:59", datetime(9999, 12, 31, 23, 58, tzinfo=UTC)),
    (" 2026-02-01 ", datetime(2026, 2, 1, tzinfo=UTC)),  # the CLI forgives white space
])
def test_a_time_and_what_it_means_in_utc(text: str, utc: datetime) -> None:
    assert parse_user_time(text) == utc


@pytest.mark.parametrize(("text", "why"), [
    ("", "is not a date"),
    ("yesterday", "is not a date"),
    ("20260201", "is not a date"),
    ("2026-W05-1", "is not a date"),
    ("2026-02-01T09", "is not a date"),
    ("2026-02-01T09:30:00+0100", "is not a date"),  # RFC 3339 offsets have a colon
    ("2026-02-01T10:00:00", "no time zone"),
    ("2026-02-30", "not a date of the calendar"),
    ("2023-02-29", "not a date of the calendar"),
    ("1900-02-29", "not a date of the calendar"),  # divisible by 100, not by 400
    ("0000-01-01", "not a date of the calendar"),
    ("2026-13-01", "not a date of the calendar"),
    ("2026-02-01T24:00:00Z", "not a date of the calendar"),
    ("2026-02-01T23:59:60Z", "not a date of the calendar"),  # no leap second
    ("2026-02-01T09:30:00+24:00", "offset out of range"),
    ("2026-02-01T09:30:00+01:60", "offset out of range"),
    ("0001-01-01T00:30:00+01:00", "out of range"),  # year 0 in UTC
    ("0001-01-01T05:00:00+01:00", "out of range"),  # representable, but the first day takes no positive offset
    ("9999-12-31T23:00:00-05:00", "out of range"),  # year 10000 in UTC
])
def test_what_is_not_a_time_and_why(text: str, why: str) -> None:
    with pytest.raises(TimeFormatError, match=why):
        parse_user_time(text)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PATTERN, fullmatch=True))
def test_everything_the_pattern_admits_is_a_time(text: str) -> None:
    assert parse_user_time(text).tzinfo is UTC


# near misses: the shape of a time with any digits, separators and zones
NEAR = st.builds(
    "{}-{}-{}{}".format,
    st.from_regex(r"[0-9]{4}", fullmatch=True), st.from_regex(r"[0-9]{2}", fullmatch=True),
    st.from_regex(r"[0-9]{2}", fullmatch=True),
    st.just("") | st.builds("{}{}:{}{}{}".format, st.sampled_from("Tt x"), st.from_regex(r"[0-9]{2}", fullmatch=True),
                            st.from_regex(r"[0-9]{2}", fullmatch=True),
                            st.just("") | st.from_regex(r":[0-9]{2}(\.[0-9]{0,8})?", fullmatch=True),
                            st.sampled_from(["", "Z", "z", "+01:00", "-05:30", "+24:00", "+23:59", "-23:59", "+0100"])),
)


@settings(max_examples=500, deadline=None)
@given(NEAR)
def test_the_parser_accepts_exactly_what_the_pattern_admits(text: str) -> None:
    try:
        parse_user_time(text)
    except TimeFormatError:
        assert PATTERN.fullmatch(text) is None, text
    else:
        assert PATTERN.fullmatch(text) is not None, text


def test_the_pattern_reads_the_same_in_ecma_262() -> None:
    """Only constructs both engines read alike: no \\d (Unicode digits in Python), no lookaround,
    no Python-only anchors."""
    pattern = time_pattern("+ ")
    assert pattern.startswith("^") and pattern.endswith("$")
    assert not re.search(r"\\[dDwWsSAZb]|\(\?[=!<]", pattern)
