"""Working time (docs/operations.md): a calendar's hours and holidays, a rep's absences, and business-time arithmetic.

An instant is working when its local wall time, in the calendar's zone, lies in [start, end) of its local
date's hours and that date is not a holiday. Offsets come from `zoneinfo` only, so a day's working time
follows DST (a skipped hour is not worked, a repeated hour is worked twice). Instants are aware datetimes;
results are in UTC.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from lifecycle.operations.policy import Calendar, Minutes, Rep

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_S = 1_000_000  # µs per second
_DAY_S = 86_400
# Wider than any UTC offset in the tz database (−12 h … +14 h today, LMT a little more): a local date's
# instants all lie within [local midnight − 16 h, local midnight + 24 h + 16 h) read as UTC.
_MARGIN_S = 16 * 3600
_SAMPLE_S = 3600  # tz transitions are hours apart, so hourly samples see every one
_CHUNK_US = 7 * _DAY_S * _S  # a span working without end (24x7) is released in contiguous chunks this long
CHANGE_LIMIT = timedelta(days=366)  # how far `next_change` looks before saying "no change"


def to_us(at: datetime) -> int:
    """Microseconds since the epoch; refuses a naive datetime (its instant is unknown)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone: pass an aware datetime")
    return (at - EPOCH) // _US


def as_utc(at: datetime) -> datetime:
    """The same instant in UTC. Arithmetic on an aware datetime is wall-clock arithmetic in its own zone
    (and two of the same zone subtract and compare as wall times), so instants are normalised first."""
    to_us(at)
    return at.astimezone(UTC)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def local_date(calendar: Calendar, at: datetime) -> date:
    return as_utc(at).astimezone(calendar.zone).date()


# ---------------------------------------------------------------------------------------------- one local date


def _offset_s(zone: ZoneInfo, ts: int) -> int:
    off = datetime.fromtimestamp(ts, zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


@lru_cache(maxsize=32768)  # per zone and local date: a few years of dates for a few zones
def _segments(timezone: str, lo: int, hi: int) -> tuple[tuple[int, int, int], ...]:
    """[(from, to, offset)] in UTC seconds covering [lo, hi): spans of one constant UTC offset."""
    zone = ZoneInfo(timezone)
    out: list[tuple[int, int, int]] = []
    start, current = lo, _offset_s(zone, lo)
    probe = lo
    while probe < hi:
        nxt = min(probe + _SAMPLE_S, hi)
        off = _offset_s(zone, nxt)
        if off != current:
            a, b = probe, nxt  # offset(a) == current != offset(b): find the first second of the new offset
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_s(zone, mid) == current:
                    a = mid
                else:
                    b = mid
            out.append((start, b, current))
            start, current = b, off
        probe = nxt
    out.append((start, hi, current))
    return tuple(out)


@lru_cache(maxsize=131072)
def _day_pieces(timezone: str, spans: tuple[Minutes, ...], ordinal: int) -> tuple[tuple[int, int], ...]:
    """The UTC µs intervals, sorted and merged, of the instants whose local date is `ordinal` and whose
    wall time lies in one of `spans` — intersected per constant-offset segment, so DST gaps and folds are
    exact without ever writing an offset by hand."""
    if not spans:
        return ()
    midnight = (ordinal - date(1970, 1, 1).toordinal()) * _DAY_S  # local midnight read as if it were UTC
    pieces: list[tuple[int, int]] = []
    for seg_from, seg_to, off in _segments(timezone, midnight - _MARGIN_S, midnight + _DAY_S + _MARGIN_S):
        for start_min, end_min in spans:
            a = max(midnight + start_min * 60 - off, seg_from)
            b = min(midnight + end_min * 60 - off, seg_to)
            if a < b:
                pieces.append((a, b))
    pieces.sort()
    merged: list[tuple[int, int]] = []
    for a, b in pieces:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple((a * _S, b * _S) for a, b in merged)


def _pieces_of(calendar: Calendar, day: date) -> tuple[tuple[int, int], ...]:
    if day in calendar.holidays:
        return ()
    return _day_pieces(calendar.timezone, calendar.hours[day.weekday()], day.toordinal())


def _day_start_us(zone_name: str, day: date) -> int:
    """The first instant whose local date is `day` or later (local midnight, or the end of a gap over it:
    a zone may skip a whole date, as Pacific/Apia did on 2011-12-30)."""
    while True:
        whole = _day_pieces(zone_name, ((0, 1440),), day.toordinal())
        if whole:
            return whole[0][0]
        day += timedelta(days=1)


def _pieces_from(calendar: Calendar, at_us: int) -> Iterator[tuple[int, int]]:
    """The calendar's working intervals (UTC µs, sorted, merged across days) that end after `at_us`.

    Dates are generated one by one; a piece is released only once no later date can start before it
    (its instants are ≥ that date's midnight − 16 h), so the order holds even where the local date
    runs backwards at a DST change. A span longer than a week is released in contiguous chunks (a
    chunk's start equals the previous end: not a change of state). Stops with an error after more
    idle days than the calendar can have: each holiday (or a working day lost whole in a DST gap) can
    cost at most a week, so 7 × (holidays + 3) days in a row without working time means none is left.
    """
    if not any(calendar.hours):
        raise ValueError(f"calendar {calendar.id!r} has no working hours on any day")
    idle_limit = 7 * (len(calendar.holidays) + 3)
    day = from_us(at_us).astimezone(calendar.zone).date() - timedelta(days=1)
    heap: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None
    idle = 0
    while True:
        found = _pieces_of(calendar, day)
        idle = 0 if found else idle + 1
        if idle > idle_limit:
            raise ValueError(f"calendar {calendar.id!r} has no working time for {idle} days from {day}")
        for piece in found:
            heapq.heappush(heap, piece)
        day += timedelta(days=1)
        bound = ((day.toordinal() - date(1970, 1, 1).toordinal()) * _DAY_S - _MARGIN_S) * _S
        while heap and heap[0][0] <= bound:
            a, b = heapq.heappop(heap)
            if pending is not None and a <= pending[1]:
                pending = (pending[0], max(pending[1], b))
                continue
            if pending is not None and pending[1] > max(at_us, pending[0]):
                yield pending
            pending = (a, b)
        if pending is not None and pending[1] < bound:
            if pending[1] > max(at_us, pending[0]):
                yield pending
            pending = None
        elif pending is not None and pending[1] - pending[0] >= _CHUNK_US:
            if pending[1] > at_us:
                yield pending
            pending = (pending[1], pending[1])


# ---------------------------------------------------------------------------------------------- public


def is_working(calendar: Calendar, at: datetime) -> bool:
    """Inside the working hours of its local date, and that date is not a holiday."""
    return local_state(calendar, at)[1]


def local_state(calendar: Calendar, at: datetime) -> tuple[date, bool]:
    """The instant's local date in the calendar's zone, and whether it is working time (one conversion)."""
    x = to_us(at)
    day = at.astimezone(calendar.zone).date()
    return day, any(a <= x < b for a, b in _pieces_of(calendar, day))


def absent_on(rep: Rep, day: date) -> bool:
    """`day`, a local date in the rep's calendar zone, is in one of the rep's [from, to) absences."""
    return any(a.start <= day < a.end for a in rep.absences)


def next_change(calendar: Calendar, at: datetime, limit: timedelta = CHANGE_LIMIT) -> datetime | None:
    """The first instant after `at` at which `is_working` flips: the end of the working span `at` is in,
    else the start of the next one; None when the state holds for `limit` (a calendar working 24x7)."""
    x = to_us(at)
    horizon = x + limit // _US
    end: int | None = None
    for a, b in _pieces_from(calendar, x):
        if end is None:
            if a > x:
                return from_us(a) if a <= horizon else None
            end = b
        elif a == end:
            end = b
        else:
            break
        if end > horizon:
            return None
    assert end is not None
    return from_us(end)


def working_periods(calendar: Calendar, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The working spans within [start, end), clipped, merged across midnight."""
    lo, hi = to_us(start), to_us(end)
    spans: list[tuple[int, int]] = []
    if hi <= lo:
        return []
    for a, b in _pieces_from(calendar, lo):
        if a >= hi:
            break
        a, b = max(a, lo), min(b, hi)
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [(from_us(a), from_us(b)) for a, b in spans]


def add_business(calendar: Calendar, start: datetime, duration: timedelta) -> datetime:
    """The instant at which `duration` of working time has passed since `start` (the deadline).

    A duration that runs out exactly at the end of a working span gives that end, not the next morning;
    a zero duration gives `start` itself.
    """
    remaining = duration // _US
    if remaining < 0:
        raise ValueError(f"a negative duration {duration} cannot be added")
    x = to_us(start)
    if remaining == 0:
        return from_us(x)
    for a, b in _pieces_from(calendar, x):
        a = max(a, x)
        if b - a >= remaining:
            return from_us(a + remaining)
        remaining -= b - a
    raise AssertionError("unreachable: _pieces_from never ends")


def business_between(calendar: Calendar, a: datetime, b: datetime) -> timedelta:
    """Working time in [a, b); negative when b is before a."""
    lo, hi = to_us(a), to_us(b)
    if hi < lo:
        return -business_between(calendar, b, a)
    total = 0
    for s, e in _pieces_from(calendar, lo):
        if s >= hi:
            break
        total += min(e, hi) - max(s, lo)
    return timedelta(microseconds=total)


def is_absent(rep: Rep, calendar: Calendar, at: datetime) -> bool:
    """The instant's local date (in the rep's calendar zone) lies in one of the rep's [from, to) absences."""
    return absent_on(rep, local_date(calendar, at))


def absence_end(rep: Rep, calendar: Calendar, at: datetime) -> datetime | None:
    """If the rep is absent at `at`, the first instant they are not (back-to-back absences join); else None."""
    day = local_date(calendar, at)
    end = None
    moved = True
    while moved:  # absences are sorted by start, but a later one may overlap the end of an earlier one
        moved = False
        for absence in rep.absences:
            probe = end or day
            if absence.start <= probe < absence.end:
                end, moved = absence.end, True
    return None if end is None else from_us(_day_start_us(calendar.timezone, end))
