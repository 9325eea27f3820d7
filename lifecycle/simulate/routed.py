"""`simulate --operate`: the simulated traffic with leadledger's own router and SLA clocks in the loop.

Upstream traffic (captures, touches, scores, MQLs, the reps' calls and deals) comes from the same
simulated lives as plain `simulate`, but no upstream system assigns the leads: `operate` runs on the
simulated clock and decides, and each lead's life goes on from the router's decision, with the
behaviour of the rep it chose. The loop is a discrete-event simulation in time order over three
kinds of instants: the next message of a life, the next instant the operator has something due (a
queue release, an SLA timer, or a stage change of a lead while others are queued: it may free a rep
at capacity, and the operator can only see that once it has read it), and a life that stopped to
wait for the router (the operator runs at once there, so the MQL it waits on is routed before
anything later happens). Before the operator runs, every message up to that instant is ingested;
after it, the router's new assignments are handed to their lives, which are lived again from their
own seeds (the same up to the new assignment) and go on from it.

Decisions depend on the stored history and the policy only, so the same seed, start and policy give
the same decisions; the messages' ids carry an `r` (`web-forms-s1r-000000001`), so routed and plain
traffic of one seed never pass for re-deliveries of each other.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from lifecycle.inbound import InboundHandler, Result, Tally
from lifecycle.operate import OperateReport, OperatorRunner, decode
from lifecycle.simulate.life import CaptureClock, LeadLife
from lifecycle.simulate.world import Event
from lifecycle.store.repository import LeadStore
from schemas.codec import format_time

_US = timedelta(microseconds=1)
_ROUTER = b'"actor":"router"'


@dataclass
class _Life:
    index: int
    captured: int
    events: list[Event]
    routed: list[tuple[int, str]] = field(default_factory=list)
    emitted: int = 0  # messages of `events` already sent
    generation: int = 0
    lead: UUID | None = None
    awaiting: int | None = None  # the life stopped there to wait for the router


@dataclass
class RoutedReport:
    tally: Tally = field(default_factory=Tally)
    operator: OperateReport = field(default_factory=OperateReport)
    runs: int = 0  # operator runs on the simulated clock
    relived: int = 0  # lives lived again from a router decision
    waiting: int = 0  # lives still waiting for the router at the end
    example_won_lead: UUID | None = None
    refused: list[str] = field(default_factory=list)


class RoutedSimulation:
    """One routed simulation into `app` (ingest through the inbound handler, `operate` in-process)."""

    def __init__(self, app: Any, *, leads: int, seed: int, start: datetime, days: int, mql_threshold: int,
                 until: datetime, id_tag: str = "", batch_size: int = 1000) -> None:
        if leads < 1:
            raise ValueError(f"leads must be >= 1, got {leads}")
        self.app = app
        self.store: LeadStore = app.store
        self.seed = seed
        self.origin = start.astimezone(UTC)
        self.threshold = mql_threshold
        self.stop = (until.astimezone(UTC) - self.origin) // _US
        self.id_tag = id_tag
        self.leads = leads
        self.handler = InboundHandler(app, batch_size=batch_size)
        self.batch_size = batch_size
        self.runner = OperatorRunner(self.store, mql_threshold=mql_threshold)
        self.report = RoutedReport()
        self._rng = random.Random(seed)
        self._clock = CaptureClock(self.origin, days, leads)
        self._companies = max(20, math.ceil(leads / 3))
        self._lives: dict[int, _Life] = {}
        self._by_lead: dict[UUID, _Life] = {}
        self._heap: list[tuple[int, int, int]] = []  # (time of the life's next message, index, generation)
        self._wakes: list[int] = []  # instants a life stopped to wait for the router
        self._freed: int | None = None  # a stage change taken while leads were queued: the operator runs there
        self._pending: list[tuple[_Life, dict[str, Any]]] = []  # taken, not yet ingested
        self._counters: dict[str, int] = {}
        self._batched: set[int] = set()  # the lives with a message in `_pending`
        self._seen = self.store.head_position()  # store rows before the run are no decisions of it
        self._admitted = 0
        self._next_capture: int | None = self._clock.at(0, self._rng)

    # ---------------------------------------------------------------------------- the loop

    def run(self) -> RoutedReport:
        while True:
            t_msg = self._next_message_time()
            t_op = self._next_operator_time()
            if self._next_capture is not None and self._next_capture <= min(t_msg, t_op):
                self._admit()
                continue
            if t_op < t_msg and t_op <= self.stop:
                self._operate(t_op)
                continue
            if t_msg > self.stop:
                break
            self._take()
        self._flush()
        self._operate(self.stop, final=True)
        self.report.waiting = sum(1 for life in self._lives.values() if life.awaiting is not None)
        return self.report

    def _next_message_time(self) -> int:
        while self._heap:
            at, index, generation = self._heap[0]
            if self._lives[index].generation == generation:
                return at
            heapq.heappop(self._heap)
        return 2**62

    def _next_operator_time(self) -> int:
        found = [self._wakes[0]] if self._wakes else []
        if self._freed is not None:
            found.append(self._freed)
        operator = self.runner.operator
        due = operator.next_due() if operator is not None else None
        if due is not None:
            found.append((due - self.origin) // _US)
        return min(found) if found else 2**62

    def _admit(self) -> None:
        """Simulate the next lead captured (leads come in capture order)."""
        assert self._next_capture is not None
        index = self._admitted
        life = _Life(index, self._next_capture, [])
        self._lives[index] = life
        self._live(life)
        self._admitted += 1
        self._next_capture = self._clock.at(self._admitted, self._rng) if self._admitted < self.leads else None

    def _live(self, life: _Life) -> None:
        """(Re)live `life` with the router's assignments so far; queue the messages not sent yet."""
        lived = LeadLife(life.index, life.captured, self.origin, random.Random(f"{self.seed}:{life.index}"),
                         self._companies, self.threshold, routed=list(life.routed),
                         extras_rng=random.Random(f"{self.seed}:{life.index}:extras"))
        events = lived.live()
        sent = life.events[:life.emitted]
        if [e[:2] for e in events[:life.emitted]] != [e[:2] for e in sent]:
            raise RuntimeError(f"simulate: lead {life.index} lived again differs before the router's decision")
        life.events = events
        life.generation += 1
        if life.emitted < len(events):
            heapq.heappush(self._heap, (events[life.emitted][0], life.index, life.generation))
        life.awaiting = lived.awaiting
        if lived.awaiting is not None:
            heapq.heappush(self._wakes, lived.awaiting)

    def _take(self) -> None:
        at, index, _ = heapq.heappop(self._heap)
        life = self._lives[index]
        _, kind, source, data, redelivered = life.events[life.emitted]
        life.emitted += 1
        operator = self.runner.operator
        if kind == "transition" and operator is not None and operator.queue and self._freed is None:
            self._freed = at  # the queued lead it lets go is assigned at this instant, before anything later
        if life.emitted < len(life.events):
            heapq.heappush(self._heap, (life.events[life.emitted][0], index, life.generation))
        if index in self._batched:
            self._flush()  # one message a lead a batch: a batch stores its leads' events lead by lead
        self._batched.add(index)
        self._counters[source] = self._counters.get(source, 0) + 1
        message = {
            "specversion": "1.0",
            "id": f"{source}-s{self.seed}r-{self._counters[source]:09d}{self.id_tag}",
            "source": source,
            "type": f"leadledger.inbound.{kind}.v1",
            "time": format_time(self.origin + timedelta(microseconds=at)),
            "data": data,
        }
        self._pending.append((life, message))
        if redelivered:
            self._pending.append((life, {**message, "data": dict(data)}))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = [(i, orjson.dumps(m)) for i, (_, m) in enumerate(self._pending)]
        for result in self.handler.handle(batch):
            self._note(self._pending[result.position][0], result)
        self._pending.clear()
        self._batched.clear()

    def _note(self, life: _Life, result: Result[int]) -> None:
        report = self.report
        report.tally.add(result)
        if result.lead_id is not None and life.lead is None:
            life.lead = result.lead_id
            self._by_lead[result.lead_id] = life
        if result.status == "dead" and len(report.refused) < 5:
            report.refused.append(f"{result.reason}")
        if report.example_won_lead is None and result.event == "LeadWon":
            report.example_won_lead = result.lead_id

    def _operate(self, at: int, final: bool = False) -> None:
        """Ingest what came before `at`, run the operator on the simulated clock there, and hand the
        router's new assignments to their lives."""
        self._flush()
        while self._wakes and self._wakes[0] <= at:
            heapq.heappop(self._wakes)
        if self._freed is not None and self._freed <= at:
            self._freed = None
        now = self.origin + timedelta(microseconds=at + (0 if final else 1))
        self.runner.run_once(now, report=self.report.operator)
        self.report.runs += 1
        touched: dict[int, _Life] = {}
        for life, when, owner in self._assignments():
            life.routed.append((when, owner))
            touched[life.index] = life
        for life in touched.values():
            self._live(life)
            self.report.relived += 1

    def _assignments(self) -> Iterator[tuple[_Life, int, str]]:
        """The router's assignments stored since the last look: (life, µs after origin, rep)."""
        while True:
            rows = self.store.raw(self._seen, 20_000)
            if not rows:
                return
            self._seen = rows[-1][0]
            for row in rows:
                if _ROUTER not in row[3]:
                    continue
                seen = decode(row)
                life = self._by_lead.get(seen.lead)
                if seen.name == "LeadAssigned" and seen.actor == "router" and life is not None:
                    yield life, (seen.occurred - self.origin) // _US, str(seen.data["owner"])


def simulate_routed(app: Any, *, leads: int, seed: int, start: datetime, days: int, mql_threshold: int,
                    until: datetime, id_tag: str = "") -> RoutedReport:
    """Run one routed simulation (see the module docstring); the store must hold a policy."""
    return RoutedSimulation(app, leads=leads, seed=seed, start=start, days=days, mql_threshold=mql_threshold,
                            until=until, id_tag=id_tag).run()
