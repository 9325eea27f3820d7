"""SLA compliance (docs/contract.md): every run of every SLA clock, judged from the lead timelines.

A clock of rule R is judged with the policy version in force when its start event was recorded (the
latest version whose `recorded_at` is at or before the event's), by the pure clock arithmetic of
`lifecycle.operations.sla`, as of the evaluation instant: `--as-of` if given, else `--known-at`, else
now. Clocks that started in `[from, to)` count, per rule and group (the rule itself, or the clock's
owner: at the deadline when breached, else at its end or the evaluation instant):

- started: every run; met: stopped at or before its deadline; breached: its deadline passed without a
  stop before it (stopped later or never); restarted: restarted before its deadline (at it: late); open: still
  running, deadline not passed; at_risk: open and past its warning (`warn_at` × target).
- compliance = met / (met + breached), null without either.
- p50 / p90 (nearest rank) of the accumulated time of the runs that stopped (met or late).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from lifecycle.domain.stages import OWNER_CLEARING_EVENTS, STAGE_EVENTS
from lifecycle.operations.sla import Clock, ClockEvent, clocks, event_kinds
from lifecycle.policies import PolicyTimeline, Published
from projections.base import Lead
from projections.query import Query, QueryError, Window, check
from schemas.facts import SECOND, Fact, dt_to_us, format_us, us_to_dt

BYS = ("rule", "owner")
NO_POLICY = "no policy published; publish one with `leadledger policy publish FILE`"
NO_RULES = "the published policy has no SLA rules ([[sla]] in the policy file)"

_US = timedelta(microseconds=1)


def check_sla(q: Query) -> Window:
    """The window of an sla query: `by` rule (default) or owner; `mode` does not apply (the window is
    always on the clock's start)."""
    if q.mode != "cohort":
        raise QueryError("sla takes no --mode: its window [--from, --to) is always on the clock's start")
    return check(replace(q, by=q.by or "rule"), bys=BYS)


def fact_kinds(f: Fact) -> frozenset[str]:
    """The event kinds a clock may name that `f` is."""
    return event_kinds(f.name, f.stage if f.name in STAGE_EVENTS else None)


def clock_events(facts: Sequence[Fact]) -> list[ClockEvent]:
    """The lead's events (metric order) as clocks see them, each with the owner once it is applied:
    an assignment sets it, a rejection or recycling clears it, the rest keep it."""
    out = []
    owner: str | None = None
    for f in facts:
        if f.name == "LeadAssigned":
            owner = f.owner
        elif f.name in OWNER_CLEARING_EVENTS:
            owner = None
        out.append(ClockEvent(us_to_dt(f.occurred), fact_kinds(f), owner))
    return out


@dataclass
class _Tally:
    started: int = 0
    met: int = 0
    breached: int = 0
    restarted: int = 0
    open: int = 0
    at_risk: int = 0

    def __post_init__(self) -> None:
        self.stopped: list[int] = []  # accumulated µs of the runs that stopped

    def add(self, clock: Clock, at: datetime) -> None:
        self.started += 1
        if clock.status == "met":
            self.met += 1
        elif clock.status == "breached":
            self.breached += 1
        elif clock.status == "restarted":
            self.restarted += 1
        else:
            self.open += 1
            if clock.warn_at is not None and clock.warn_at < at:
                self.at_risk += 1
        if clock.ended_by == "stop":
            self.stopped.append(clock.accumulated // _US)


def _nearest_rank(values: list[int], p50: bool) -> float | None:
    if not values:
        return None
    n = len(values)
    rank = (n + 1) // 2 if p50 else (9 * n + 9) // 10  # ceil(n/2), ceil(9n/10)
    return values[rank - 1] / SECOND


def lead_clocks(facts: Sequence[Fact], versions: PolicyTimeline, at: datetime) -> Iterable[tuple[Clock, int]]:
    """Every run of every SLA clock of one lead (facts in metric order, none after `at`), with the
    policy version that judges it: the one in force when its start event was recorded."""
    events = clock_events(facts)
    recorded = [f.recorded for f in facts]
    # (version, rule id) -> the indexes of the start events it judges
    judged: dict[tuple[int, str], set[int]] = {}
    in_force: dict[int, Published | None] = {}
    for i, event in enumerate(events):
        if not event.kinds:
            continue
        if recorded[i] not in in_force:
            in_force[recorded[i]] = versions.at_time(us_to_dt(recorded[i]))
        published = in_force[recorded[i]]
        if published is None:
            continue
        for rule in published.policy.sla:
            if rule.start in event.kinds:
                judged.setdefault((published.version, rule.id), set()).add(i)
    for (number, rule_id), starts in judged.items():
        published = versions.version(number)
        assert published is not None
        rule = next(r for r in published.policy.sla if r.id == rule_id)
        # clocks() gives one run per start event, in their order (the events are in metric order)
        runs = clocks(published.policy, rule, events, at)
        order = [i for i, e in enumerate(events) if rule.start in e.kinds]
        for i, clock in zip(order, runs, strict=True):
            if i in starts:
                yield clock, number


def compute(w: Window, timelines: Iterable[tuple[Lead, Sequence[Fact]]], policies: PolicyTimeline,
            now: datetime) -> dict[str, Any]:
    """The sla answer over every lead's facts (metric order) and the published policy versions."""
    known = [v for v in policies.versions if w.known_at is None or dt_to_us(v.recorded_at) <= w.known_at]
    versions = PolicyTimeline(known)
    at_us = w.as_of if w.as_of is not None else w.known_at if w.known_at is not None else dt_to_us(now)
    at = us_to_dt(at_us)
    tallies: dict[tuple[str, str | None], _Tally] = {}
    starts = frozenset(rule.start for v in known for rule in v.policy.sla)
    if starts:
        for _, facts in timelines:
            seen = sorted(f for f in facts
                          if f.occurred <= at_us and (w.known_at is None or f.recorded <= w.known_at))
            if not any(starts & fact_kinds(f) for f in seen):
                continue
            for clock, _ in lead_clocks(seen, versions, at):
                started = dt_to_us(clock.started_at)
                if (w.start is not None and started < w.start) or (w.end is not None and started >= w.end):
                    continue
                group = clock.sla if w.by == "rule" else clock.owner
                tallies.setdefault((clock.sla, group), _Tally()).add(clock, at)
    # the rules of the latest version are listed even without a clock, first and in their order
    listed = [rule.id for rule in known[-1].policy.sla] if known else []
    if w.by == "rule":
        for rule_id in listed:
            tallies.setdefault((rule_id, rule_id), _Tally())
    position = {rule_id: i for i, rule_id in enumerate(listed)}
    rows = []
    for (rule_id, group), t in sorted(tallies.items(), key=lambda item: (
            position.get(item[0][0], len(position)), item[0][0], item[0][1] is None, item[0][1] or "")):
        t.stopped.sort()
        judged = t.met + t.breached
        rows.append({"sla": rule_id, "group": group, "started": t.started, "met": t.met, "breached": t.breached,
                     "restarted": t.restarted, "open": t.open, "at_risk": t.at_risk,
                     "compliance": t.met / judged if judged else None,
                     "p50_seconds": _nearest_rank(t.stopped, True), "p90_seconds": _nearest_rank(t.stopped, False)})
    note = NO_POLICY if not known else NO_RULES if not starts else None
    return {"from": format_us(w.start), "to": format_us(w.end), "as_of": format_us(w.as_of),
            "known_at": format_us(w.known_at), "evaluated_at": format_us(at_us), "by": w.by,
            "policy_version": known[-1].version if known else None, "rules": rows, "note": note}
