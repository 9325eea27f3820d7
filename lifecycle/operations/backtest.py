"""Backtest a candidate policy (no IO): the window's triggers replayed through a fresh operator.

What happened before the window stands: every stored event that occurred before its start is folded
(the router's and the SLA clocks' decisions too), so owners, open leads, the queue and the round-robin
values are what they were when the window opens. Then every event that is not one of leadledger's own
decisions and occurred in the window is handled, in store order, by an operator whose policy is the
candidate — the stored decisions of the window are ignored, since the candidate decides instead, but
manual and upstream assignments are events like any other. Last, the operator's clock is moved to the
window's end (queue releases at or before it, timers before it). Its decisions are never stored.

Decisions the candidate makes at instants before the window (timers of its own SLA rules that would
have come due earlier) shape what follows but are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifecycle.operations.fairness import (
    InForce,
    RepFigures,
    Tally,
    Window,
    changed_owners,
    span_of,
    tally,
)
from lifecycle.operations.operator import Decision, Operator, Seen
from lifecycle.operations.policy import Policy

CANDIDATE_VERSION = 0  # the policy_version the candidate's decisions name
_NAMES = {"assign": "LeadAssigned", "queue": "LeadRoutingQueued", "warn": "LeadSLAWarned",
          "breach": "LeadSLABreached"}


@dataclass(frozen=True)
class Candidate:
    """The candidate as the operator reads a published version."""

    policy: Policy
    version: int = CANDIDATE_VERSION


class _Always:
    """The candidate is in force for every trigger."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate

    def before(self, position: int) -> Candidate:
        return self.candidate


def _as_seen(decision: Decision, position: int) -> Seen:
    name = _NAMES[decision.kind]
    actor = "router" if decision.kind in ("assign", "queue") else "sla"
    return Seen(position, decision.lead, 0, name, decision.occurred_at, actor, "", dict(decision.fields))


def replay(events: Sequence[Seen], policy: Policy, window: Window) -> tuple[list[Seen], Operator]:
    """The log as it would have been: the window's triggers with the candidate's decisions in between
    (each where it was decided), and the operator that decided them."""
    operator = Operator(_Always(Candidate(policy)))
    start = window.start
    if start is not None:
        for seen in events:
            if seen.occurred < start:
                operator.fold(seen)
    log: list[Seen] = []
    for seen in events:
        if seen.decided or not window.holds(seen.occurred):
            continue
        log.extend(_as_seen(d, seen.position) for d in operator.tick(seen.occurred))  # due before it
        log.append(seen)
        log.extend(_as_seen(d, seen.position) for d in operator.handle(seen))  # what it triggers
    span = span_of(events, window)
    if span is not None:
        log.extend(_as_seen(d, operator.position) for d in operator.tick(span[1]))
    return log, operator


def backtest(events: Sequence[Seen], policy: Policy, window: Window, versions: Sequence[InForce]) -> Tally:
    """The candidate's figures over the window, each rep's actual assignments beside them, and the leads
    whose first router owner in the window would change. `events` are the stored ones in store order;
    `versions` the published policy versions (for what happened)."""
    log, operator = replay(events, policy, window)
    candidate_reps = set(policy.reps)
    result = tally(log, window, lambda _: policy, operator.open_count, candidate_reps)
    result.span = span_of(events, window)
    by_version = {v.version: v.policy for v in versions}
    actual = tally(events, window, lambda v: by_version.get(v) if isinstance(v, int) else None, None)
    for name, figures in actual.reps.items():
        if name not in result.reps and figures.assignments:
            result.reps[name] = RepFigures(name)
    for name, figures in result.reps.items():
        found = actual.reps.get(name)
        figures.actual_assignments = found.assignments if found is not None else 0
    result.changed = changed_owners(actual.first_owner, result.first_owner)
    return result
