"""Schemathesis hooks of the fuzz run (test_http_fuzz.py): the rules of the API that a JSON Schema
cannot state because they join two parameters, which the document states in words:

- `from` before `to` (and the two ends of a `compare_to` window in order);
- `compare_to=previous` needs `from` and `to`;
- at most 1,000 intervals in a window;
- a plan's period in order and at most 3,653 days long, its lookback at most 3,653 days and not before the
  year 1, its mix summing to 1 and given with `by`.
- on `/leads`, the funnel cell's parameters (`mode`, `from`, `to`, `by`, `key`, `after`) only with
  `reached`, `by` and `key` together, `stage`, `owner`, `channel` not with `reached`, and `after` only
  as a page's `next` (a generated one is no cursor).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import schemathesis

from leadledger.http.params import ParameterError, parse_compare, parse_time
from projections import windows
from projections.query import QueryError
from schemas.facts import dt_to_us


def _ordered(query: dict[str, Any]) -> dict[str, Any]:
    """A window given backwards is turned around; an empty one ([t, t)) loses its end."""
    if not isinstance(query.get("from"), str) or not isinstance(query.get("to"), str):
        return query
    try:
        start, end = parse_time(query["from"], "from"), parse_time(query["to"], "to")
    except ParameterError:
        return query  # a bad time: the case is about that
    if start is None or end is None or start < end:
        return query
    if start == end:
        return {k: v for k, v in query.items() if k != "to"}
    return {**query, "from": query["to"], "to": query["from"]}


def _compare(query: dict[str, Any]) -> dict[str, Any]:
    value = query.get("compare_to")
    if not isinstance(value, str):
        return query
    if value == "previous":
        return query if "from" in query and "to" in query else {k: v for k, v in query.items() if k != "compare_to"}
    try:
        window = parse_compare(value)
    except ParameterError:
        return query  # a bad window: the case is about that
    assert isinstance(window, tuple)
    if window[0] < window[1]:
        return query
    start, _, end = value.partition("..")
    if window[0] == window[1]:
        return {k: v for k, v in query.items() if k != "compare_to"}
    return {**query, "compare_to": f"{end}..{start}"}


def _too_many(kind: str, start: str | None, end: str | None) -> bool:
    try:
        a, b = parse_time(start, "from"), parse_time(end, "to")
        if a is not None and b is not None:
            windows.intervals(kind, dt_to_us(a), dt_to_us(b))
    except (ParameterError, QueryError, OverflowError):
        return True
    return False


def _intervals(query: dict[str, Any]) -> dict[str, Any]:
    """`interval` is left out where a window holds more than 1,000 of them."""
    kind = query.get("interval")
    if kind not in windows.INTERVALS:
        return query
    # a missing end is the data's (the fuzzed store's events lie in 2026)
    ends = [(query.get("from", "2026-01-01"), query.get("to", "2027-01-01"))]
    compare = query.get("compare_to")
    if isinstance(compare, str) and ".." in compare:
        ends.append(tuple(compare.split("..", 1)))  # type: ignore[arg-type]
    elif compare == "previous" and isinstance(query.get("from"), str) and isinstance(query.get("to"), str):
        try:
            a, b = parse_time(query["from"], "from"), parse_time(query["to"], "to")
            assert a is not None and b is not None
            prev = windows.previous_window(a, b)
            ends.append((prev[0].isoformat(), prev[1].isoformat()))
        except (ParameterError, AssertionError):
            pass
    if any(_too_many(kind, a, b) for a, b in ends if isinstance(a, str) and isinstance(b, str)):
        return {k: v for k, v in query.items() if k != "interval"}
    return query


def _report_plan(query: dict[str, Any]) -> dict[str, Any]:
    """The report's plan_revenue and plan_period: both or neither, the period as a plan's."""
    if "plan_revenue" not in query and "plan_period" not in query:
        return query
    if "plan_revenue" not in query or "plan_period" not in query:
        return {k: v for k, v in query.items() if k not in ("plan_revenue", "plan_period")}
    checked = _plan({"revenue": query["plan_revenue"], "period": query["plan_period"]})
    return {**query, "plan_period": checked["period"]}


def _plan(query: dict[str, Any]) -> dict[str, Any]:
    """A plan's parameters made valid where only words state the rule."""
    if "revenue" not in query and "period" not in query:
        return _report_plan(query)
    query = dict(query)
    if "mix" in query:
        if query.get("by") is None or not isinstance(query["mix"], str) or "=" not in query["mix"]:
            del query["mix"]
        else:
            query["mix"] = "webinar=0.25,referral=0.75"
    lookback = query.get("lookback")
    if isinstance(lookback, str) and lookback[:-1].isdigit():
        seconds = int(lookback[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}.get(lookback[-1], 1)
        if not 0 < seconds <= 3653 * 86400:
            query["lookback"] = "180d"
    if isinstance(query.get("as_of"), str):
        try:
            if (parse_time(query["as_of"], "as_of") or datetime.now(UTC)).year < 12:
                del query["as_of"]
        except ParameterError:
            pass
    period = query.get("period")
    if isinstance(period, str) and ".." in period:
        start, _, end = period.partition("..")
        try:
            a, b = parse_time(start, "period"), parse_time(end, "period")
        except ParameterError:
            return query
        if a is None or b is None:
            return query
        if a > b:
            a, b, start, end = b, a, end, start
        if a == b or (b - a).days >= 3653:
            query["period"] = "2026-07-01..2026-10-01"
        else:
            query["period"] = f"{start}..{end}"
    return query


_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_STAGES = ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified")


def _valid(name: str, value: Any) -> bool:
    """Whether the document allows `value` for a cell parameter (a case about a bad one keeps it)."""
    if name == "mode":
        return value in ("cohort", "period")
    if name == "by":
        return value in ("channel", "campaign", "owner")
    if name in ("from", "to"):
        try:
            parse_time(value, name)
        except (ParameterError, TypeError):
            return False
        return True
    if name == "after":
        return isinstance(value, str) and _CURSOR.fullmatch(value) is not None
    if name == "stage":
        return value in _STAGES
    return isinstance(value, str)


def _drill(query: dict[str, Any], path: str | None) -> dict[str, Any]:
    """The lead list's rules: a drill-down's parameters only with `reached`, and together."""
    if path != "/leads":
        return query
    drop = {"after"}
    if query.get("reached") is None:
        drop |= {"mode", "from", "to", "by", "key"}
    elif isinstance(query["reached"], str) and query["reached"] in _STAGES:
        drop |= {"stage", "owner", "channel"}
        if ("by" in query) != ("key" in query):
            drop |= {"by", "key"}
    else:
        return query  # a bad stage: the case is about that
    return {k: v for k, v in query.items() if k not in drop or not _valid(k, v)}


def _path(holder: Any) -> str | None:
    operation = getattr(holder, "operation", None)
    return getattr(operation, "path", None)


@schemathesis.hook
def map_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> dict[str, Any] | None:
    return _rules(query, _path(context)) if query else query


def _rules(query: dict[str, Any], path: str | None) -> dict[str, Any]:
    return _plan(_intervals(_compare(_ordered(_drill(query, path)))))


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: Any) -> Any:
    """The same rules on the coverage phase's cases (built from the documented examples)."""
    if isinstance(case.query, dict) and case.query:
        case.query = _rules(case.query, _path(case))
    return case
