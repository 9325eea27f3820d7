"""Windows derived from a query's window: the intervals of a trend (ISO weeks or UTC calendar
months) and the window a comparison is made with, and the difference of two answers.

Times are integer microseconds since the epoch (UTC), as in `projections.query.Window`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from projections.query import INTERVALS, MAX_INTERVALS, Query, QueryError
from schemas.facts import dt_to_us, us_to_dt

WEEK_US = 7 * 24 * 3600 * 1_000_000


def _day_start(day: date) -> int:
    return dt_to_us(datetime(day.year, day.month, day.day, tzinfo=UTC))


def interval_start(kind: str, at: int) -> int:
    """The start of the ISO week (Monday 00:00 UTC) or calendar month (the 1st, 00:00 UTC) holding `at`."""
    day = us_to_dt(at).date()
    if kind == "week":
        return _day_start(day - timedelta(days=day.weekday()))
    if kind == "month":
        return _day_start(day.replace(day=1))
    raise QueryError(f"--interval must be one of {', '.join(INTERVALS)}, got {kind!r}")


def next_start(kind: str, start: int) -> int:
    """The start of the interval after the one starting at `start`."""
    if kind == "week":
        return start + WEEK_US
    day = us_to_dt(start).date()
    return _day_start(date(day.year + (day.month == 12), day.month % 12 + 1, 1))


def label(kind: str, start: int) -> str:
    """`2026-W05` (ISO year and week) or `2026-02`."""
    day = us_to_dt(start).date()
    if kind == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def intervals(kind: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) cut at the interval boundaries: the first and last may be partial intervals."""
    if start >= end:
        return []
    out: list[tuple[int, int]] = []
    lo = start
    while lo < end:
        hi = min(next_start(kind, interval_start(kind, lo)), end)
        out.append((lo, hi))
        if len(out) > MAX_INTERVALS:
            raise QueryError(f"--interval {kind} over this window gives more than {MAX_INTERVALS} intervals: "
                             f"use a shorter window (--from/--to) or --interval month")
        lo = hi
    return out


def _month_start(value: datetime) -> bool:
    return value == value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _months_between(a: datetime, b: datetime) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _add_months(value: datetime, months: int) -> datetime:
    total = value.year * 12 + value.month - 1 + months
    return value.replace(year=total // 12, month=total % 12 + 1)


def previous_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The window of the same length just before [start, end); when both are the 1st of a month
    at 00:00 UTC, the same number of calendar months before (a quarter's previous is the previous
    quarter, not 91 days back). A window that would start before year 1 starts there."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if _month_start(start) and _month_start(end):
        months = _months_between(start, end)
        try:
            return _add_months(start, -months), start
        except ValueError:
            pass
    try:
        return start - (end - start), start
    except OverflowError:  # it would start before year 1: it starts there (and is shorter)
        return datetime.min.replace(tzinfo=UTC), start


def iter_leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from iter_leaves(v, (*path, str(k)))
    else:
        yield path, value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _empty_like(value: Any) -> Any:
    """A group absent from one window: its counts read 0 there, its other figures null."""
    if isinstance(value, dict):
        return {k: (v if k == "key" else _empty_like(v)) for k, v in value.items()}
    return 0 if isinstance(value, int) and not isinstance(value, bool) else None


def difference(current: Any, other: Any) -> Any:
    """current − other for every number found in both (nested dicts walked); null where either is null
    or not a number. Keys present in only one side are taken from that side's shape with null."""
    if isinstance(current, dict) or isinstance(other, dict):
        a = current if isinstance(current, dict) else {}
        b = other if isinstance(other, dict) else {}
        return {k: difference(a.get(k), b.get(k)) for k in [*a, *(k for k in b if k not in a)]}
    if _number(current) and _number(other):
        return current - other
    return None


def group_differences(current: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group key (the union; the current window's order, then groups only in the other one), the
    difference of every figure."""
    mine = {g["key"]: g for g in current}
    theirs = {g["key"]: g for g in other}
    keys = [*mine, *(k for k in theirs if k not in mine)]
    out = []
    for key in keys:
        a = mine.get(key) or _empty_like(theirs[key])
        b = theirs.get(key) or _empty_like(mine[key])
        diff = difference({k: v for k, v in a.items() if k != "key"}, {k: v for k, v in b.items() if k != "key"})
        out.append({"key": key, **diff})
    return out


def compare_window(q: Query) -> tuple[datetime, datetime]:
    """The window `q.compare_to` names: "previous" (needs --from and --to) or an explicit one."""
    if q.compare_to == "previous":
        if q.from_ is None or q.to is None:
            raise QueryError("--compare-to previous needs --from and --to (the window before one without "
                             "both ends has no length); or give the other window as FROM..TO")
        return previous_window(q.from_, q.to)
    if isinstance(q.compare_to, tuple):
        start, end = q.compare_to
        if start.tzinfo is None or end.tzinfo is None:
            raise QueryError("--compare-to: times need a time zone")
        if start >= end:
            raise QueryError(f"--compare-to {start.isoformat()}..{end.isoformat()}: the start must be before "
                             f"the end")
        return start, end
    raise QueryError(f"--compare-to must be previous or FROM..TO (two times or dates), got {q.compare_to!r}")
