"""What the CLI's `--json` prints and the HTTP API sends for a query: the service's answer, saying
which window it covers, and without float noise.

Every aggregate answer (funnel, velocity, attribution, speed) starts with `mode`, `from`, `to`,
`as_of` and `known_at`, so a saved answer says what it is an answer to; the lead list starts with
`as_of` and `known_at`; the SLA answer with `from`, `to`, `as_of`, `known_at` (it has no mode: its
window is always on the clock's start). Durations (`*_s`, `*_seconds`) are rounded to microseconds (the resolution of
every stored time), other fractions (shares, credits, money) to 9 decimals: `304.9999999999999`
is `305.0`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from projections.query import Query
from schemas.codec import format_time

#: decimals kept: seconds to the microsecond, other fractions to 1e-9
SECONDS_DIGITS = 6
FRACTION_DIGITS = 9

WINDOW_KEYS = ("mode", "from", "to", "as_of", "known_at")


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def tidy(value: Any, key: str = "") -> Any:
    """`value` with every float rounded (seconds to µs, the rest to 9 decimals), recursively."""
    if isinstance(value, float):
        return round(value, SECONDS_DIGITS if key.endswith(("_s", "_seconds")) else FRACTION_DIGITS)
    if isinstance(value, dict):
        return {k: tidy(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v, key) for v in value]
    return value


def window_answer(result: dict[str, Any], q: Query) -> dict[str, Any]:
    """An aggregate answer (funnel, velocity, attribution, speed) with its window first."""
    window = {"mode": q.mode, "from": _time(q.from_), "to": _time(q.to), "as_of": _time(q.as_of),
              "known_at": _time(q.known_at)}
    window.update({k: result[k] for k in WINDOW_KEYS if result.get(k) is not None})
    rest = {k: v for k, v in result.items() if k not in WINDOW_KEYS}
    return tidy({**window, **rest})


def leads_answer(result: dict[str, Any], q: Query) -> dict[str, Any]:
    """The lead list with the instant it describes first."""
    head = {"as_of": result.get("as_of") or _time(q.as_of), "known_at": _time(q.known_at)}
    return tidy({**head, **{k: v for k, v in result.items() if k not in head}})


def sla_answer(result: dict[str, Any], q: Query) -> dict[str, Any]:
    """The SLA answer with its window first (no `mode`: the window is on each clock's start)."""
    window = {"from": _time(q.from_), "to": _time(q.to), "as_of": _time(q.as_of), "known_at": _time(q.known_at)}
    window.update({k: result[k] for k in window if result.get(k) is not None})
    return tidy({**window, **{k: v for k, v in result.items() if k not in window}})
