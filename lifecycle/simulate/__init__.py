"""Deterministic, realistic inbound traffic for `leadledger simulate` (inbound messages).

Each lead's whole life is simulated when it is captured (leads in capture order,
one seeded `random.Random`), tracking its stage, score and owner so that every
message is one the stage table accepts; the per-lead timelines are then merged
by time with a heap that only holds the leads still active.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle.settings import DEFAULT_MQL_THRESHOLD
from lifecycle.simulate.life import CaptureClock, LeadLife
from lifecycle.simulate.world import Event
from schemas.codec import format_time

#: The demo's operations policy (two teams in two time zones, routing by territory, two SLA clocks):
#: what `simulate --operate` publishes when the store has none.
DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")


def generate(*, leads: int, seed: int, start: datetime, days: int, mql_threshold: int = DEFAULT_MQL_THRESHOLD,
             until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Yield inbound messages (CloudEvents dicts) for `leads` leads captured over `days` from `start`.

    The stream is in non-decreasing `time` order across all leads, and the same
    arguments always give the same messages. Every message is accepted by a
    ledger whose MQL threshold is `mql_threshold`: per lead, nothing comes before its
    capture and every time is later than the one before (so no stage change goes back
    in time); channel and campaign names are lower-case, amounts far below the bound.
    About 0.5 % are re-delivered (same id and source) right after the original, and
    count as duplicates. With `until` (e.g. now: a ledger refuses events from the
    future) the stream stops before the first message after it: a prefix of the same
    traffic.
    """
    if leads < 0:
        raise ValueError(f"leads must be >= 0, got {leads}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not 0 <= mql_threshold <= 100:
        raise ValueError(f"mql_threshold must be 0-100, got {mql_threshold}")
    origin = (start if start.tzinfo is not None else start.replace(tzinfo=UTC)).astimezone(UTC)
    if until is not None and until.tzinfo is None:
        raise ValueError(f"until {until.isoformat()} has no time zone")
    stop = None if until is None else (until - origin) // timedelta(microseconds=1)
    return _stream(leads, seed, origin, days, mql_threshold, stop)


def _stream(leads: int, seed: int, origin: datetime, days: int, mql_threshold: int,
            stop: int | None) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    if leads == 0:
        return
    clock = CaptureClock(origin, days, leads)
    companies = max(20, math.ceil(leads / 3))
    counters: dict[str, int] = {}
    # One entry per active lead: (time of its next message, lead number, its remaining
    # messages latest first), so memory holds only what is still to be sent.
    heap: list[tuple[int, int, list[Event]]] = []
    admitted = 0
    next_capture: int | None = clock.at(0, rng)
    while True:
        # Simulate every lead captured by the time of the next message due (leads come in capture order).
        while next_capture is not None and (not heap or next_capture <= heap[0][0]):
            life = LeadLife(admitted, next_capture, origin, rng, companies, mql_threshold).live()
            life.reverse()
            heapq.heappush(heap, (next_capture, admitted, life))
            admitted += 1
            next_capture = clock.at(admitted, rng) if admitted < leads else None
        if not heap:
            return
        _, index, life = heap[0]
        if stop is not None and life[-1][0] > stop:
            return  # every later message is later still
        at, kind, source, data, redelivered = life.pop()
        if life:
            heapq.heapreplace(heap, (life[-1][0], index, life))
        else:
            heapq.heappop(heap)
        counters[source] = counters.get(source, 0) + 1
        message = {
            "specversion": "1.0",
            "id": f"{source}-s{seed}-{counters[source]:09d}",
            "source": source,
            "type": f"leadledger.inbound.{kind}.v1",
            "time": format_time(origin + timedelta(microseconds=at)),
            "data": data,
        }
        yield message
        if redelivered:
            yield {**message, "data": dict(data)}
