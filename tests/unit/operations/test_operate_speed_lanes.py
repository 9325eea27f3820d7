"""The router's queue as lanes (lifecycle/operations/operator.py `_Lane`): leads queued alike share one
release instant, only a lane's first lead in queue order comes up, and a lead whose instant is its own
(queued after a freeing, or refused at its release) keeps it until its rule is marked again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from lifecycle.operations.operator import Operator, Seen, feed, to_us
from lifecycle.operations.policy import Policy, parse_policy

POLICY = parse_policy("""
[calendars.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
[reps.maria]
calendar = "office"
capacity = 1
[reps.jonas]
calendar = "office"
capacity = 1
[routing]
on = ["mql"]
[[routing.rules]]
id = "all"
pool = { maria = 1, jonas = 1 }
""")
MON = datetime(2026, 3, 2, 10, tzinfo=UTC)
LEADS = [uuid5(UUID(int=0), f"lead-{n}") for n in range(8)]


@dataclass(frozen=True)
class _Version:
    policy: Policy
    version: int = 1


class _Always:
    def before(self, position: int) -> _Version:
        return VERSION


VERSION = _Version(POLICY)


class Log:
    def __init__(self) -> None:
        self.events: list[Seen] = []
        self.versions: dict[UUID, int] = {}

    def add(self, lead: UUID, name: str, at: datetime, **data: Any) -> Seen:
        self.versions[lead] = self.versions.get(lead, 0) + 1
        seen = Seen(len(self.events) + 1, lead, self.versions[lead], name, at, "crm", f"e{len(self.events)}", data)
        self.events.append(seen)
        return seen

    def mql(self, lead: UUID, at: datetime) -> list[Seen]:
        return [self.add(lead, "LeadCaptured", at, channel="web", attributes={}, from_stage=None,
                         to_stage="captured"),
                self.add(lead, "LeadQualifiedAsMQL", at + timedelta(seconds=1), from_stage="captured",
                         to_stage="mql", override=True, reason="x", score=None)]

    def out(self, lead: UUID, at: datetime) -> Seen:
        return self.add(lead, "LeadDisqualified", at, from_stage="sal", to_stage="disqualified", reason="x")


def _run(log: Log, seen: list[Seen], operator: Operator) -> list[tuple[UUID, str, datetime]]:
    decided = feed(operator, seen)
    for d in decided:
        log.versions[d.lead] = log.versions.get(d.lead, 0) + 1  # the decision's version in the lead's stream
    return [(d.lead, d.kind, d.occurred_at) for d in decided]


def test_queued_leads_share_their_lane_and_come_up_in_queue_order() -> None:
    log, operator = Log(), Operator(_Always())
    first = _run(log, log.mql(LEADS[0], MON) + log.mql(LEADS[1], MON + timedelta(minutes=1)), operator)
    assert [kind for _, kind, _ in first] == ["assign", "assign"]  # both reps full now
    queued = []
    for n in range(2, 6):
        queued += _run(log, log.mql(LEADS[n], MON + timedelta(minutes=n)), operator)
    assert [kind for _, kind, _ in queued] == ["queue"] * 4
    freed = MON + timedelta(minutes=30)
    released = _run(log, [log.out(LEADS[0], freed), log.add(LEADS[7], "LeadTouched", freed + timedelta(seconds=1),
                                                            kind="visit", channel="web", campaign=None)], operator)
    assert released == [(LEADS[2], "assign", freed)]  # the first queued, at the instant its rep is free
    lane = operator.queue[LEADS[3]].lane
    assert lane is not None and not lane.own  # the others wait together, on the lane's one instant
    assert [e.lead for e in lane.members.values()] == LEADS[3:6] and lane.head() is operator.queue[LEADS[3]]
    assert lane.release_at is None and lane.since == to_us(freed)  # both reps full again: nobody to take them


def test_a_lead_queued_after_the_freeing_instant_looks_from_its_own_queueing() -> None:
    log, operator = Log(), Operator(_Always())
    _run(log, log.mql(LEADS[0], MON) + log.mql(LEADS[1], MON + timedelta(minutes=1)), operator)
    late = MON + timedelta(hours=2)
    _run(log, log.mql(LEADS[2], MON + timedelta(minutes=2)) + log.mql(LEADS[3], late), operator)
    # a freeing stored after, but occurred before LEADS[3] was queued (a late event): its lane's base looks
    # from the freeing, LEADS[3] from its queueing
    freed = MON + timedelta(hours=1)
    out = _run(log, [log.out(LEADS[0], freed)], operator)
    assert out == []  # due at the next event or tick
    assert [(d.lead, d.kind, d.occurred_at) for d in operator.tick(late + timedelta(minutes=5))] == [
        (LEADS[2], "assign", freed)]
    entry = operator.queue[LEADS[3]]
    assert entry.own and entry.release_at is None  # both full again at its queueing
