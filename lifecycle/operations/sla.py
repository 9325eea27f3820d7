"""SLA clocks as pure functions of one lead's history: start, restart, stop, warning, deadline.

A business clock counts the working time of the rule's calendar, else of the owner's calendar at each
instant; with neither (no owner yet, or an owner the policy does not know) it counts 24x7, so a clock
about routing itself still runs out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from lifecycle.operations.calendars import add_business, as_utc, business_between
from lifecycle.operations.policy import Calendar, Policy, SlaRule

ClockStatus: TypeAlias = Literal["open", "met", "breached", "restarted"]
_US = timedelta(microseconds=1)


#: what a non-stage event is to a clock (docs/operations.md); a stage event is also the stage it enters
NAME_KINDS = {
    "LeadCaptured": "captured", "LeadRejectedBySales": "rejected", "LeadTouched": "touched",
    "LeadScored": "scored", "LeadAssigned": "assigned", "LeadContacted": "contacted",
    "LeadRoutingQueued": "queued", "LeadConsentGiven": "consent_given",
    "LeadConsentWithdrawn": "consent_withdrawn", "LeadPersonalDataErased": "erased",
}


def event_kinds(name: str, stage: str | None) -> frozenset[str]:
    """The kinds a clock's `start` / `stop` may name that an event is: the stage it enters, and its own."""
    kind = NAME_KINDS.get(name)
    found = {stage} if stage is not None else set()
    if kind is not None:
        found.add(kind)
    return frozenset(found)


@dataclass(frozen=True)
class ClockEvent:
    """One event of the lead as a clock sees it: when it occurred, its kinds (`assigned`, `contacted`,
    the stage it enters: `mql`, `sal`, …) and the lead's owner once it is applied (None: no owner)."""

    at: datetime
    kinds: frozenset[str]
    owner: str | None


@dataclass(frozen=True)
class Clock:
    """One run of a rule's clock, as of the instant it was computed for.

    `deadline` and `warn_at` are projected from the owners known so far (a later owner change can move a
    future deadline). `ended_at` is the first stop, or the start that restarted it. A stop at exactly the
    deadline is met; `status` is `breached` once the deadline is strictly passed without a stop, and
    `restarted` for a clock restarted before its deadline (a restart at the deadline instant is late:
    breached, like the breach's own reassignment there). `owner` is the owner at the deadline when
    breached, else at the end (or the as-of instant); `owners` are the (from, owner) changes during the
    run. `accumulated` is the counted time up to the end; for a run still running at the as-of instant,
    up to that instant but at most up to the deadline (a run already past it has counted its target;
    counting on to a far as-of instant would walk the calendar day by day for nothing).
    """

    sla: str
    started_at: datetime
    warn_at: datetime | None
    deadline: datetime
    ended_at: datetime | None
    ended_by: Literal["stop", "restart"] | None
    accumulated: timedelta
    owner: str | None
    status: ClockStatus
    owners: tuple[tuple[datetime, str | None], ...]


@dataclass(frozen=True)
class Timer:
    """A `LeadSLAWarned` / `LeadSLABreached` that is due, occurring at `at`."""

    sla: str
    kind: Literal["warned", "breached"]
    at: datetime
    started_at: datetime
    deadline: datetime
    owner: str | None


def clocks(policy: Policy, rule: SlaRule, events: Iterable[ClockEvent], as_of: datetime) -> tuple[Clock, ...]:
    """Every run of `rule`'s clock over the lead's events that occurred at or before `as_of`.

    Events are taken by `occurred_at` (the sort is stable: give them in store order). An event of a stop
    kind ends the open clock; an event of the start kind starts one, restarting an open clock. Instants
    come back in UTC.
    """
    as_of = as_utc(as_of)
    utc_events = (ClockEvent(as_utc(e.at), e.kinds, e.owner) for e in events)
    evs = sorted((e for e in utc_events if e.at <= as_of), key=lambda e: e.at)
    return tuple(_clock(policy, rule, evs, start, end, by, as_of) for start, end, by in _spans(rule, evs))


def clock_at(policy: Policy, rule: SlaRule, events: Iterable[ClockEvent], as_of: datetime) -> Clock | None:
    """The latest run of `rule`'s clock as of `as_of`, None if it never started."""
    found = clocks(policy, rule, events, as_of)
    return found[-1] if found else None


def timers(policy: Policy, rule: SlaRule, events: Iterable[ClockEvent], before: datetime) -> tuple[Timer, ...]:
    """The warnings and breaches due strictly before `before`, in instant order.

    A timer at τ fires unless its clock ended (stop or restart) at or before τ: the operator handles the
    events at τ before it fires the timers of τ, so a stop at exactly the deadline is met.
    """
    out: list[Timer] = []
    before = as_utc(before)
    for clock in clocks(policy, rule, events, before):
        due: list[tuple[Literal["warned", "breached"], datetime]] = [("breached", clock.deadline)]
        if clock.warn_at is not None:
            due.insert(0, ("warned", clock.warn_at))
        for kind, at in due:
            if at < before and (clock.ended_at is None or clock.ended_at > at or (
                    clock.ended_at == at and clock.ended_by == "restart")):  # a restart at the instant is late
                owner = _owner_at(clock.owners, at)
                out.append(Timer(rule.id, kind, at, clock.started_at, clock.deadline, owner))
    out.sort(key=lambda t: t.at)
    return tuple(out)


@dataclass(frozen=True)
class Run:
    """One run of a rule's clock without its accumulated time: what the operator arms timers from."""

    started_at: datetime
    warn_at: datetime | None
    deadline: datetime
    ended_at: datetime | None
    owners: tuple[tuple[datetime, str | None], ...]
    ended_by: Literal["stop", "restart"] | None = None
    start_index: int = -1  # the index of its start event in the events it was computed from


#: what `runs` remembers of runs computed before: (rule, start, end, how it ended, owners during it) → Run
RunCache: TypeAlias = dict[tuple[object, ...], "Run"]


def runs(policy: Policy, rule: SlaRule, events: Sequence[ClockEvent], cache: RunCache | None = None,
         ) -> tuple[Run, ...]:
    """Every run of `rule`'s clock over the lead's events (UTC, sorted by `at`, stably): start, warning,
    deadline, end — as `clocks` computes them, without counting accumulated time up to an as-of instant.

    With `cache` (one per lead and policy version), a run whose start, end and owners are unchanged since
    it was last computed is not computed again: a lead's runs are asked for at every one of its events."""
    if cache is None:
        return tuple(_run(policy, rule, events, start, end, by) for start, end, by in _spans(rule, events))
    out = []
    for start, end, by in _spans(rule, events):
        owners: list[object] = [events[start].owner]
        previous = events[start].owner
        for event in events[start + 1:end]:
            if event.owner != previous:
                owners.append((event.at, event.owner))
                previous = event.owner
        key = (rule.id, events[start].at, events[end].at if end is not None else None, by, tuple(owners))
        found = cache.get(key)
        if found is None:
            found = cache[key] = _run(policy, rule, events, start, end, by)
        out.append(found if found.start_index == start else replace(found, start_index=start))
    return tuple(out)


def owner_at(segments: Segments, at: datetime) -> str | None:
    """The owner of a run's (from, owner) changes at `at`."""
    return _owner_at(segments, at)


# ---------------------------------------------------------------------------------------------- internals


Segments: TypeAlias = Sequence[tuple[datetime, str | None]]  # (from, owner), the last one open-ended


def _spans(rule: SlaRule, evs: Sequence[ClockEvent]) -> list[tuple[int, int | None, Literal["stop", "restart"] | None]]:
    """(start index, end index or None, how it ended) of each run: a stop ends the open clock, a start
    starts one, restarting an open clock."""
    spans: list[tuple[int, int | None, Literal["stop", "restart"] | None]] = []
    open_at: int | None = None
    for i, event in enumerate(evs):
        if open_at is not None and event.kinds & rule.stop:
            spans.append((open_at, i, "stop"))
            open_at = None
        if rule.start in event.kinds:
            if open_at is not None:
                spans.append((open_at, i, "restart"))
            open_at = i
    if open_at is not None:
        spans.append((open_at, None, None))
    return spans


def _run(policy: Policy, rule: SlaRule, evs: Sequence[ClockEvent], start: int, end: int | None,
         by: Literal["stop", "restart"] | None = None) -> Run:
    started = evs[start].at
    segments = [(started, evs[start].owner)]
    for event in evs[start + 1:end]:
        if event.owner != segments[-1][1]:
            segments.append((event.at, event.owner))
    deadline = _reach(policy, rule, segments, rule.target)
    warn_at = None
    if rule.warn_at is not None:
        warn_at = _reach(policy, rule, segments, timedelta(microseconds=round(rule.target / _US * rule.warn_at)))
    return Run(started, warn_at, deadline, evs[end].at if end is not None else None, tuple(segments), by, start)


def _clock(policy: Policy, rule: SlaRule, evs: Sequence[ClockEvent], start: int, end: int | None,
           by: Literal["stop", "restart"] | None, as_of: datetime) -> Clock:
    run = _run(policy, rule, evs, start, end)
    deadline, segments = run.deadline, run.owners
    horizon = run.ended_at if run.ended_at is not None else as_of
    status: ClockStatus
    if deadline < horizon or (by == "restart" and deadline == horizon):
        # a restart at the deadline instant is late: the breach's own reassignment restarts it there
        status = "breached"
    elif by == "stop":
        status = "met"
    elif by == "restart":
        status = "restarted"
    else:
        status = "open"
    owner = _owner_at(segments, min(deadline, horizon))
    return Clock(rule.id, run.started_at, run.warn_at, deadline, run.ended_at, by,
                 _accumulated(policy, rule, segments, horizon if run.ended_at is not None else min(horizon, deadline)),
                 owner, status, segments)


def _counting(policy: Policy, rule: SlaRule, owner: str | None) -> Calendar | None:
    """The calendar whose working time this clock counts, None for 24x7."""
    if rule.clock == "calendar":
        return None
    if rule.calendar is not None:
        return policy.calendars[rule.calendar]
    return policy.calendar_of(owner) if owner is not None else None


def _reach(policy: Policy, rule: SlaRule, segments: Segments, amount: timedelta) -> datetime:
    """The instant the counted time since the clock's start reaches `amount`."""
    remaining = amount
    for i, (since, owner) in enumerate(segments):
        calendar = _counting(policy, rule, owner)
        until = segments[i + 1][0] if i + 1 < len(segments) else None
        if until is not None:
            available = until - since if calendar is None else business_between(calendar, since, until)
            if available < remaining:
                remaining -= available
                continue
        return since + remaining if calendar is None else add_business(calendar, since, remaining)
    raise AssertionError("unreachable: the last segment is open-ended")


def _accumulated(policy: Policy, rule: SlaRule, segments: Segments, upto: datetime) -> timedelta:
    total = timedelta(0)
    for i, (since, owner) in enumerate(segments):
        if since >= upto:
            break
        until = min(segments[i + 1][0], upto) if i + 1 < len(segments) else upto
        calendar = _counting(policy, rule, owner)
        total += until - since if calendar is None else business_between(calendar, since, until)
    return total


def _owner_at(segments: Segments, at: datetime) -> str | None:
    owner = segments[0][1]
    for since, who in segments:
        if since > at:
            break
        owner = who
    return owner
