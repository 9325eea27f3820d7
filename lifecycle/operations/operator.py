"""The operator's decisions as a fold over the event log (no IO): router triggers, queue releases and
SLA timers, each decided from the stored history, the policy in force and the event times only.

The runner (lifecycle/operate.py) feeds every stored event in store order. `fold` only learns from an
event (rebuilding state after a restart, and the operator's own decisions as they come back from the
log); `handle` first fires what time made due before the event's `occurred_at` (queue releases at or
before it, SLA warnings and deadlines strictly before it, in instant order), then folds the event and
decides what it triggers. `tick(now)` fires what is due before the operator's clock. Every decision is
folded at once, so later decisions see it before it is stored.

Open leads, owners and stages are taken at the decision instant by `occurred_at` over the histories
folded so far: each lead's timeline is kept sorted by (occurred_at, version), and each rep's intervals
of holding an open lead are indexed so "open leads of rep r at t" is two bisections.

The work per event does not grow with the queue or with a lead's history. Queued leads wait in lanes
(one per routing rule and excluded rep, in queue order): a release instant is a function of (rule,
excluded rep, the instant looked from, the pool's loads there), a change that can free a full rep marks
the rule once, and at the next look each lane computes one instant for all its leads that look from the
mark (the lane's base, of which only the first in queue order can come up) and one for each lead with
an instant of its own (queued after the mark, or refused at its release). A lead's segments, its
clocks' view of its events and the policy version in force for each are kept in step as events are
learned (rebuilt only when an event is folded out of order).
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol
from uuid import UUID

from lifecycle.domain.events import OPERATOR_ACTORS
from lifecycle.domain.stage import Stage
from lifecycle.domain.stages import OWNER_CLEARING_EVENTS
from lifecycle.operations import routing, scoring, sla
from lifecycle.operations.policy import Policy, Scoring, SlaRule
from lifecycle.settings import DEFAULT_MQL_THRESHOLD

OPEN_STAGES = frozenset({Stage.MQL.value, Stage.SAL.value, Stage.SQL.value})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


_NEVER = 2**62  # µs: later than any instant a policy can name
_KINDS: dict[tuple[str, str | None], frozenset[str]] = {}  # sla.event_kinds by (event name, stage entered)
#: a pending SLA timer: (at µs, clock start µs, the lead's capture position, lead, sla id, warned|breached,
#: the lead's timer generation, the policy version the clock is judged by)
_Timer = tuple[int, int, int, UUID, str, str, int, int]


def to_us(value: datetime) -> int:
    return (value - _EPOCH) // _US


def from_us(value: int) -> datetime:
    return _EPOCH + _US * value


class Seen(NamedTuple):
    """One stored event as the operator reads it (immutable; a tuple: a catch-up makes one per stored
    event, three times faster than a frozen dataclass)."""

    position: int  # notification id (store order)
    lead: UUID
    version: int
    name: str
    occurred: datetime
    actor: str
    event_id: str
    data: dict[str, Any]

    @property
    def decided(self) -> bool:
        """One of leadledger's own decisions (folded when it was decided)."""
        return self.actor in OPERATOR_ACTORS


@dataclass(frozen=True)
class Decision:
    """An event the operator records: `kind` names the aggregate method (lifecycle/operate.py)."""

    lead: UUID
    kind: Literal["assign", "queue", "warn", "breach", "score", "qualify"]
    occurred_at: datetime
    fields: dict[str, Any]
    causation: str | None = None


class PolicySource(Protocol):
    """Which policy version is in force for a trigger at a notification id (lifecycle/policies.py). One
    object always gives the same answer for a position (the operator remembers them per object: the runner
    sets a new one when versions are published)."""

    def before(self, position: int) -> Any: ...


#: The lead as stored now, for the scorer's automatic MQL: its stage and the instant (µs) of its latest
#: stage change. A lead the store moved on since the event at hand (a catch-up over old history) is not
#: qualified at that event: its stored history already went on without it.
Head = Callable[[UUID], tuple[str, int]]


@dataclass(slots=True)
class _Item:
    occurred: int
    version: int
    kinds: frozenset[str]
    stage: str | None  # the stage it enters
    owner: str | Literal[False] | None  # the owner it sets; None clears; False: leaves it
    position: int

    def key(self) -> tuple[int, int]:
        return (self.occurred, self.version)


@dataclass
class _Lead:
    attributes: dict[str, Any] = field(default_factory=dict)
    items: list[_Item] = field(default_factory=list)  # sorted by (occurred, version)
    #: (from µs, owner, stage) in occurred order
    segments: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    intervals: list[tuple[str, int, int | None]] = field(default_factory=list)  # (rep, from, to) open leads held
    #: what the aggregate says (store order): the router's triggers look at these
    owner: str | None = None
    stage: str | None = None
    version: int = 0
    captured_position: int = 0  # the notification id of its capture (store order of leads)
    fired: set[tuple[str, int, str]] = field(default_factory=set)  # (sla, started µs, warned|breached)
    timer_generation: int = 0
    #: runs computed before, per policy version (sla.runs' cache)
    runs: dict[int, sla.RunCache] = field(default_factory=dict)
    #: derived from `items`, kept in step as items are added (an item folded out of order rebuilds them):
    #: the kinds of all items, the clocks' view of each item, and the policy version in force for each
    kinds: set[str] = field(default_factory=set)
    clock_events: list[sla.ClockEvent] | None = None
    in_force: list[Any] | None = None
    in_force_of: Any = None  # the policy source `in_force` was looked up in
    #: of `in_force` (the list `sla_of`, its first `sla_seen` entries): the versions with SLA rules, by number
    sla_of: list[Any] | None = None
    sla_seen: int = 0
    sla_versions: dict[int, Any] = field(default_factory=dict)
    touches: list[scoring.Touch] = field(default_factory=list)  # the scorer's input (store order)
    #: touches learned since the scorer last looked: (occurred µs, kind, channel, campaign), store order
    untouched: list[tuple[int, Any, Any, Any]] = field(default_factory=list)
    scored: tuple[int, int] | None = None  # (policy version, total) of the scorer's latest score
    changed: int = 0  # µs: the latest stage change by occurred-at (a stage change before it is impossible)


@dataclass(eq=False)
class _Queued:
    seq: int
    lead: UUID
    queued_at: int
    exclude: str | None  # the breaching owner of a reassignment
    owner: str | None  # the owner when queued (a reassignment keeps it until released)
    #: the first instant a candidate exists, as last computed for this lead alone (None: none, or it
    #: shares its lane's)
    release_at: int | None = None
    version: int = 0  # the queueing's version in the lead's stream: with queued_at, where it stands
    lane: _Lane | None = None  # where it waits under the policy in force (None: no rule, or no policy yet)
    own: bool = True  # its release instant is its own, not its lane's shared one
    #: set since the last look (queueing, a new policy, a release that found no candidate): the instant to
    #: look from, and how many freeing marks its rule had then (the later ones apply on top)
    since: int | None = None
    marks_seen: int = 0


@dataclass(eq=False)
class _Lane:
    """The leads queued under one rule with one excluded rep (None: a first routing), in queue order.

    A release instant depends on (rule, excluded rep, the instant looked from) and the pool's loads
    only, and each freeing mark of the rule has all of its queued leads look again from the mark's
    instant (from their queueing when that is later): so most of a lane share one instant, the lane's
    `since` and `release_at`. Those are the lane's base — every member not in `own` — and of them only
    the first in queue order can be released next."""

    rule: routing.RoutingRule
    exclude: str | None
    members: dict[UUID, _Queued] = field(default_factory=dict)  # in queue order (seq)
    own: dict[UUID, _Queued] = field(default_factory=dict)  # the members with an instant of their own
    since: int = 0
    release_at: int | None = None
    epoch: int = 0  # counts the base's looks: heap entries of an older one are stale
    latest_queued: int = -1  # at least the latest queued_at of a base member

    def head(self) -> _Queued | None:
        """The base's first member in queue order."""
        if not self.own:
            return next(iter(self.members.values()), None)
        return next((e for e in self.members.values() if not e.own), None)


@dataclass(eq=False)
class _RuleQueue:
    """A rule's lanes, and the instants of the freeing marks made since the last look."""

    lanes: dict[str | None, _Lane] = field(default_factory=dict)
    marks: list[int] = field(default_factory=list)


#: a release candidate in the heap: (release µs, queue seq, tie, a lane's base or one lead, the lane's epoch)
_Release = tuple[int, int, int, "_Lane | _Queued", int]


class Operator:
    """Derived state and decisions; see the module docstring."""

    def __init__(self, policies: PolicySource, *, mql_threshold: int = DEFAULT_MQL_THRESHOLD,
                 head: Head | None = None) -> None:
        self.policies = policies
        self.mql_threshold = mql_threshold  # the scorer's threshold when the policy's [scoring] names none
        self.head = head  # None: the store holds nothing beyond what was handled (simulations, backtests)
        self.leads: dict[UUID, _Lead] = {}
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        self._accounts: dict[str, set[UUID]] = {}
        self.currents: dict[str, dict[str, int]] = {}
        self.queue: dict[UUID, _Queued] = {}
        self._queue_seq = 0
        self._timers: list[_Timer] = []
        self._versions: dict[int, Any] = {}  # the policy versions clocks are judged by, by number
        self.position = 0  # the last notification id handled or folded
        self.policy: Any = None  # the version in force for the next event (lifecycle.policies.Published)
        self.decided = 0
        self._clock_kinds: frozenset[str] = frozenset()
        #: queued leads to look at again on their own, from their `since` (see _Queued)
        self._looking: dict[UUID, _Queued] = {}
        self._lanes_for: Any = None  # the policy `_lanes` were built under
        self._lanes: dict[str, _RuleQueue] = {}  # by rule id
        self._marked: dict[str, _RuleQueue] = {}  # the rules with freeing marks since the last look
        self._releases: list[_Release] = []
        self._tie = itertools.count()
        self._rules_for: Any = None  # the policy `_rules` were selected under
        self._rules: dict[UUID, routing.RoutingRule | None] = {}
        self._routing_on_for: Any = None  # the policy `_routing_stages` were read from
        self._routing_stages: frozenset[str] = frozenset()
        self._before: tuple[Any, int, Any] = (None, -1, None)  # (source, position, its answer): `handle`'s

    # ---------------------------------------------------------------------------- reading the log

    def fold(self, seen: Seen) -> None:
        """Learn from an event without deciding anything (rebuild, or an own decision from the log)."""
        self.position = max(self.position, seen.position)
        self._learn(seen)

    def arm(self) -> None:
        """Under a policy (after a rebuild, or when a new version comes into force): derive every lead's
        pending SLA timers and the queue's release instants."""
        pol: Policy | None = self.policy.policy if self.policy is not None else None
        if pol is not None:  # older versions' kinds stay: their clocks still run
            self._clock_kinds = self._clock_kinds.union(*({r.start} | r.stop for r in pol.sla))
        self._timers.clear()
        for lead_id in self.leads:
            self._rearm(lead_id)
        # every queued lead looks again from its queueing (or later, if it was to), in the new lanes
        since = {lead_id: max(self._since(entry) or 0, entry.queued_at) for lead_id, entry in self.queue.items()}
        self._lanes_for, self._lanes, self._marked = pol, {}, {}
        self._releases.clear()
        self._looking.clear()
        for entry in sorted(self.queue.values(), key=lambda e: e.seq):
            entry.lane, entry.own, entry.release_at = None, True, None
            self._place(entry)
            self._look_from(entry, since[entry.lead])

    def handle(self, seen: Seen) -> list[Decision]:
        """Fire what is due before the event, fold it, and decide what it triggers."""
        out: list[Decision] = []
        position = seen.position
        policies = self.policies
        policy = policies.before(position)
        # remembered for `_learn`'s look-up of the same position (the source answers one position alike)
        self._before = (policies, position, policy)
        if policy is not self.policy:
            self.policy = policy
            self.arm()
        at = to_us(seen.occurred)
        # skipped when `_due(at)` has nothing to give (most events): no look pending and both heaps' earliest
        # entries (stale ones included, which only come earlier) after what it would fire
        if (self._marked or self._looking or (self._releases and self._releases[0][0] <= at)
                or (self._timers and self._timers[0][0] < at)):
            out.extend(self._due(at, releases_inclusive=True))
        if position > self.position:
            self.position = position
        if seen.actor in OPERATOR_ACTORS:
            return out  # an own decision coming back from the log: folded when it was decided
        lead = self._learn(seen, at)
        if lead is None or self.policy is None:
            return out
        entered = seen.data.get("to_stage")
        if self.policy.policy.scoring is not None and seen.name in ("LeadCaptured", "LeadTouched"):
            scored, qualified = self._score(seen.lead, lead, at)
            out.extend(scored)
            if qualified:
                entered = "mql"
        if (entered is not None and lead.owner is None and entered in self._routing_on()
                and seen.lead not in self.queue):
            out.extend(self._route(seen.lead, at, exclude=None, causation=None))
        return out

    def tick(self, now: datetime) -> list[Decision]:
        """Fire the queue releases at or before `now` and the timers strictly before it."""
        if self.policy is None:
            self.policy = self.policies.before(self.position + 1)
            if self.policy is not None:
                self.arm()
        return list(self._due(to_us(now), releases_inclusive=True))

    def next_due(self) -> datetime | None:
        """The earliest instant a queue release or an SLA timer is due, from what was handled so far
        (None: nothing pending). A simulation runs the operator there; `operate` itself needs it not."""
        if self.policy is None:
            return None
        release = self._next_release(_NEVER)
        timer = self._next_timer(_NEVER)
        found = [at for at in (release[0] if release else None, timer[0] if timer else None) if at is not None]
        return from_us(min(found)) if found else None

    # ---------------------------------------------------------------------------- learning

    def _learn(self, seen: Seen, occurred: int | None = None) -> _Lead | None:
        """Fold an event into the lead's state (`occurred`: its occurred_at in µs, when known); the lead
        (None: a stream without its capture)."""
        lead_id = seen.lead
        lead = self.leads.get(lead_id)
        name = seen.name
        if lead is None:
            if name != "LeadCaptured":
                return None  # a stream without its capture: the readers report it; nothing to decide
            lead = self.leads[lead_id] = _Lead(captured_position=seen.position)
        version = seen.version
        if version > lead.version:
            lead.version = version
        data = seen.data
        if occurred is None:
            occurred = to_us(seen.occurred)
        if name == "LeadTouched":  # made Touches when the scorer asks (`_score`)
            lead.untouched.append((occurred, data.get("kind"), data.get("channel"), data.get("campaign")))
        elif name == "LeadScored":
            if seen.actor == "scorer":
                lead.scored = (int(data["policy_version"]), int(data["total"]))
        elif name == "LeadCaptured":
            lead.attributes = dict(data.get("attributes") or {})
            self._rules.pop(lead_id, None)
            account = lead.attributes.get("account_key")
            if isinstance(account, str):
                self._accounts.setdefault(account, set()).add(lead_id)
        stage = data.get("to_stage")
        owner: str | Literal[False] | None = False
        if name == "LeadAssigned":
            owner = data.get("owner")
            if data.get("method") == "round_robin" and data.get("candidates"):
                self._advance(str(data["rule"]), str(data["owner"]), data["candidates"])
        elif name in OWNER_CLEARING_EVENTS:
            owner = None
        kinds = _KINDS.get((name, stage))
        if kinds is None:
            kinds = _KINDS[name, stage] = sla.event_kinds(name, stage)
        if name == "LeadRoutingQueued":
            self._enqueue(lead_id, occurred, version, data)
        elif name in ("LeadSLAWarned", "LeadSLABreached"):
            started = to_us(datetime.fromisoformat(str(data["started_at"])))
            lead.fired.add((str(data["sla"]), started, "warned" if name == "LeadSLAWarned" else "breached"))
            return lead
        if not kinds and owner is False:
            return lead
        position = seen.position
        item = _Item(occurred, version, kinds, stage, owner, position)
        lead.kinds |= kinds
        items = lead.items
        if items:
            previous_item = items[-1]
            last = previous_item.occurred < occurred or (
                previous_item.occurred == occurred and previous_item.version <= version)
        else:
            last = True
        if last:
            items.append(item)
            clock_events = lead.clock_events
            if clock_events is not None:
                previous = clock_events[-1].owner if clock_events else None
                at = seen.occurred if seen.occurred.tzinfo is UTC else from_us(occurred)
                clock_events.append(sla.ClockEvent(at, kinds, previous if owner is False else owner))
            in_force = lead.in_force
            if in_force is not None and lead.in_force_of is self.policies:
                policies, at_position, policy = self._before  # handle's look-up for this event, mostly
                in_force.append(policy if at_position == position and policies is self.policies
                                else self.policies.before(position))
        else:
            insort(lead.items, item, key=_Item.key)
            lead.clock_events = lead.in_force = None
        if stage is not None and occurred > lead.changed:
            lead.changed = occurred
        if stage is not None or owner is not False:
            self._resegment(lead_id, lead, item if last else None)
            # the lead's owner and stage by occurred-at (events of one instant in store order): a decision
            # folded after later events of its lead (a rebuild) lands where it occurred, as when it was made
            _, lead.owner, lead.stage = lead.segments[-1]
        if self.queue:
            entry = self.queue.get(lead_id)
            if entry is not None and name != "LeadRoutingQueued" and (
                    occurred > entry.queued_at or (occurred == entry.queued_at and version > entry.version)) and (
                    self._lets_go(entry, lead, item)):
                self._dequeue(lead_id)
        if stage is not None or owner is not False or not self._clock_kinds.isdisjoint(kinds):
            self._rearm(lead_id)
        return lead

    def _routing_on(self) -> frozenset[str]:
        pol = self.policy.policy if self.policy is not None else None
        if pol is not self._routing_on_for:
            self._routing_on_for = pol
            self._routing_stages = frozenset(
                s.value for s in pol.routing.on) if pol is not None and pol.routing is not None else frozenset()
        return self._routing_stages

    def _advance(self, rule: str, winner: str, candidates: list[dict[str, Any]]) -> None:
        state = self.currents.setdefault(rule, {})
        total = sum(int(c["weight"]) for c in candidates)
        for c in candidates:
            state[c["rep"]] = state.get(c["rep"], 0) + int(c["weight"])
        state[winner] = state.get(winner, 0) - total

    def _enqueue(self, lead_id: UUID, at: int, version: int, data: dict[str, Any]) -> None:
        exclude = next((e["rep"] for e in data.get("excluded") or () if e.get("reason") == "breached"), None)
        self._queue_seq += 1
        lead = self.leads[lead_id]
        entry = _Queued(self._queue_seq, lead_id, at, exclude, self._owner_at(lead, at), version=version)
        # a rebuild may fold the queueing after later events of the lead (by occurred-at, then version):
        # those let it go as they did when they were learned after it
        if any(self._lets_go(entry, lead, item) for item in lead.items if item.key() > (at, version)):
            return
        before = self.queue.get(lead_id)
        if before is not None:
            self._leave(before)
        self.queue[lead_id] = entry
        self._place(entry)
        self._look_from(entry, at)

    def _lets_go(self, entry: _Queued, lead: _Lead, item: _Item) -> bool:
        """Whether `item` (at or after the queueing) ends the lead's wait: an assignment by anyone, a stage
        outside the routing stages, or — queued to be reassigned — a contact while its breaching owner
        still owns it (it stays theirs)."""
        if isinstance(item.owner, str):
            return True
        if item.stage is not None:
            version = self.policies.before(item.position)  # in force for that event (a rebuild has no current one)
            routing_stages = version.policy.routing if version is not None else None
            if routing_stages is None or item.stage not in {s.value for s in routing_stages.on}:
                return True
        return ("contacted" in item.kinds and entry.exclude is not None
                and self._owner_at(lead, item.occurred) == entry.exclude)

    @staticmethod
    def _owner_at(lead: _Lead, at: int) -> str | None:
        """The lead's owner at `at` by occurred-at (its segments)."""
        index = bisect_right(lead.segments, at, key=lambda s: s[0]) - 1
        return lead.segments[index][1] if index >= 0 else None

    def _rule_of(self, pol: Policy, lead_id: UUID) -> routing.RoutingRule | None:
        """The routing rule of a queued lead under `pol` (remembered per policy: its attributes are fixed
        at capture)."""
        if self._rules_for is not pol:
            self._rules_for, self._rules = pol, {}
        if lead_id not in self._rules:
            self._rules[lead_id] = routing.select_rule(pol, self.leads[lead_id].attributes)
        return self._rules[lead_id]

    def _place(self, entry: _Queued) -> None:
        """Put a queued lead in its lane under the policy in force (the lanes are built by `arm`)."""
        pol = self.policy.policy if self.policy is not None else None
        if pol is None or self._lanes_for is not pol:
            return
        rule = self._rule_of(pol, entry.lead)
        if rule is None:
            return  # no rule under this policy: it is never released (nor was it before)
        queue = self._lanes.get(rule.id)
        if queue is None:
            queue = self._lanes[rule.id] = _RuleQueue()
        lane = queue.lanes.get(entry.exclude)
        if lane is None:
            lane = queue.lanes[entry.exclude] = _Lane(rule, entry.exclude)
        lane.members[entry.lead] = entry
        if entry.own:
            lane.own[entry.lead] = entry
        entry.lane = lane

    def _leave(self, entry: _Queued) -> None:
        if self._looking.get(entry.lead) is entry:
            del self._looking[entry.lead]
        lane = entry.lane
        if lane is not None:
            lane.members.pop(entry.lead, None)
            lane.own.pop(entry.lead, None)
            entry.lane = None

    def _look_from(self, entry: _Queued, since: int) -> None:
        """Have the lead look for its release instant again, on its own, from `since`."""
        entry.since = since
        entry.release_at = None
        lane = entry.lane
        entry.marks_seen = len(self._lanes[lane.rule.id].marks) if lane is not None else 0
        if not entry.own:
            entry.own = True
            if lane is not None:
                lane.own[entry.lead] = entry
        self._looking[entry.lead] = entry

    def _since(self, entry: _Queued) -> int | None:
        """The instant the lead is to look from at the next look (None: it needs no look)."""
        lane = entry.lane
        marks = self._lanes[lane.rule.id].marks if lane is not None else []
        if entry.since is not None:
            later = marks[entry.marks_seen:]
            return max(entry.since, max(later), entry.queued_at) if later else entry.since
        return max(max(marks), entry.queued_at) if marks else None

    def _dequeue(self, lead_id: UUID) -> None:
        entry = self.queue.pop(lead_id, None)
        if entry is not None:
            self._leave(entry)

    def _resegment(self, lead_id: UUID, lead: _Lead, appended: _Item | None) -> None:
        """The lead's segments and intervals after an owner or stage change: `appended`, an item that
        went to the end of its items, only extends the segments (segments only ever mark where the owner
        or stage may change: an extra one with the same state changes no lookup, nor any interval)."""
        segments = lead.segments
        if appended is not None:
            at = appended.occurred
            owner, stage = (segments[-1][1], segments[-1][2]) if segments else (None, None)
            if appended.stage is not None:
                stage = appended.stage
            if appended.owner is not False:
                owner = appended.owner
            if segments and segments[-1][0] == at:
                segments[-1] = (at, owner, stage)
            else:
                segments.append((at, owner, stage))
        else:  # an item folded out of order (a rebuild): all again
            segments = []
            owner = stage = None
            for item in lead.items:
                if item.stage is not None:
                    stage = item.stage
                if item.owner is not False:
                    owner = item.owner
                if segments and segments[-1][0] == item.occurred:
                    segments[-1] = (item.occurred, owner, stage)
                else:
                    segments.append((item.occurred, owner, stage))
            lead.segments = segments
        intervals: list[tuple[str, int, int | None]] = []
        held: tuple[str, int] | None = None
        for since, who, where in segments:
            holder = who if who is not None and where in OPEN_STAGES else None
            if held is not None and held[0] != holder:
                intervals.append((held[0], held[1], since))
                held = None
            if holder is not None and held is None:
                held = (holder, since)
        if held is not None:
            intervals.append((held[0], held[1], None))
        if intervals == lead.intervals:
            return
        for rep, start, end in lead.intervals:
            _remove(self._starts[rep], start)
            if end is not None:
                _remove(self._ends[rep], end)
        for rep, start, end in intervals:
            insort(self._starts.setdefault(rep, []), start)
            if end is not None:
                insort(self._ends.setdefault(rep, []), end)
        changed = {rep for rep, _, _ in lead.intervals} | {rep for rep, _, _ in intervals}
        lead.intervals = intervals
        if self.queue and self.policy is not None:
            self._freed(changed, segments[-1][0])  # from the lead's latest instant

    def _freed(self, reps: set[str], at: int) -> None:
        """A change of who holds which open lead can free a rep at capacity: the queued leads whose pool
        has such a rep look for their release instant again, from `at` (from their queueing when that is
        later; a rep below capacity changes nothing). A mark on the rule does it for all of them at once."""
        pol: Policy = self.policy.policy
        tight = set()
        for rep in reps:
            capacity = pol.reps[rep].capacity if rep in pol.reps else None
            if capacity is not None and self.open_count(rep, at) + 1 >= capacity:
                tight.add(rep)
        if not tight:
            return
        if pol.routing is None:
            return
        for rule in pol.routing.rules:
            queue = self._lanes.get(rule.id)
            if queue is not None and any(rep in tight for rep, _ in rule.pool):
                queue.marks.append(at)
                self._marked[rule.id] = queue

    # ---------------------------------------------------------------------------- at an instant

    def open_count(self, rep: str, at: int) -> int:
        """The open leads `rep` holds at `at` (by occurred_at)."""
        starts = self._starts.get(rep)
        if not starts:
            return 0
        return bisect_right(starts, at) - bisect_right(self._ends.get(rep, []), at)

    def _holder_at(self, lead: _Lead, at: int) -> str | None:
        index = bisect_right(lead.segments, at, key=lambda s: s[0]) - 1
        if index < 0:
            return None
        _, owner, stage = lead.segments[index]
        return owner if stage in OPEN_STAGES else None

    def _loads(self, rule: routing.RoutingRule, at: int) -> dict[str, int]:
        """The open leads each rep of the rule's pool holds at `at`."""
        return {rep: self.open_count(rep, at) for rep, _ in rule.pool}

    def _same_account(self, rule: routing.RoutingRule, lead_id: UUID, at: int, loads: dict[str, int],
                      ) -> dict[str, int]:
        """Of those, the leads of this lead's account (all that stickiness looks at)."""
        account = self.leads[lead_id].attributes.get("account_key")
        same: dict[str, int] = {}
        if rule.sticky == "account" and isinstance(account, str):
            for other in self._accounts.get(account, ()):
                if other != lead_id:
                    holder = self._holder_at(self.leads[other], at)
                    if holder is not None:
                        same[holder] = same.get(holder, 0) + 1
        return {rep: min(n, loads.get(rep, 0)) for rep, n in same.items()}

    def _decide_route(self, pol: Policy, rule: routing.RoutingRule, lead_id: UUID, at: int,
                      exclude: str | None) -> routing.Decision:
        loads = self._loads(rule, at)
        return routing.route_loads(pol, rule, self.leads[lead_id].attributes.get("account_key"), from_us(at),
                                   loads, self._same_account(rule, lead_id, at, loads), self.currents,
                                   exclude=exclude)

    # ---------------------------------------------------------------------------- deciding

    def _route(self, lead_id: UUID, at: int, *, exclude: str | None, causation: str | None) -> list[Decision]:
        pol: Policy = self.policy.policy
        rule = self._rule_of(pol, lead_id)
        if rule is None:
            return []
        when = from_us(at)
        decision = self._decide_route(pol, rule, lead_id, at, exclude)
        version = self.policy.version
        excluded = [{"rep": e.rep, "reason": e.reason} for e in decision.excluded]
        if isinstance(decision, routing.Assigned):
            fields = _assigned_fields(decision, version)
            made = Decision(lead_id, "assign", when, fields, causation)
            self._learn_decision(lead_id, "LeadAssigned", when, fields)
            return [made]
        if isinstance(decision, routing.Queued):
            fields = {"rule": decision.rule, "policy_version": version, "excluded": excluded}
            made = Decision(lead_id, "queue", when, fields, causation)
            self._learn_decision(lead_id, "LeadRoutingQueued", when, fields)
            return [made]
        return []

    def _learn_decision(self, lead_id: UUID, name: str, when: datetime, fields: dict[str, Any],
                        actor: str = "router") -> None:
        lead = self.leads[lead_id]
        self.decided += 1
        self._learn(Seen(self.position, lead_id, lead.version + 1, name, when, actor, "", fields))

    # ---- the scorer

    def _score(self, lead_id: UUID, lead: _Lead, at: int) -> tuple[list[Decision], bool]:
        """Score the lead at `at` (its capture or a touch): a `LeadScored` when the total differs from the
        scorer's previous one for the lead (or the policy version does: the capture always records one),
        then the automatic MQL when the total reaches the threshold while the lead is in captured, nurtured
        or recycled and nothing stored moved it on since. The scorer's previous score is its own: scores
        from upstream in between neither suppress nor force one (the MQL guard of a manual or upstream
        transition uses the latest of either kind)."""
        version = self.policy.version
        model: Scoring = self.policy.policy.scoring
        if lead.untouched:
            lead.touches.extend(scoring.Touch(*touch) for touch in lead.untouched)
            lead.untouched.clear()
        score = scoring.evaluate(model, lead.attributes, lead.touches, at)
        out: list[Decision] = []
        when = from_us(at)
        if lead.scored != (version, score.total):
            fields = {**score.payload(), "policy_version": version}
            out.append(Decision(lead_id, "score", when, fields))
            self._learn_decision(lead_id, "LeadScored", when, fields, actor="scorer")
        threshold = scoring.threshold_of(model, self.mql_threshold)
        if not model.auto_mql or score.total < threshold or lead.stage not in scoring.PRE_MQL_STAGES or (
                at < lead.changed):
            return out, False
        if self.head is not None:
            stage, changed = self.head(lead_id)
            if stage not in scoring.PRE_MQL_STAGES or at < changed:
                return out, False
        fields = {"total": score.total, "threshold": threshold, "policy_version": version}
        out.append(Decision(lead_id, "qualify", when, fields))
        self._learn_decision(lead_id, "LeadQualifiedAsMQL", when, {"from_stage": lead.stage, "to_stage": "mql"},
                             actor="scorer")
        return out, True

    def _due(self, at: int, *, releases_inclusive: bool) -> Iterator[Decision]:
        """Releases at or before `at` and timers strictly before it, in instant order (ties: releases in
        queue order first, then timers in store order of their clocks' starts)."""
        if self.policy is None:
            return
        while True:
            release = self._next_release(at)
            timer = self._next_timer(at)
            if release is None and timer is None:
                return
            if timer is None or (release is not None and release[0] <= timer[0]):
                assert release is not None
                yield from self._release(release[1], release[0])
            else:
                heapq.heappop(self._timers)
                yield from self._fire(timer)

    # ---- the queue

    def _next_release(self, at: int) -> tuple[int, _Queued] | None:
        """The queued lead released first at or before `at` (ties: queue order)."""
        if self._marked or self._looking:
            self._look()
        releases = self._releases
        while releases:
            when, seq, _, where, epoch = releases[0]
            if isinstance(where, _Lane):
                head = where.head() if where.epoch == epoch else None
                if head is None:
                    heapq.heappop(releases)
                    continue
                if head.seq != seq:  # its head left: the next member takes its place, later in queue order
                    heapq.heapreplace(releases, (when, head.seq, next(self._tie), where, epoch))
                    continue
                entry = head
            else:
                entry = where
                if self.queue.get(entry.lead) is not entry or not entry.own or entry.release_at != when:
                    heapq.heappop(releases)
                    continue
            return (when, entry) if when <= at else None
        return None

    def _look(self) -> None:
        """Compute the release instants asked for since the last look: the marked rules' lanes (each base
        at once, and its own members), then the leads looking on their own. Nothing changes a load while
        it runs, so an instant depends on (rule, the reps free at the instant looked from but the excluded
        one, that instant) here: looked up once."""
        pol: Policy = self.policy.policy
        known: dict[tuple[str, frozenset[str], int], int | None] = {}
        counted: dict[tuple[str, int], tuple[dict[str, int], frozenset[str]]] = {}
        held: dict[int, dict[str, int]] = {}  # open leads per rep at an instant (rules share reps)
        open_count = self.open_count

        def loads_at(rule: routing.RoutingRule, since: int) -> dict[str, int]:
            at = held.get(since)
            if at is None:
                at = held[since] = {}
            out = {}
            for rep, _ in rule.pool:
                n = at.get(rep)
                if n is None:
                    n = at[rep] = open_count(rep, since)
                out[rep] = n
            return out

        def release(lane: _Lane, since: int) -> int | None:
            rule = lane.rule
            if rule.fallback is not None and rule.fallback != lane.exclude:
                return since  # as routing.release_after: the fallback takes it at once
            found = counted.get((rule.id, since))
            if found is None:
                loads = loads_at(rule, since)
                found = counted[rule.id, since] = (loads, frozenset(
                    rep for rep, n in loads.items() if not _full(pol, rep, n)))
            loads, free = found
            # the first instant one of the reps below capacity (but the excluded one) is available: lanes
            # of one rule whose excluded reps are full anyway share it
            eligible = free - {lane.exclude} if lane.exclude in free else free
            if not eligible:
                return None  # nobody to release it to until a load changes (a look again then)
            key = (rule.id, eligible, since)
            if key not in known:
                instant = routing.release_after(pol, rule, from_us(since), loads, exclude=lane.exclude)
                known[key] = to_us(instant) if instant is not None else None
            return known[key]

        def push(when: int | None, seq: int, where: _Lane | _Queued, epoch: int = 0) -> None:
            if when is not None:
                heapq.heappush(self._releases, (when, seq, next(self._tie), where, epoch))

        for queue in self._marked.values():
            top = max(queue.marks)
            for lane in queue.lanes.values():
                if not lane.members:
                    continue
                if lane.latest_queued > top:  # base members queued after the mark look from their queueing
                    lane.latest_queued = -1
                    for entry in list(lane.members.values()):
                        if entry.own:
                            continue
                        if entry.queued_at > top:
                            entry.own, entry.since, entry.marks_seen = True, entry.queued_at, len(queue.marks)
                            lane.own[entry.lead] = entry
                        else:
                            lane.latest_queued = max(lane.latest_queued, entry.queued_at)
                for entry in list(lane.own.values()):
                    since = self._since(entry)
                    assert since is not None  # the mark applies to it
                    entry.since = None
                    if since == top:  # it shares the lane's instant from now on
                        del lane.own[entry.lead]
                        entry.own, entry.release_at = False, None
                        lane.latest_queued = max(lane.latest_queued, entry.queued_at)
                    else:
                        entry.release_at = release(lane, since)
                        push(entry.release_at, entry.seq, entry)
                lane.since, lane.release_at = top, release(lane, top)
                lane.epoch += 1
                head = lane.head()
                if head is not None:
                    push(lane.release_at, head.seq, lane, lane.epoch)
            queue.marks.clear()
        self._marked.clear()
        for entry in self._looking.values():
            if entry.since is None:
                continue  # looked at with its marked rule above
            since, entry.since = entry.since, None
            entry.release_at = release(entry.lane, since) if entry.lane is not None else None
            push(entry.release_at, entry.seq, entry)
        self._looking.clear()

    def _release(self, entry: _Queued, at: int) -> Iterator[Decision]:
        lead = self.leads[entry.lead]
        stage_ok = lead.stage in (self._routing_on() if entry.exclude is None else OPEN_STAGES)
        if lead.owner != entry.owner or not stage_ok:
            self._dequeue(entry.lead)  # decided otherwise meanwhile: nothing to release
            return
        pol: Policy = self.policy.policy
        rule = self._rule_of(pol, entry.lead)
        if rule is None:
            self._dequeue(entry.lead)  # no rule matches under this policy any more
            return
        decision = self._decide_route(pol, rule, entry.lead, at, entry.exclude)
        if not isinstance(decision, routing.Assigned):
            self._look_from(entry, at + 1)  # the load changed since the instant was computed: look on from here
            return
        self._dequeue(entry.lead)
        when = from_us(at)
        fields = _assigned_fields(decision, self.policy.version)
        self._learn_decision(entry.lead, "LeadAssigned", when, fields)
        yield Decision(entry.lead, "assign", when, fields)

    # ---- SLA timers

    def _rearm(self, lead_id: UUID) -> None:
        """Push the lead's pending SLA timers (older entries of the lead are skipped when popped). Each
        clock is judged by the policy version in force when its start event was stored: publishing a new
        version never reaches back to clocks already running, and none runs from before the first."""
        if self.policy is None:
            return
        lead = self.leads[lead_id]
        lead.timer_generation += 1
        in_force = self._in_force(lead)
        # the versions with SLA rules among those in force for its items, by number (the latest object
        # of a number wins), kept in step with `in_force` (a list that only grows, or is replaced)
        if lead.sla_of is not in_force:
            lead.sla_of, lead.sla_seen, lead.sla_versions = in_force, 0, {}
        versions = lead.sla_versions
        if lead.sla_seen < len(in_force):
            for v in in_force[lead.sla_seen:]:
                if v is not None and v.policy.sla:
                    versions[v.version] = v
            lead.sla_seen = len(in_force)
        events = None
        for number, version in (sorted(versions.items()) if len(versions) > 1 else versions.items()):
            pol: Policy = version.policy
            self._versions[number] = version
            for rule in pol.sla:
                if not _mentions(lead, rule):
                    continue
                if events is None:
                    events = self._clock_events(lead)
                for clock in sla.runs(pol, rule, events, lead.runs.setdefault(number, {})):
                    start = in_force[clock.start_index]
                    if start is None or start.version != number:
                        continue  # this run started under another version: judged by that one's rules
                    started = to_us(clock.started_at)
                    due: list[tuple[str, datetime]] = [("breached", clock.deadline)]
                    if clock.warn_at is not None:
                        due.insert(0, ("warned", clock.warn_at))
                    for kind, when in due:
                        if (rule.id, started, kind) in lead.fired:
                            continue
                        if clock.ended_at is not None and (clock.ended_at < when or (
                                clock.ended_at == when and clock.ended_by == "stop")):
                            continue  # a stop at the instant is in time; a restart there is late
                        # ties broken by what the history fixes (the lead's capture in store order), never by
                        # when this process computed the timer: a rebuilt operator fires in the same order
                        heapq.heappush(self._timers, (to_us(when), started, lead.captured_position, lead_id, rule.id,
                                                      kind, lead.timer_generation, number))

    def _in_force(self, lead: _Lead) -> list[Any]:
        """The policy version in force for each of the lead's items (the source gives the same answer for
        a position as long as it is the same object; the runner replaces it when versions are published)."""
        if lead.in_force is None or lead.in_force_of is not self.policies:
            lead.in_force = [self.policies.before(item.position) for item in lead.items]
            lead.in_force_of = self.policies
        return lead.in_force

    @staticmethod
    def _clock_events(lead: _Lead) -> list[sla.ClockEvent]:
        """The lead's items as its clocks see them (kept in step by `_learn`)."""
        if lead.clock_events is None:
            out = []
            owner: str | None = None
            for item in lead.items:
                if item.owner is not False:
                    owner = item.owner
                out.append(sla.ClockEvent(from_us(item.occurred), item.kinds, owner))
            lead.clock_events = out
        return lead.clock_events

    def _next_timer(self, at: int) -> _Timer | None:
        while self._timers:
            top = self._timers[0]
            lead = self.leads.get(top[3])
            if lead is None or top[6] != lead.timer_generation:
                heapq.heappop(self._timers)
                continue
            return top if top[0] < at else None
        return None

    def _fire(self, timer: _Timer) -> Iterator[Decision]:
        at, started, _, lead_id, rule_id, kind, _, number = timer
        version = self._versions[number]
        pol: Policy = version.policy
        rule = next((r for r in pol.sla if r.id == rule_id), None)
        lead = self.leads[lead_id]
        if rule is None or (rule_id, started, kind) in lead.fired:
            return
        events = self._clock_events(lead)
        clock = next((c for c in sla.runs(pol, rule, events, lead.runs.setdefault(number, {}))
                      if to_us(c.started_at) == started), None)
        if clock is None:
            return
        when = from_us(at)
        owner = sla.owner_at(clock.owners, when)
        fields = {"breached": kind == "breached", "sla": rule_id, "started_at": clock.started_at,
                  "deadline": clock.deadline, "owner": owner, "policy_version": number}
        lead.fired.add((rule_id, started, kind))
        self.decided += 1
        lead.version += 1
        yield Decision(lead_id, "breach" if kind == "breached" else "warn", when, fields)
        if (kind == "breached" and "reassign" in rule.on_breach and owner is not None and lead.owner == owner
                and lead.stage in OPEN_STAGES):  # a lead out of the open stages needs no new owner
            yield from self._route(lead_id, at, exclude=owner, causation=None)


def _assigned_fields(decision: routing.Assigned, version: int) -> dict[str, Any]:
    """`LeadAssigned`'s payload for a router decision: how, and from whom, the owner was chosen."""
    return {"owner": decision.rep, "rule": decision.rule, "method": decision.method, "policy_version": version,
            "candidates": [{"rep": c.rep, "weight": c.weight, "current_before": c.current_before, "open": c.open,
                            "capacity": c.capacity} for c in decision.candidates],
            "excluded": [{"rep": e.rep, "reason": e.reason} for e in decision.excluded]}


def _full(pol: Policy, rep: str, load: int) -> bool:
    """As routing.release_after skips a rep: at capacity."""
    capacity = pol.reps[rep].capacity
    return capacity is not None and load >= capacity


def _mentions(lead: _Lead, rule: SlaRule) -> bool:
    return rule.start in lead.kinds


def _remove(values: list[int], value: int) -> None:
    index = bisect_right(values, value) - 1
    if index >= 0 and values[index] == value:
        del values[index]


def feed(operator: Operator, events: Iterable[Seen]) -> list[Decision]:
    """Handle events in order (tests and backtests)."""
    out: list[Decision] = []
    for seen in events:
        out.extend(operator.handle(seen))
    return out
