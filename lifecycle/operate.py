"""`leadledger operate` over the store's notification log: run the router, the SLA clocks and the scorer and
append their decisions with the operator's position in ONE transaction.

The position is the notification id of the last lead event the operator handled; it is stored in
`leadledger_operator` under a sequence number that each commit increments, so a second operator that
read the same position fails its whole transaction (nothing of it is stored) and rebuilds. State is
derived: on start the operator folds the whole log — the events up to its position and every decision
ever recorded (its own decisions are appended after the events they answer) — then handles the events
after its position, skipping its own decisions as they come back.

A crash anywhere therefore loses nothing and repeats nothing: a decision is stored exactly when its
position is, and a restart decides again, identically, whatever had not been stored.

Where the events come from is a `RowSource`: the store's notification log (`StoreRows`, the default)
or the lead-events topic (`consumers.operate_kafka.KafkaRows`, `operate --source kafka`), which hands
the same rows in the same order and stores its per-partition offsets in the operator's state, in the
same compare-and-set transaction. Either way the state is rebuilt from the store, so both decide the
same. Several operators over one store (whatever their sources) are kept apart by that
compare-and-set: the one that commits second at a position stores nothing, rebuilds and goes on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import orjson

from lifecycle.domain.errors import LifecycleError
from lifecycle.operations.operator import Decision, Operator, Seen, to_us
from lifecycle.policies import PolicyStream, PolicyTimeline
from lifecycle.settings import DEFAULT_MQL_THRESHOLD
from lifecycle.store.repository import Changes, LeadStore, Loaded, StoreConflict
from schemas import codec

log = logging.getLogger("leadledger.operate")

OPERATOR = "operator"
_RETRIES = 5


@dataclass
class OperateReport:
    """What one catch-up did."""

    handled: int = 0  # lead events handled after the position
    folded: int = 0  # events folded to rebuild the state
    decisions: Counter[str] = field(default_factory=Counter)  # by kind: assign, queue, warn, breach, score, qualify
    position: int = 0
    head: int = 0
    rebuilds: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "handled": self.handled, "folded": self.folded, "position": self.position, "head": self.head,
            "lag": max(0, self.head - self.position), "decisions": dict(sorted(self.decisions.items())),
            "decided": sum(self.decisions.values()), "rebuilds": self.rebuilds, "seconds": round(self.seconds, 3),
        }


def decode(row: tuple[int, UUID, int, bytes]) -> Seen:
    """A stored row as the operator reads it (hash and row checked; old versions upcast)."""
    position, lead, version, state = row
    envelope, _ = codec.checked_body(lead, version, state, where="(operate)")
    name, _, data = codec.read_data(envelope)
    return Seen(position, lead, version, name, codec.parse_time(envelope["time"]), str(envelope["actor"]),
                str(envelope["id"]), data)


Row = tuple[int, UUID, int, bytes]  # (notification id, lead, version, stored state)


class RowSource(Protocol):
    """Where the operator reads lead events: rows in notification-id order, each once."""

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from the operator's stored state (after a rebuild; also after losing to another operator)."""

    def rows(self, position: int, limit: int) -> list[Row]:
        """Up to `limit` rows after notification id `position`, ascending; [] when caught up."""

    def checkpoint(self) -> dict[str, Any]:
        """What to store next to the position, after the rows handed so far (JSON)."""

    def close(self) -> None: ...


class StoreRows:
    """The store's notification log (`operate`, the default source)."""

    def __init__(self, store: LeadStore) -> None:
        self.store = store

    def restore(self, state: Mapping[str, Any]) -> None:
        pass

    def rows(self, position: int, limit: int) -> list[Row]:
        return self.store.raw(position, limit)

    def checkpoint(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class OperatorRunner:
    """One operator over one store, reading its events from `source` (default: the store's log)."""

    def __init__(self, store: LeadStore, name: str = OPERATOR, batch: int = 5000,
                 on_progress: Callable[[OperateReport], None] | None = None, *,
                 source: RowSource | None = None, mql_threshold: int = DEFAULT_MQL_THRESHOLD) -> None:
        self.store = store
        self.mql_threshold = mql_threshold  # the scorer's, when the policy's [scoring] names no threshold
        self.name = name
        self.batch = batch
        self.on_progress = on_progress
        self.source: RowSource = source or StoreRows(store)
        self.operator: Operator | None = None
        self.seq = 0
        self.position = 0
        self._policy_count = -1

    def close(self) -> None:
        self.source.close()

    # ---------------------------------------------------------------------------- state

    def _stored(self) -> tuple[int, dict[str, Any]]:
        found = self.store.operator_state(self.name)
        if found is None:
            return 0, {"position": 0}
        seq, state = found
        loaded: dict[str, Any] = orjson.loads(state)
        return seq, loaded

    def _saved(self) -> tuple[int, int]:
        seq, state = self._stored()
        return seq, int(state["position"])

    def rebuild(self, report: OperateReport) -> None:
        """Fold the log: every event up to the saved position, and every decision recorded."""
        self.seq, state = self._stored()
        self.position = int(state["position"])
        self.source.restore(state)
        policies = PolicyStream(self.store).versions()
        self._policy_count = len(policies)
        operator = Operator(PolicyTimeline(policies), mql_threshold=self.mql_threshold, head=self._head)
        for row in self.store.iter_raw(0, batch=20_000):
            seen = decode(row)
            if seen.decided or seen.position <= self.position:
                operator.fold(seen)
                report.folded += 1
        operator.position = self.position
        self.operator = operator
        report.rebuilds += 1

    def _head(self, lead_id: UUID) -> tuple[str, int]:
        """The lead's stored stage and latest stage change (the scorer's automatic MQL asks)."""
        loaded = self.store.load(lead_id)
        if loaded is None:  # cannot be: the operator saw its capture in the store
            raise StoreConflict(f"lead {lead_id} is not in the store any more")
        return loaded.lead.stage.value, to_us(loaded.lead.last_change_at)

    def _refresh_policies(self) -> None:
        """Versions published since the last look come into force at their positions."""
        assert self.operator is not None
        policies = PolicyStream(self.store).versions()
        if len(policies) != self._policy_count:
            self.operator.policies = PolicyTimeline(policies)
            self._policy_count = len(policies)

    # ---------------------------------------------------------------------------- running

    def run_once(self, now: datetime, *, stop: Callable[[], bool] = lambda: False,
                 report: OperateReport | None = None) -> OperateReport:
        """Catch up with the log, then fire what is due before `now`."""
        started = time.perf_counter()
        report = report or OperateReport()
        if self.operator is None:
            self.rebuild(report)
        self._refresh_policies()
        self._catch_up(report, started, stop)
        if not stop():
            self._step([], now, report)
            self._catch_up(report, started, stop)  # over the decisions just stored: the position passes them
        report.position = self.position
        report.head = self.store.head_position()
        report.seconds = time.perf_counter() - started
        return report

    def _catch_up(self, report: OperateReport, started: float, stop: Callable[[], bool]) -> None:
        while not stop():
            rows = self.source.rows(self.position, self.batch)
            if not rows:
                return
            self._step(rows, None, report)
            if self.on_progress is not None:
                report.head = self.store.head_position()
                report.seconds = time.perf_counter() - started
                self.on_progress(report)

    def _step(self, rows: list[Row], now: datetime | None, report: OperateReport) -> None:
        """Handle a batch (or fire the timers due before `now`) and commit it; on a conflict with another
        operator, rebuild and do it again from the stored position."""
        for _ in range(_RETRIES):
            assert self.operator is not None
            decisions: list[Decision] = []
            position = self.position
            handled = 0
            for row in rows:
                seen = decode(row)
                decisions.extend(self.operator.handle(seen))
                position = seen.position
                handled += not seen.decided
            if now is not None:
                decisions.extend(self.operator.tick(now))
            if not decisions and position == self.position:
                return
            try:
                self._commit(decisions, position)
            except _Overtaken:
                log.warning("another operator stored decisions first: rebuilding from its position")
                self.operator = None
                self.rebuild(report)
                self._refresh_policies()
                rows = [r for r in rows if r[0] > self.position]
                continue
            report.handled += handled
            report.decisions.update(d.kind for d in decisions)
            self.position = position
            return
        raise StoreConflict("the operator kept losing to other writers; try again")

    def _commit(self, decisions: list[Decision], position: int) -> None:
        row = (self.name, self.seq + 1, orjson.dumps({"position": position, **self.source.checkpoint()}).decode())
        for _ in range(_RETRIES):
            leads = self.store.load_many({d.lead for d in decisions})
            try:
                for decision in decisions:
                    _apply(leads[decision.lead], decision)
            except LifecycleError as exc:
                # only an automatic MQL can be refused, when the lead was moved on after the operator looked
                # (an ingest meanwhile): decide again from the store as it is now
                log.warning("a decision no longer fits its lead (%s): deciding again", exc)
                raise _Overtaken() from None
            try:
                # in the order of the decisions (never of a set of ids, which differ from store to store):
                # the same history stores its decisions in the same order
                order = dict.fromkeys(d.lead for d in decisions)
                self.store.commit(Changes(leads=[leads[lead] for lead in order], operator=row))
            except StoreConflict:
                if self._saved()[0] != self.seq:
                    raise _Overtaken() from None
                continue  # a lead was written meanwhile (ingest): its decision stands, on its new version
            self.seq += 1
            return
        raise StoreConflict("the leads the operator decided on kept changing under it; try again")

    def follow(self, clock: Callable[[], datetime], stop: Callable[[], bool], interval: float = 1.0,
               ) -> Iterator[OperateReport]:
        """Run until `stop()`: catch up, fire what is due, wait, again."""
        while not stop():
            yield self.run_once(clock(), stop=stop)
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.1, interval))


class _Overtaken(Exception):
    """Another operator committed at this operator's position."""


def _apply(loaded: Loaded, decision: Decision) -> None:
    lead = loaded.lead
    f = decision.fields
    if decision.kind == "assign":
        lead.route_to(owner=f["owner"], rule=f["rule"], method=f["method"], policy_version=f["policy_version"],
                      candidates=f["candidates"], excluded=f["excluded"], occurred_at=decision.occurred_at,
                      causation=decision.causation)
    elif decision.kind == "queue":
        lead.queue_for_routing(rule=f["rule"], policy_version=f["policy_version"], excluded=f["excluded"],
                               occurred_at=decision.occurred_at, causation=decision.causation)
    elif decision.kind == "score":
        lead.scorer_score(fit=f["fit"], behaviour=f["behaviour"], total=f["total"], contributions=f["contributions"],
                          policy_version=f["policy_version"], occurred_at=decision.occurred_at)
    elif decision.kind == "qualify":
        lead.auto_qualify(total=f["total"], threshold=f["threshold"], policy_version=f["policy_version"],
                          occurred_at=decision.occurred_at)
    else:
        lead.sla_timer(breached=f["breached"], sla=f["sla"], started_at=f["started_at"], deadline=f["deadline"],
                       owner=f["owner"], policy_version=f["policy_version"], occurred_at=decision.occurred_at)
