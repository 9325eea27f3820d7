"""The router as pure functions (docs/operations.md): rule, candidates, account stickiness, smooth weighted round robin.

The caller gives what holds at the decision instant (each rep's open leads, the rules' round-robin
`current` values, a breaching owner to exclude); the same inputs always give the same decision.
`route` and `release_instant` take each rep's open leads as their account keys; `route_loads` and
`release_after` are the same decisions from counts (a rep's open leads, and those of the lead's own
account), which is all they look at: the operator keeps counts, never lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, TypeAlias

from lifecycle.operations.calendars import (
    absence_end,
    absent_on,
    as_utc,
    is_working,
    local_state,
    next_change,
)
from lifecycle.operations.policy import Policy, RoutingRule, matches

ExclusionReason: TypeAlias = Literal["absent", "outside_hours", "at_capacity", "breached"]
Method: TypeAlias = Literal["round_robin", "sticky", "fallback"]
RELEASE_HORIZON = timedelta(days=366)  # how far `release_instant` looks before giving up


@dataclass(frozen=True)
class Candidate:
    """A pool rep who could take the lead; `current_before` is their value before this decision adds
    their weight, `open` their open leads before this assignment."""

    rep: str
    weight: int
    current_before: int
    open: int
    capacity: int | None


@dataclass(frozen=True)
class Exclusion:
    """A pool rep who could not; one reason, the first that applies in the order breached, absent,
    outside_hours, at_capacity."""

    rep: str
    reason: ExclusionReason


@dataclass(frozen=True)
class Assigned:
    """`LeadAssigned` to be: `method` says how the owner was chosen, and whether round robin moved."""

    rep: str
    rule: str
    method: Method
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]


@dataclass(frozen=True)
class Queued:
    """`LeadRoutingQueued` to be: no candidate, `fallback = "queue"`."""

    rule: str
    excluded: tuple[Exclusion, ...]


Decision: TypeAlias = Assigned | Queued
OpenLeads: TypeAlias = Mapping[str, Sequence[str | None]]  # rep → account keys of their open leads
Currents: TypeAlias = Mapping[str, Mapping[str, int]]  # rule id → rep → current


def select_rule(policy: Policy, attributes: Mapping[str, object]) -> RoutingRule | None:
    """The first rule whose `when` matches (a rule without `when` matches every lead)."""
    if policy.routing is None:
        return None
    for rule in policy.routing.rules:
        if matches(rule.when, attributes):
            return rule
    return None


def route(policy: Policy, attributes: Mapping[str, object], at: datetime, open_leads: OpenLeads,
          currents: Currents, *, exclude: str | None = None) -> Decision | None:
    """Decide the owner of a lead at `at`; None when no rule matches (nothing to record).

    `exclude` is the breaching owner of a reassignment (reason `breached`). A rep fallback assigns that
    rep whatever their hours, absences or load — unless it is the excluded owner, then the lead queues.
    """
    at = as_utc(at)
    rule = select_rule(policy, attributes)
    if rule is None:
        return None
    account = attributes.get("account_key")
    loads = {rep: len(keys) for rep, keys in open_leads.items()}
    same = {rep: sum(1 for k in keys if k == account) for rep, keys in open_leads.items()}
    return route_loads(policy, rule, account, at, loads, same, currents, exclude=exclude)


def route_loads(policy: Policy, rule: RoutingRule, account: object, at: datetime, loads: Mapping[str, int],
                same_account: Mapping[str, int], currents: Currents, *, exclude: str | None = None) -> Decision:
    """`route` for a lead of `rule` (its selected rule) whose `account_key` is `account`, from counts:
    `loads` the open leads each rep holds, `same_account` how many of them are of that account."""
    at = as_utc(at)
    state = currents.get(rule.id, {})
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    local: dict[str, tuple[date, bool]] = {}  # per calendar: reps share a few calendars
    for rep, weight in rule.pool:
        held = loads.get(rep, 0)
        reason = _exclusion(policy, rep, at, held, exclude, local)
        if reason is None:
            candidates.append(Candidate(rep, weight, state.get(rep, 0), held, policy.reps[rep].capacity))
        else:
            excluded.append(Exclusion(rep, reason))
    if not candidates:
        if rule.fallback is not None and rule.fallback != exclude:
            return Assigned(rule.fallback, rule.id, "fallback", (), tuple(excluded))
        return Queued(rule.id, tuple(excluded))
    if rule.sticky == "account" and isinstance(account, str) and account:
        # the candidate holding most of the account's open leads; `max` keeps the first, the smallest rep id
        keeper = max(candidates, key=lambda c: same_account.get(c.rep, 0))
        if same_account.get(keeper.rep, 0) > 0:
            return Assigned(keeper.rep, rule.id, "sticky", tuple(candidates), tuple(excluded))
    winner = min(candidates, key=lambda c: (-(c.current_before + c.weight), c.rep))
    return Assigned(winner.rep, rule.id, "round_robin", tuple(candidates), tuple(excluded))


def _exclusion(policy: Policy, rep: str, at: datetime, held: int, exclude: str | None,
               local: dict[str, tuple[date, bool]]) -> ExclusionReason | None:
    if rep == exclude:
        return "breached"
    found = policy.reps[rep]
    state = local.get(found.calendar)
    if state is None:
        state = local[found.calendar] = local_state(policy.calendars[found.calendar], at)
    day, working = state
    if absent_on(found, day):
        return "absent"
    if not working:
        return "outside_hours"
    if found.capacity is not None and held >= found.capacity:
        return "at_capacity"
    return None


def advance(currents: Mapping[str, int], decision: Assigned) -> dict[str, int]:
    """One rule's `current` values after a decision of that rule: each candidate grows by its weight and
    the winner shrinks by the candidates' total weight; sticky and fallback decisions change nothing,
    nor are non-candidates touched (a rep back from an absence gets no backlog)."""
    after = dict(currents)
    if decision.method != "round_robin":
        return after
    total = sum(c.weight for c in decision.candidates)
    for c in decision.candidates:
        after[c.rep] = after.get(c.rep, 0) + c.weight
    after[decision.rep] = after.get(decision.rep, 0) - total
    return after


def fold_currents(decisions: Iterable[Assigned]) -> dict[str, dict[str, int]]:
    """Every rule's `current` values from its past decisions, in decision order (all start at 0)."""
    state: dict[str, dict[str, int]] = {}
    for decision in decisions:
        state[decision.rule] = advance(state.get(decision.rule, {}), decision)
    return state


def release_instant(policy: Policy, attributes: Mapping[str, object], after: datetime, open_leads: OpenLeads,
                    *, exclude: str | None = None, horizon: timedelta = RELEASE_HORIZON) -> datetime | None:
    """The first instant ≥ `after` at which the lead's rule has a candidate, with the open leads held
    fixed (a lead leaving an open stage is an event: ask again after it); None when there is none within
    `horizon`, or no rule matches. A rep at capacity stays so until such an event."""
    rule = select_rule(policy, attributes)
    if rule is None:
        return None
    return release_after(policy, rule, after, {rep: len(keys) for rep, keys in open_leads.items()},
                         exclude=exclude, horizon=horizon)


def release_after(policy: Policy, rule: RoutingRule, after: datetime, loads: Mapping[str, int], *,
                  exclude: str | None = None, horizon: timedelta = RELEASE_HORIZON) -> datetime | None:
    """`release_instant` for a lead of `rule`, from each rep's count of open leads (`loads`): a function
    of (rule, exclude, after, the pool's loads) alone, which the operator relies on to share it."""
    after = as_utc(after)
    if rule.fallback is not None and rule.fallback != exclude:
        return after
    limit = after + horizon
    best: datetime | None = None
    # reps share a few calendars: the next working start from an instant is looked up once per calendar
    opening: dict[tuple[str, datetime], datetime | None] = {}
    for rep, _ in rule.pool:
        found = policy.reps[rep]
        if rep == exclude or (found.capacity is not None and loads.get(rep, 0) >= found.capacity):
            continue
        calendar = policy.calendars[found.calendar]
        x: datetime | None = after
        while x is not None and x <= limit and (best is None or x < best):
            back = absence_end(found, calendar, x)
            if back is not None:
                x = back
                continue
            key = (found.calendar, x)
            if key not in opening:
                opening[key] = x if is_working(calendar, x) else next_change(calendar, x, limit=limit - x)
            if opening[key] == x:
                best = x
                break
            x = opening[key]
    return best
