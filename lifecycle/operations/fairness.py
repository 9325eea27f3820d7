"""Routing fairness (no IO): per rep and per routing rule, what the router decided in a window.

The figures are read from a log of lead events in store order: the stored events for
`leadledger routing fairness` (what happened), or the events replayed through a candidate policy
for `leadledger routing backtest` (lifecycle/operations/backtest.py, what would have happened).
Only the router's decisions count: `LeadAssigned` with actor `router` (round robin, sticky,
fallback, and queue releases) and `LeadRoutingQueued`; a decision counts when its `occurred_at` is
in the window [start, end).

Per rep:

- `assignments`: the router's assignments to the rep (any method), and `by_method`;
- `pool_decisions`: the router's assignments made by a rule whose pool names the rep;
- `share`: of those, the fraction that went to the rep;
- `weight_share`: the rep's weight over the total weight of the rule's whole pool (every pool rep,
  available or not), averaged over those same decisions — what `share` would be if every decision
  went by weight alone; the pool is the rule's in the policy version the decision names;
- `peak_open`: the most open leads (owned, in mql, sal or sql) the rep held at any instant of a
  router decision in the window, that decision included;
- fairness only: `candidate_hours`, the working hours of the rep's calendar in the window on days
  the rep was not absent, while a policy in force named the rep in a routing pool (capacity is
  ignored: a rep at capacity still counts), `assignments_per_candidate_hour`, and
  `share_per_candidate_hour`, those rates normalized to sum to 1 over the reps with candidate hours.

Per rule: `assignments`, `queued` (queue decisions in the window), `released` (of those, the ones
whose lead was assigned — by the router or by hand — before the window's end), `median_wait_s`
(release − queued, nearest rank, over the released), `still_queued` (neither released nor gone at
the window's end) and `left` (the lead left the routing stages, or was queued again, first).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from uuid import UUID

from lifecycle.operations.calendars import absent_on, local_date, working_periods
from lifecycle.operations.operator import Operator, Seen, to_us
from lifecycle.operations.policy import Policy

ROUTER = "router"
_KIND_OF = {"LeadAssigned": "assign", "LeadRoutingQueued": "queue", "LeadSLAWarned": "warn",
            "LeadSLABreached": "breach"}
_US = timedelta(microseconds=1)

OpenCount = Callable[[str, int], int]  # (rep, instant in µs) -> open leads held then
PolicyOf = Callable[[Any], Policy | None]  # a decision's policy_version -> that policy


@dataclass(frozen=True)
class Window:
    """[start, end) by occurred_at; None is unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)

    def before_end(self, at: datetime) -> bool:
        return self.end is None or at < self.end


@dataclass(frozen=True)
class InForce:
    """A published policy version: its number, the notification id it was published after, its policy."""

    version: int
    position: int
    policy: Policy


@dataclass
class RepFigures:
    rep: str
    assignments: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    pool_decisions: int = 0
    pool_won: int = 0
    weight_sum: Fraction = Fraction(0)
    peak_open: int = 0
    # fairness only
    candidate_hours: float | None = None
    share_per_candidate_hour: float | None = None
    # backtest only: what the router assigned the rep in the window in fact
    actual_assignments: int | None = None

    @property
    def share(self) -> float | None:
        return self.pool_won / self.pool_decisions if self.pool_decisions else None

    @property
    def weight_share(self) -> float | None:
        return float(self.weight_sum / self.pool_decisions) if self.pool_decisions else None

    @property
    def assignments_per_candidate_hour(self) -> float | None:
        if not self.candidate_hours:
            return None
        return self.assignments / self.candidate_hours

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rep": self.rep, "assignments": self.assignments,
            "by_method": {m: self.by_method.get(m, 0) for m in ("round_robin", "sticky", "fallback")},
            "pool_decisions": self.pool_decisions, "share": self.share, "weight_share": self.weight_share,
            "peak_open": self.peak_open,
        }
        if self.candidate_hours is not None:
            out.update(candidate_hours=self.candidate_hours,
                       assignments_per_candidate_hour=self.assignments_per_candidate_hour,
                       share_per_candidate_hour=self.share_per_candidate_hour)
        if self.actual_assignments is not None:
            out["actual_assignments"] = self.actual_assignments
        return out


@dataclass
class RuleFigures:
    rule: str
    assignments: int = 0
    queued: int = 0
    waits_us: list[int] = field(default_factory=list)  # of the released ones
    still_queued: int = 0
    left: int = 0

    @property
    def released(self) -> int:
        return len(self.waits_us)

    @property
    def median_wait_s(self) -> float | None:
        """Nearest rank: the ⌈n/2⌉-th smallest wait."""
        if not self.waits_us:
            return None
        ordered = sorted(self.waits_us)
        return ordered[math.ceil(len(ordered) / 2) - 1] / 1e6

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "assignments": self.assignments, "queued": self.queued,
                "released": self.released, "median_wait_s": self.median_wait_s,
                "still_queued": self.still_queued, "left": self.left}


@dataclass(frozen=True)
class ChangedOwners:
    """Leads whose first router owner in the window differs between what happened and the candidate
    (no router assignment in the window counts as an owner of its own: none)."""

    leads: int  # routed in the window by either
    other_owner: int  # routed by both, to different reps
    only_by_candidate: int  # routed by the candidate only
    not_by_candidate: int  # routed in fact, not by the candidate

    @property
    def changed(self) -> int:
        return self.other_owner + self.only_by_candidate + self.not_by_candidate

    def as_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "of": self.leads, "other_owner": self.other_owner,
                "only_by_candidate": self.only_by_candidate, "not_by_candidate": self.not_by_candidate}


@dataclass
class Tally:
    """The figures of one log over one window."""

    window: Window
    span: tuple[datetime, datetime] | None  # the instants the figures cover: the window, bounded by the log
    reps: dict[str, RepFigures]
    rules: dict[str, RuleFigures]
    decisions: Counter[str]  # assign | queue | warn | breach in the window
    first_owner: dict[UUID, str]  # each lead's first router owner in the window
    changed: ChangedOwners | None = None
    versions: list[tuple[datetime, datetime, int]] | None = None  # fairness: (from, to, version) in force

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "span": None if self.span is None else {"from": self.span[0], "to": self.span[1]},
            "decisions": {k: self.decisions.get(k, 0) for k in ("assign", "queue", "warn", "breach")},
            "reps": [self.reps[r].as_json() for r in sorted(self.reps)],
            "rules": [self.rules[r].as_json() for r in sorted(self.rules)],
        }
        if self.versions is not None:
            out["policy_versions"] = [{"version": v, "from": a, "to": b} for a, b, v in self.versions]
        if self.changed is not None:
            out["changed_owner"] = self.changed.as_json()
        return out


# ---------------------------------------------------------------------------------------------- the tally


def span_of(events: Sequence[Seen], window: Window) -> tuple[datetime, datetime] | None:
    """The window, an unbounded side replaced by the log's first event, or just after its last one."""
    if not events and (window.start is None or window.end is None):
        return None
    start = window.start if window.start is not None else min(e.occurred for e in events)
    end = window.end if window.end is not None else max(e.occurred for e in events) + _US
    return start, max(start, end)


def pool_of(policy: Policy | None, rule: str) -> tuple[tuple[str, int], ...] | None:
    if policy is None or policy.routing is None:
        return None
    return next((r.pool for r in policy.routing.rules if r.id == rule), None)


def routing_on(policy: Policy | None) -> frozenset[str]:
    if policy is None or policy.routing is None:
        return frozenset()
    return frozenset(s.value for s in policy.routing.on)


def tally(log: Iterable[Seen], window: Window, policy_of: PolicyOf, open_count: OpenCount | None,
          reps: Iterable[str] = ()) -> Tally:
    """The per-rep and per-rule figures of the router's decisions in `log` (store order) within `window`;
    waits in the queue follow each lead's events in occurred order (`_waits`).

    `policy_of` gives the policy a decision's `policy_version` names (its rule's pool, the routing
    stages of a queue); `open_count` the open leads of a rep at an instant (None: no `peak_open`);
    `reps` are listed even without a decision."""
    by_rep: dict[str, RepFigures] = {r: RepFigures(r) for r in reps}
    by_rule: dict[str, RuleFigures] = {}
    decisions: Counter[str] = Counter()
    first_owner: dict[UUID, str] = {}
    instants: set[int] = set()
    trail: dict[UUID, list[Seen]] = {}  # per lead, what starts or ends a wait in the queue (log order)
    waited: set[UUID] = set()  # the leads queued in the window

    def rep(name: str) -> RepFigures:
        found = by_rep.get(name)
        if found is None:
            found = by_rep[name] = RepFigures(name)
        return found

    def rule_of(name: str) -> RuleFigures:
        found = by_rule.get(name)
        if found is None:
            found = by_rule[name] = RuleFigures(name)
        return found

    for seen in log:
        inside = window.holds(seen.occurred)
        data = seen.data
        queued = seen.name == "LeadRoutingQueued" and seen.actor == ROUTER
        if seen.name == "LeadAssigned" or queued or "to_stage" in data:
            trail.setdefault(seen.lead, []).append(seen)
        if not inside:
            continue
        if seen.decided and seen.name in _KIND_OF:
            decisions[_KIND_OF[seen.name]] += 1
        at = to_us(seen.occurred)
        if seen.name == "LeadAssigned" and seen.actor == ROUTER and data.get("method") is not None:
            owner, rule = str(data["owner"]), str(data["rule"])
            instants.add(at)
            first_owner.setdefault(seen.lead, owner)
            winner = rep(owner)
            winner.assignments += 1
            winner.by_method[str(data["method"])] += 1
            rule_of(rule).assignments += 1
            pool = pool_of(policy_of(data.get("policy_version")), rule)
            if pool:
                total = sum(w for _, w in pool)
                for member, weight in pool:
                    figures_of = rep(member)
                    figures_of.pool_decisions += 1
                    figures_of.weight_sum += Fraction(weight, total)
                    figures_of.pool_won += member == owner
        elif queued:
            instants.add(at)
            rule_of(str(data["rule"])).queued += 1
            waited.add(seen.lead)
    for lead in waited:
        _waits(trail[lead], window, policy_of, rule_of)
    if open_count is not None:
        for figures_of in by_rep.values():
            figures_of.peak_open = max((open_count(figures_of.rep, t) for t in instants), default=0)
    return Tally(window, None, by_rep, by_rule, decisions, first_owner)


def _waits(trail: list[Seen], window: Window, policy_of: PolicyOf, rule_of: Callable[[str], RuleFigures]) -> None:
    """One lead's waits in the queue, in occurred order (a decision may be stored long after the events
    it answered, when the operator caught up late): a wait that began in the window ends with the next
    assignment (released), a stage outside the routing stages or a new queue decision (left), or not
    before the window's end (still queued)."""
    pending: tuple[RuleFigures, datetime, frozenset[str]] | None = None
    for seen in sorted(trail, key=lambda e: e.occurred):  # stable: log order among equal instants
        queued = seen.name == "LeadRoutingQueued"
        if pending is not None:
            figures, since, stages = pending
            if not window.before_end(seen.occurred):
                break
            if seen.name == "LeadAssigned":
                figures.waits_us.append(to_us(seen.occurred) - to_us(since))
                pending = None
            elif queued or seen.data.get("to_stage") not in stages:
                figures.left += 1
                pending = None
        if queued and window.holds(seen.occurred):
            pending = (rule_of(str(seen.data["rule"])), seen.occurred,
                       routing_on(policy_of(seen.data.get("policy_version"))))
    if pending is not None:
        pending[0].still_queued += 1


def changed_owners(actual: Mapping[UUID, str], candidate: Mapping[UUID, str]) -> ChangedOwners:
    leads = actual.keys() | candidate.keys()
    other = sum(1 for lead in actual.keys() & candidate.keys() if actual[lead] != candidate[lead])
    return ChangedOwners(len(leads), other, len(candidate.keys() - actual.keys()),
                         len(actual.keys() - candidate.keys()))


# ---------------------------------------------------------------------------------------------- what happened


class _NoPolicy:
    """A policy source for folding only (open leads and owners): nothing is ever decided."""

    def before(self, position: int) -> None:
        return None


def fairness(events: Sequence[Seen], versions: Sequence[InForce], window: Window) -> Tally:
    """The figures of what happened: the stored router decisions in the window, with each rep's
    candidate hours under the policy versions in force and the share per candidate hour."""
    folded = Operator(_NoPolicy())
    for seen in events:
        folded.fold(seen)
    span = span_of(events, window)
    segments = in_force(events, versions, span)
    by_version = {v.version: v.policy for v in versions}
    names: set[str] = set()
    for _, _, version in segments:
        names |= pool_reps(version.policy)
    result = tally(events, window, lambda v: by_version.get(v) if isinstance(v, int) else None,
                   folded.open_count, names)
    result.span = span
    result.versions = [(a, b, version.version) for a, b, version in segments]
    hours = candidate_hours((a, b, version.policy) for a, b, version in segments)
    for name, figures in result.reps.items():
        figures.candidate_hours = hours.get(name, 0.0)
    rates = {n: f.assignments_per_candidate_hour for n, f in result.reps.items()}
    total = sum(r for r in rates.values() if r is not None)
    for name, figures in result.reps.items():
        rate = rates[name]
        figures.share_per_candidate_hour = rate / total if rate is not None and total > 0 else None
    return result


def in_force(events: Sequence[Seen], versions: Sequence[InForce], span: tuple[datetime, datetime] | None,
             ) -> list[tuple[datetime, datetime, InForce]]:
    """The policy in force over each stretch of the span, by occurred_at: a version comes into force
    at the occurred_at of the first event stored after it was published (never before the previous
    version's start), and stays until the next one does."""
    if span is None or not versions:
        return []
    ordered = sorted(versions, key=lambda v: v.position)
    starts: list[datetime | None] = []
    index = 0
    for seen in events:  # store order: the first event after each version's position
        while index < len(ordered) and seen.position > ordered[index].position:
            starts.append(seen.occurred)
            index += 1
        if index == len(ordered):
            break
    starts.extend(None for _ in range(len(ordered) - len(starts)))  # published after the last event
    out: list[tuple[datetime, datetime, InForce]] = []
    floor = span[0]
    bounds: list[datetime] = []
    for start in starts:
        begin = max(start, floor) if start is not None else span[1]
        bounds.append(begin)
        floor = begin
    for i, version in enumerate(ordered):
        a = max(bounds[i], span[0])
        b = min(bounds[i + 1] if i + 1 < len(bounds) else span[1], span[1])
        if a < b:
            out.append((a, b, version))
    return out


def pool_reps(policy: Policy) -> set[str]:
    """Every rep named in a routing pool."""
    if policy.routing is None:
        return set()
    return {rep for rule in policy.routing.rules for rep, _ in rule.pool}


def candidate_hours(segments: Iterable[tuple[datetime, datetime, Policy]]) -> dict[str, float]:
    """Per rep: the working hours in the segments, on days the rep is not absent, while the segment's
    policy names the rep in a routing pool (capacity ignored)."""
    seconds: dict[str, float] = {}
    for a, b, policy in segments:
        periods: dict[str, list[tuple[datetime, datetime]]] = {}
        for name in sorted(pool_reps(policy)):
            found = policy.reps[name]
            calendar = policy.calendars[found.calendar]
            if found.calendar not in periods:
                periods[found.calendar] = working_periods(calendar, a, b)
            total = 0.0
            for start, end in periods[found.calendar]:
                if not found.absences:
                    total += (end - start).total_seconds()
                    continue
                cursor = start
                while cursor < end:  # piece by local date: absences are whole local days
                    day = local_date(calendar, cursor)
                    midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=calendar.zone).astimezone(UTC)
                    piece = min(end, midnight) if midnight > cursor else end
                    if not absent_on(found, day):
                        total += (piece - cursor).total_seconds()
                    cursor = piece
            seconds[name] = seconds.get(name, 0.0) + total
    return {name: s / 3600 for name, s in seconds.items()}
