"""Schemathesis hooks of the fuzz run (test_http_fuzz.py): the one rule of the API that a JSON
Schema cannot state, `from` before `to`, which the document states in words."""

from __future__ import annotations

from typing import Any

import schemathesis

from leadledger.http.params import ParameterError, parse_time


@schemathesis.hook
def map_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """A window given backwards is turned around; an empty one ([t, t)) loses its end."""
    if not query or not isinstance(query.get("from"), str) or not isinstance(query.get("to"), str):
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
