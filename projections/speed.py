"""Speed to lead: for each assignment, the time to the lead's first contact after it, docs/contract.md

An assignment row is owned by the assignment; a response row is owned by the
first contact after the lead's latest assignment (a reassignment before any
contact leaves the earlier assignment without a response row: uncontacted).

The response time is the human delay (assignment → contact). The system delay is
the wait of an ownerless lead for its assignment: from its capture, or from its
entry into a routing stage (`[routing] on`) when a policy with routing is in force,
to the first assignment after it. Which start applies depends on the policy in force
when the start was recorded, so the fold keeps every candidate (a wait row per
ownerless stage entry since the previous assignment) and the query picks, per
assignment, the latest candidate the policy timeline admits.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lifecycle.domain.stages import OWNER_CLEARING_EVENTS, STAGE_EVENTS
from lifecycle.policies import Published
from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.funnel import group_column, in_range, visible
from projections.query import Window
from schemas.facts import SECOND, Fact, dt_to_us, format_us

WITHIN_US = 300 * SECOND  # "within 5 minutes" is <= 300 s
CAPTURED = "captured"  # the start stage of a wait from the capture (only the capture enters `captured`)

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
#: the routing stages in force from a recorded instant on, None when that policy has no [routing] (or
#: before the first version): (from µs, stages), sorted by instant
RoutingTimeline = Sequence[tuple[int, frozenset[str] | None]]

ASSIGNMENTS = Table(
    "rm_speed_assignments",
    (("lead_no", "int"), ("version", "int"), ("owner", "text"), ("assigned_at", "int"), ("captured_at", "int"),
     ("channel", "text"), ("campaign", "text"), ("recorded_at", "int")),
    key=("lead_no", "version"),
    indexes=(("owner", "assigned_at", "captured_at"), ("channel", "assigned_at", "captured_at"),
             ("campaign", "assigned_at", "captured_at")),
)
RESPONSES = Table(
    "rm_speed_responses",
    (("lead_no", "int"), ("version", "int"), ("owner", "text"), ("assigned_at", "int"), ("contacted_at", "int"),
     ("response_us", "int"), ("captured_at", "int"), ("channel", "text"), ("campaign", "text"),
     ("recorded_at", "int")),  # recorded_at: the contact's
    key=("lead_no", "version"),  # version of the assignment answered
    indexes=(("response_us", "contacted_at", "assigned_at", "captured_at"),
             *((g, "response_us", "contacted_at", "assigned_at", "captured_at") for g in ("owner", "channel", "campaign"))),
)
WAITS = Table(
    "rm_speed_waits",
    (("lead_no", "int"), ("version", "int"), ("start_version", "int"), ("owner", "text"), ("assigned_at", "int"),
     ("start_at", "int"), ("start_recorded", "int"), ("start_stage", "text"), ("wait_us", "int"),
     ("captured_at", "int"), ("channel", "text"), ("campaign", "text"), ("recorded_at", "int")),
    key=("lead_no", "version", "start_version"),  # the assignment, and the ownerless stage entry it ends
    indexes=(("start_stage", "wait_us", "assigned_at", "captured_at"),
             *((g, "start_stage", "wait_us", "assigned_at", "captured_at") for g in ("owner", "channel", "campaign"))),
)


#: The leads whose rows cut at the recording time are not their rows known then (not `known_in_order`):
#: --known-at re-derives theirs from their timelines. Each row's recorded_at is its own event's (the
#: assignment's; a response's, the contact's).
LATE = Table("rm_speed_late", (("lead_no", "int"),), key=("lead_no",))


class Speed(AppendProjection):
    name = "speed"
    version = 3  # 2: the waits (system delay); 3: recorded_at and the late leads
    handles = STAGE_EVENTS | frozenset({"LeadAssigned", "LeadContacted"})
    tables = (ASSIGNMENTS, RESPONSES, WAITS, LATE)
    late = LATE

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        cap_at = capture.occurred if capture else None
        channel = capture.channel if capture else None
        campaign = campaign_key(capture.campaign) if capture else None
        if f.name == "LeadAssigned":
            yield ASSIGNMENTS.name, (lead.lead_no, f.version, f.owner, f.occurred, cap_at, channel, campaign,
                                     f.recorded)
            for start in _ownerless_entries(facts, i):
                yield WAITS.name, (lead.lead_no, f.version, start.version, f.owner, f.occurred, start.occurred,
                                   start.recorded, start.stage, f.occurred - start.occurred, cap_at, channel,
                                   campaign, f.recorded)
        elif f.name == "LeadContacted":
            for j in range(i - 1, -1, -1):
                prev = facts[j]
                if prev.name == "LeadContacted":
                    return  # the latest assignment was answered already
                if prev.name == "LeadAssigned":
                    yield RESPONSES.name, (lead.lead_no, prev.version, prev.owner, prev.occurred, f.occurred,
                                           f.occurred - prev.occurred, cap_at, channel, campaign, f.recorded)
                    return


def _ownerless_entries(facts: Sequence[Fact], i: int) -> list[Fact]:
    """The stage entries since the assignment before `facts[i]` that left the lead without an owner:
    the waits assignment i may end (the capture among them only when it is the lead's first)."""
    first = i
    while first > 0 and facts[first - 1].name != "LeadAssigned":
        first -= 1
    owned = first > 0  # the previous assignment gave the lead an owner
    found = []
    for f in facts[first:i]:
        if f.name in OWNER_CLEARING_EVENTS:
            owned = False
        elif f.name == "LeadAcceptedBySales" and f.owner:
            owned = True
        if f.stage is not None and f.name in STAGE_EVENTS and not owned:
            found.append(f)
    return found


def routing_timeline(versions: Sequence[Published]) -> list[tuple[int, frozenset[str] | None]]:
    """(recorded µs, routing stages or None) of each policy version, for `compute`."""
    out: list[tuple[int, frozenset[str] | None]] = []
    for v in versions:
        routing = v.policy.routing
        out.append((dt_to_us(v.recorded_at), None if routing is None else frozenset(s.value for s in routing.on)))
    return out


def _where(w: Window, time_col: str) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    visible(w, time_col, conds, params)
    in_range("captured_at" if w.mode == "cohort" else "assigned_at", w, conds, params)
    return " AND ".join(conds), params


def _ranked(query: Query, w: Window, table: str, column: str, where: str, params: list[Any],
            counts: Iterable[tuple[Any, int]]) -> dict[Any, tuple[int | None, int | None]]:
    """p50 and p90 (nearest rank: ⌈n/2⌉, ⌈9n/10⌉) of `column` per group, each read at its rank along
    the (group, …, column) index from the nearer end."""
    g = group_column(w.by)
    same_group = "" if w.by is None else f"{g} = ? AND "
    pick = f"SELECT {column} FROM {table} WHERE {same_group}{where} ORDER BY {column} {{}} LIMIT 1 OFFSET ?"
    out: dict[Any, tuple[int | None, int | None]] = {}
    for key, n in counts:
        if n == 0:
            continue
        head = [] if w.by is None else [key]
        values = []
        for rank in ((n + 1) // 2, (9 * n + 9) // 10):  # ceil(n/2), ceil(9n/10)
            if rank - 1 <= n - rank:
                values.append(int(query(pick.format("ASC"), [*head, *params, rank - 1])[0][0]))
            else:
                values.append(int(query(pick.format("DESC"), [*head, *params, n - rank])[0][0]))
        out[None if w.by is None else key] = (values[0], values[1])
    return out


def _nearest_ranks(values: list[int]) -> tuple[int | None, int | None]:
    if not values:
        return None, None
    values.sort()
    n = len(values)
    return values[(n + 1) // 2 - 1], values[(9 * n + 9) // 10 - 1]


def _system_delays(w: Window, waits: str, query: Query,
                   routing: RoutingTimeline) -> dict[Any, tuple[int, int | None, int | None]]:
    """Per group: (waits ended, p50, p90) of the system delay."""
    g = group_column(w.by)
    group_by = "" if w.by is None else f" GROUP BY {g}"
    where, params = _where(w, "assigned_at")
    if all(stages is None for _, stages in routing):
        # no policy ever routed: every wait starts at the capture, one row per assignment at most
        where = f"start_stage = ? AND {where}"
        params = [CAPTURED, *params]
        counts = [(None if w.by is None else k, int(n)) for k, n in query(
            f"SELECT {g} AS k, COUNT(*) FROM {waits} WHERE {where}{group_by}", params)]
        ranks = _ranked(query, w, waits, "wait_us", where, params, counts)
        return {k: (n, *ranks[k]) for k, n in counts if n}
    instants = [at for at, _ in routing]
    chosen: dict[tuple[int, int], tuple[Any, int, int]] = {}  # assignment -> (group, start_at, wait)
    for key, lead_no, version, start_at, recorded, stage, wait in query(
            f"SELECT {g} AS k, lead_no, version, start_at, start_recorded, start_stage, wait_us FROM {waits} "
            f"WHERE {where}", params):
        index = bisect_right(instants, int(recorded))
        stages = routing[index - 1][1] if index else None
        if stage not in (stages if stages is not None else (CAPTURED,)):
            continue
        best = chosen.get((lead_no, version))
        if best is None or int(start_at) > best[1]:  # the latest admitted start
            chosen[(lead_no, version)] = (None if w.by is None else key, int(start_at), int(wait))
    per_group: dict[Any, list[int]] = {}
    for key, _, wait in chosen.values():
        per_group.setdefault(key, []).append(wait)
    return {k: (len(v), *_nearest_ranks(v)) for k, v in per_group.items()}


def _delay(n: int, p50: int | None, p90: int | None) -> dict[str, Any]:
    return {"count": n, "p50_s": None if p50 is None else p50 / SECOND, "p90_s": None if p90 is None else p90 / SECOND}


def compute(w: Window, assignments: str, responses: str, query: Query, waits: str | None = None,
            routing: RoutingTimeline = ()) -> dict[str, Any]:
    """Counts by grouped index scans; p50/p90 read at their rank along the (group, response) index.

    With `waits`, each group also splits the system delay (capture or routing-stage entry →
    assignment, under the `routing` in force when the start was recorded) from the human delay
    (assignment → first contact: the response times)."""
    g = group_column(w.by)
    group_by = "" if w.by is None else f" GROUP BY {g}"
    where, params = _where(w, "assigned_at")
    assigned = {None if w.by is None else k: int(n) for k, n in query(
        f"SELECT {g} AS k, COUNT(*) FROM {assignments} WHERE {where}{group_by}", params)}
    where, params = _where(w, "contacted_at")
    answered = [(None if w.by is None else key, int(count), int(within or 0)) for key, count, within in query(
        f"SELECT {g} AS k, COUNT(*), SUM(CASE WHEN response_us <= {WITHIN_US} THEN 1 ELSE 0 END) "
        f"FROM {responses} WHERE {where}{group_by}", params)]
    ranks = _ranked(query, w, responses, "response_us", where, params, ((k, n) for k, n, _ in answered))
    stats = {k: (n, within, *ranks[k]) for k, n, within in answered if n}
    system = _system_delays(w, waits, query, routing) if waits is not None else {}
    keys = set(assigned) | set(stats) | set(system)
    if w.by is None:
        keys.add(None)
    groups = []
    for k in sorted(keys, key=lambda k: (k is None, k or "")):
        n, within, p50, p90 = stats.get(k, (0, 0, None, None))
        group = {"key": k, "assignments": assigned.get(k, 0), "contacted": n, "within_5m": within,
                 "p50_s": None if p50 is None else p50 / SECOND,
                 "p90_s": None if p90 is None else p90 / SECOND}
        if waits is not None:
            group["system_delay"] = _delay(*system.get(k, (0, None, None)))
            group["human_delay"] = _delay(n, p50, p90)
        groups.append(group)
    return {"by": w.by, "as_of": format_us(w.as_of), "groups": groups}
