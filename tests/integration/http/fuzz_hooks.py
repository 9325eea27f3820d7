"""Schemathesis hooks of the fuzz run (test_http_fuzz.py): the rules of the API that a JSON Schema
cannot state because they join two parameters, which the document states in words:

- `from` before `to` (and the two ends of a `compare_to` window in order);
- `compare_to=previous` needs `from` and `to`;
- at most 1,000 intervals in a window;
- on `/leads`, the funnel cell's parameters (`mode`, `from`, `to`, `by`, `key`, `after`) only with
  `reached`, `by` and `key` together, `stage`, `owner`, `channel` not with `reached`, and `after` only
  as a page's `next` (a generated one is no cursor).
"""

from __future__ import annotations

import re
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


_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_STAGES = ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified")


def _valid(name: str, value: Any) -> bool:
    """Whether the document allows `value` for a cell parameter (a case about a bad one keeps it)."""
    if name == "mode":
        return value in ("cohort", "period")
    if name == "by":
        return value in ("channel", "campaign")
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
    return _intervals(_compare(_ordered(_drill(query, path))))


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: Any) -> Any:
    """The same rules on the coverage phase's cases (built from the documented examples)."""
    if isinstance(case.query, dict) and case.query:
        case.query = _rules(case.query, _path(case))
    return case
