"""Routing fairness and backtests over hand-built logs: a two-rep policy, five leads, numbers by hand.

The story (Monday 2026-03-02 and Tuesday, office hours 09:00-17:00 UTC, jonas absent on Tuesday;
pool maria = 2, jonas = 1, smooth weighted round robin; the policy in force from L0's capture, Mon 08:00):

- L1 mql Mon 10:00 → maria (2 vs 1); accepted at 10:05 (stays open in sal)
- L2 mql Mon 10:30 → jonas (1 vs 2)
- L3 mql Mon 11:00 → maria (3 vs 0); disqualified at 12:00
- L4 mql Mon 18:00 → queued (both outside hours) → released Tue 09:00 to maria (jonas absent): waited 15 h
- L5 mql Tue 20:00 → queued; the next candidate is Wed 09:00, after the window [Mon, Wed)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import pytest

from lifecycle.operations.backtest import backtest, replay
from lifecycle.operations.fairness import InForce, Window, fairness, tally
from lifecycle.operations.operator import Seen, to_us
from lifecycle.operations.policy import parse_policy

POLICY_TEXT = """
[calendars.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
[reps.maria]
calendar = "office"
[reps.jonas]
calendar = "office"
absences = [{ from = "2026-03-03", to = "2026-03-04" }]
[routing]
on = ["mql"]
[[routing.rules]]
id = "all"
pool = { maria = 2, jonas = 1 }
"""
POLICY = parse_policy(POLICY_TEXT)
#: a candidate: equal weights, and a fallback owner instead of the queue
EVEN = parse_policy(POLICY_TEXT.replace("pool = { maria = 2, jonas = 1 }",
                                        'pool = { maria = 1, jonas = 1 }\nfallback = "maria"'))
VERSIONS = [InForce(1, 0, POLICY)]

MON = datetime(2026, 3, 2, tzinfo=UTC)
TUE = MON + timedelta(days=1)
WED = MON + timedelta(days=2)
WINDOW = Window(MON, WED)
L0, L1, L2, L3, L4, L5, L6 = (uuid5(UUID(int=0), f"lead-{n}") for n in range(7))


class Log:
    """Seen events in store order: positions 1, 2, …; each lead's versions 1, 2, …"""

    def __init__(self) -> None:
        self.events: list[Seen] = []
        self.versions: dict[UUID, int] = {}

    def add(self, lead: UUID, name: str, at: datetime, actor: str = "web-forms", **data: Any) -> None:
        self.versions[lead] = self.versions.get(lead, 0) + 1
        self.events.append(Seen(len(self.events) + 1, lead, self.versions[lead], name, at, actor,
                                f"e{len(self.events) + 1}", data))

    def capture(self, lead: UUID, at: datetime) -> None:
        self.add(lead, "LeadCaptured", at, channel="web", attributes={}, from_stage=None, to_stage="captured")

    def mql(self, lead: UUID, at: datetime) -> None:
        self.add(lead, "LeadQualifiedAsMQL", at, from_stage="captured", to_stage="mql", score=None,
                 override=True, reason="x")

    def routed(self, lead: UUID, at: datetime, owner: str, candidates: list[tuple[str, int, int]],
               excluded: tuple[tuple[str, str], ...] = ()) -> None:
        self.add(lead, "LeadAssigned", at, "router", owner=owner, rule="all", method="round_robin",
                 policy_version=1,
                 candidates=[{"rep": r, "weight": w, "current_before": c, "open": 0, "capacity": None}
                             for r, w, c in candidates],
                 excluded=[{"rep": r, "reason": why} for r, why in excluded])

    def queued(self, lead: UUID, at: datetime) -> None:
        self.add(lead, "LeadRoutingQueued", at, "router", rule="all", policy_version=1,
                 excluded=[{"rep": "jonas", "reason": "outside_hours"}, {"rep": "maria", "reason": "outside_hours"}])


def story() -> Log:
    log = Log()
    log.capture(L0, MON + timedelta(hours=8))  # the policy is in force from this first event on
    at = MON + timedelta(hours=10)
    log.capture(L1, at)
    log.mql(L1, at)
    log.routed(L1, at, "maria", [("jonas", 1, 0), ("maria", 2, 0)])
    log.add(L1, "LeadAcceptedBySales", at + timedelta(minutes=5), "cli:maria", from_stage="mql", to_stage="sal",
            owner="maria")
    at = MON + timedelta(hours=10, minutes=30)
    log.capture(L2, at)
    log.mql(L2, at)
    log.routed(L2, at, "jonas", [("jonas", 1, 1), ("maria", 2, -1)])
    at = MON + timedelta(hours=11)
    log.capture(L3, at)
    log.mql(L3, at)
    log.routed(L3, at, "maria", [("jonas", 1, -1), ("maria", 2, 1)])
    log.add(L3, "LeadDisqualified", MON + timedelta(hours=12), "cli:maria", from_stage="mql",
            to_stage="disqualified", reason="spam")
    at = MON + timedelta(hours=18)
    log.capture(L4, at)
    log.mql(L4, at)
    log.queued(L4, at)
    at = TUE + timedelta(hours=20)
    log.capture(L5, at)
    log.mql(L5, at)
    # the operator stores the release with the next event it handles: after L5's triggers
    log.routed(L4, TUE + timedelta(hours=9), "maria", [("maria", 2, 0)], (("jonas", "absent"),))
    log.queued(L5, at)
    return log


def by_rep(result: Any) -> dict[str, dict[str, Any]]:
    return {r["rep"]: r for r in result.as_json()["reps"]}


def test_fairness_per_rep_figures_by_hand() -> None:
    result = fairness(story().events, VERSIONS, WINDOW)
    reps = by_rep(result)
    maria, jonas = reps["maria"], reps["jonas"]
    assert (maria["assignments"], jonas["assignments"]) == (3, 1)
    assert maria["by_method"] == {"round_robin": 3, "sticky": 0, "fallback": 0}
    assert (maria["pool_decisions"], jonas["pool_decisions"]) == (4, 4)
    assert (maria["share"], jonas["share"]) == (0.75, 0.25)
    assert maria["weight_share"] == pytest.approx(2 / 3)
    assert jonas["weight_share"] == pytest.approx(1 / 3)
    # maria holds L1 (sal) and L3 at 11:00 (L3 disqualified at 12:00), then L1 and L4 from Tue 09:00
    assert (maria["peak_open"], jonas["peak_open"]) == (2, 1)
    # Mon 8 h each; Tue 8 h maria, jonas absent
    assert (maria["candidate_hours"], jonas["candidate_hours"]) == (16.0, 8.0)
    assert maria["assignments_per_candidate_hour"] == 3 / 16
    assert jonas["assignments_per_candidate_hour"] == 1 / 8
    # 0.1875 and 0.125 normalized: 0.6 and 0.4
    assert maria["share_per_candidate_hour"] == pytest.approx(0.6)
    assert jonas["share_per_candidate_hour"] == pytest.approx(0.4)


def test_fairness_queue_and_decisions_by_hand() -> None:
    body = fairness(story().events, VERSIONS, WINDOW).as_json()
    assert body["decisions"] == {"assign": 4, "queue": 2, "warn": 0, "breach": 0}
    assert body["rules"] == [{"rule": "all", "assignments": 4, "queued": 2, "released": 1,
                              "median_wait_s": 15 * 3600.0, "still_queued": 1, "left": 0}]
    assert body["span"] == {"from": MON, "to": WED}
    assert body["policy_versions"] == [{"version": 1, "from": MON + timedelta(hours=8), "to": WED}]


def test_fairness_window_counts_only_decisions_inside_it() -> None:
    result = fairness(story().events, VERSIONS, Window(MON + timedelta(hours=10, minutes=15), TUE))
    reps = by_rep(result)
    assert (reps["maria"]["assignments"], reps["jonas"]["assignments"]) == (1, 1)  # L3; L2
    body = result.as_json()
    # L4 queued Monday 18:00, released Tuesday 09:00: after this window's end, so still queued at it
    assert body["rules"][0]["queued"] == 1
    assert body["rules"][0]["still_queued"] == 1
    assert body["rules"][0]["released"] == 0
    # Monday from 10:15: 6 h 45 min of office hours each
    assert reps["maria"]["candidate_hours"] == reps["jonas"]["candidate_hours"] == 6.75


def test_a_queued_lead_that_leaves_the_routing_stages_has_left_the_queue() -> None:
    log = story()
    log.add(L5, "LeadDisqualified", TUE + timedelta(hours=21), "cli:ops", from_stage="mql",
            to_stage="disqualified", reason="duplicate")
    rule = fairness(log.events, VERSIONS, WINDOW).as_json()["rules"][0]
    assert (rule["released"], rule["still_queued"], rule["left"]) == (1, 0, 1)


def test_backtesting_the_policy_that_decided_reproduces_what_happened() -> None:
    events = story().events
    result = backtest(events, POLICY, WINDOW, VERSIONS)
    body = result.as_json()
    assert body["changed_owner"] == {"changed": 0, "of": 4, "other_owner": 0, "only_by_candidate": 0,
                                     "not_by_candidate": 0}
    actual = fairness(events, VERSIONS, WINDOW).as_json()
    for mine, theirs in zip(body["reps"], actual["reps"], strict=True):
        assert mine["actual_assignments"] == theirs["assignments"]
        for key in ("assignments", "by_method", "pool_decisions", "share", "weight_share", "peak_open"):
            assert mine[key] == theirs[key], key
    assert body["rules"] == actual["rules"]
    assert body["decisions"] == actual["decisions"]


def test_backtest_over_a_later_window_starts_from_what_happened_before_it() -> None:
    """L1's stored decision before the window moved round robin: the replay continues from there."""
    window = Window(MON + timedelta(hours=10, minutes=15), WED)
    result = backtest(story().events, POLICY, window, VERSIONS)
    assert result.changed is not None and result.changed.changed == 0
    reps = by_rep(result)
    assert (reps["maria"]["assignments"], reps["jonas"]["assignments"]) == (2, 1)  # L3, L4; L2
    assert reps["maria"]["actual_assignments"] == 2
    assert reps["maria"]["peak_open"] == 2  # L1 (folded before the window) and L3


def test_backtest_of_another_policy_by_hand() -> None:
    """Equal weights, fallback maria: L1 jonas (tie: smaller id), L2 maria, L3 jonas, L4 and L5 maria by
    fallback at their qualification; nothing is queued."""
    result = backtest(story().events, EVEN, WINDOW, VERSIONS)
    body = result.as_json()
    reps = by_rep(result)
    maria, jonas = reps["maria"], reps["jonas"]
    assert (maria["assignments"], jonas["assignments"]) == (3, 2)
    assert maria["by_method"] == {"round_robin": 1, "sticky": 0, "fallback": 2}
    assert (maria["actual_assignments"], jonas["actual_assignments"]) == (3, 1)
    assert (maria["pool_decisions"], jonas["pool_decisions"]) == (5, 5)
    assert (maria["share"], jonas["share"]) == (0.6, 0.4)
    assert (maria["weight_share"], jonas["weight_share"]) == (0.5, 0.5)
    # jonas: L1 and L3 at 11:00; maria: L2, L4 and L5 at Tue 20:00
    assert (maria["peak_open"], jonas["peak_open"]) == (3, 2)
    assert "candidate_hours" not in maria
    assert body["rules"] == [{"rule": "all", "assignments": 5, "queued": 0, "released": 0,
                              "median_wait_s": None, "still_queued": 0, "left": 0}]
    assert body["decisions"] == {"assign": 5, "queue": 0, "warn": 0, "breach": 0}
    # L1, L2, L3 to the other rep; L5 routed by the candidate only
    assert body["changed_owner"] == {"changed": 4, "of": 5, "other_owner": 3, "only_by_candidate": 1,
                                     "not_by_candidate": 0}


def test_backtest_folds_manual_assignments_and_ignores_stored_decisions() -> None:
    log = story()
    at = MON + timedelta(hours=13)
    log.capture(L6, at)
    log.add(L6, "LeadAssigned", at, "crm", owner="jonas", rule=None, method=None, policy_version=None,
            candidates=None, excluded=None)
    log.mql(L6, at + timedelta(minutes=1))
    trail, operator = replay(log.events, EVEN, WINDOW)
    stored = {e.event_id for e in log.events if e.decided}
    assert not stored & {e.event_id for e in trail}  # the candidate decides instead
    assert operator.open_count("jonas", to_us(MON + timedelta(hours=18))) == 2  # L1 (routed) and L6 (by hand)
    result = backtest(log.events, EVEN, WINDOW, VERSIONS)
    reps = by_rep(result)
    assert L6 not in result.first_owner  # owned already when it became an mql: not routed
    assert reps["jonas"]["assignments"] == 2
    assert reps["jonas"]["peak_open"] == 2  # L1 and L3 at 11:00, L1 and L6 at 18:00


def test_tally_without_decisions_lists_the_given_reps_with_empty_figures() -> None:
    events = story().events[:3]  # L0 captured, L1 captured and qualified: never routed
    body = tally(events, WINDOW, lambda _: POLICY, None, {"maria"}).as_json()
    assert body["reps"] == [{"rep": "maria", "assignments": 0,
                             "by_method": {"round_robin": 0, "sticky": 0, "fallback": 0}, "pool_decisions": 0,
                             "share": None, "weight_share": None, "peak_open": 0}]
    assert body["rules"] == []


def test_candidate_hours_follow_the_versions_in_force() -> None:
    """Version 2 (maria alone) is published after L2's decision: in force from the next event, L3's capture
    at Mon 11:00, so jonas was a candidate 09:00-11:00 only."""
    log = story()
    after_l2 = next(e.position for e in log.events if e.lead == L2 and e.name == "LeadAssigned")
    alone = parse_policy(POLICY_TEXT.replace("pool = { maria = 2, jonas = 1 }", "pool = { maria = 1 }"))
    result = fairness(log.events, [*VERSIONS, InForce(2, after_l2, alone)], WINDOW)
    reps = by_rep(result)
    assert (reps["maria"]["candidate_hours"], reps["jonas"]["candidate_hours"]) == (16.0, 2.0)
    assert result.as_json()["policy_versions"] == [
        {"version": 1, "from": MON + timedelta(hours=8), "to": MON + timedelta(hours=11)},
        {"version": 2, "from": MON + timedelta(hours=11), "to": WED}]


def test_a_wait_follows_occurred_order_when_the_decision_was_stored_late() -> None:
    """An operator that caught up late stores its queue decision after events that occurred after it:
    the wait still ends with the assignment that followed it in time."""
    log = Log()
    at = MON + timedelta(hours=18)
    log.capture(L1, at)
    log.mql(L1, at)
    log.add(L1, "LeadAssigned", at + timedelta(hours=1), "crm", owner="jonas", rule=None, method=None,
            policy_version=None, candidates=None, excluded=None)
    log.queued(L1, at)  # stored last, occurred at the qualification
    rule = fairness(log.events, VERSIONS, WINDOW).as_json()["rules"][0]
    assert (rule["queued"], rule["released"], rule["median_wait_s"], rule["still_queued"]) == (1, 1, 3600.0, 0)


def test_median_wait_is_nearest_rank() -> None:
    log = Log()
    for n, (lead, hours) in enumerate(((L1, 1), (L2, 2), (L3, 4), (L4, 8))):
        at = MON + timedelta(hours=18, minutes=n)
        log.capture(lead, at)
        log.mql(lead, at)
        log.queued(lead, at)
        log.add(lead, "LeadAssigned", at + timedelta(hours=hours), "crm", owner="maria", rule=None, method=None,
                policy_version=None, candidates=None, excluded=None)
    rule = fairness(log.events, VERSIONS, WINDOW).as_json()["rules"][0]
    assert rule["median_wait_s"] == 2 * 3600.0  # the 2nd of 4 sorted waits (rank ⌈4/2⌉)
