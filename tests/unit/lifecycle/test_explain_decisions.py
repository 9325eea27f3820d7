"""`explain`: one readable line per decision of the router and the SLA clocks (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lifecycle.explain import explain

MARIA = {"rep": "maria", "weight": 2, "current_before": 0, "open": 12, "capacity": 40}
JONAS = {"rep": "jonas", "weight": 1, "current_before": 1, "open": 3, "capacity": 40}
EXCLUDED = [{"rep": "lena", "reason": "absent"}, {"rep": "tom", "reason": "outside_hours"}]


def assigned(method: str | None, owner: str = "maria", **extra: Any) -> dict[str, Any]:
    return {"owner": owner, "rule": "enterprise-dach", "method": method, "policy_version": 3,
            "candidates": [MARIA, JONAS], "excluded": EXCLUDED, **extra}


def sla(**extra: Any) -> dict[str, Any]:
    return {"sla": "first-contact", "started_at": "2026-03-02T09:00:00.000000Z",
            "deadline": "2026-03-02T09:05:00.000000Z", "owner": "maria", "policy_version": 3, **extra}


def test_a_round_robin_names_every_candidate_with_its_values_and_every_exclusion() -> None:
    # current after: before + weight, and the winner gives back the candidates' total weight (3)
    assert explain("LeadAssigned", assigned("round_robin")) == (
        "assigned to maria by rule enterprise-dach (policy v3, round robin): candidates "
        "maria (weight 2, current 0→-1, 12/40 open), jonas (weight 1, current 1→2, 3/40 open); "
        "excluded: lena (absent), tom (outside hours)")


def test_a_round_robin_without_exclusions_or_capacities() -> None:
    candidates = [{"rep": "ana", "weight": 1, "current_before": -1, "open": 0, "capacity": None},
                  {"rep": "ben", "weight": 1, "current_before": 1, "open": 7, "capacity": None}]
    assert explain("LeadAssigned", assigned("round_robin", owner="ben", candidates=candidates, excluded=[])) == (
        "assigned to ben by rule enterprise-dach (policy v3, round robin): candidates "
        "ana (weight 1, current -1→0, 0 open), ben (weight 1, current 1→0, 7 open)")


def test_a_sticky_assignment_says_the_owner_already_holds_the_account() -> None:
    assert explain("LeadAssigned", assigned("sticky", excluded=[{"rep": "tom", "reason": "at_capacity"}])) == (
        "assigned to maria by rule enterprise-dach (policy v3) — sticky: maria already owns an open lead "
        "of this account; excluded: tom (at capacity)")


def test_a_fallback_assignment_says_there_was_no_candidate() -> None:
    data = assigned("fallback", owner="tom", candidates=[],
                    excluded=[{"rep": "maria", "reason": "absent"}, {"rep": "jonas", "reason": "breached"}])
    assert explain("LeadAssigned", data) == (
        "assigned to tom by rule enterprise-dach (policy v3) — fallback owner (no candidate); "
        "excluded: maria (absent), jonas (breached the SLA)")


def test_a_manual_or_upstream_assignment_has_nothing_to_explain() -> None:
    manual = {"owner": "maria", "rule": "emea-round-robin", "method": None, "policy_version": None,
              "candidates": None, "excluded": None}
    assert explain("LeadAssigned", manual) is None
    assert explain("LeadAssigned", {"owner": "maria", "rule": None}) is None  # a v1 assignment


def test_a_queued_lead_names_each_pool_reps_reason() -> None:
    data = {"rule": "enterprise-dach", "policy_version": 3,
            "excluded": [{"rep": "maria", "reason": "absent"}, {"rep": "jonas", "reason": "outside_hours"}]}
    assert explain("LeadRoutingQueued", data) == (
        "queued by rule enterprise-dach (policy v3): no candidate — maria absent, jonas outside hours")


def test_an_sla_breach_names_its_deadline_start_owner_and_policy() -> None:
    assert explain("LeadSLABreached", sla()) == (
        "SLA first-contact breached at its deadline 2026-03-02 09:05 UTC (started 09:00, owner maria, policy v3)")


def test_an_sla_warning_names_the_deadline_ahead() -> None:
    data = sla(sla="sal-follow-up", started_at="2026-02-27T16:30:00.000000Z",
               deadline="2026-03-06T16:30:00.000000Z", owner=None)
    assert explain("LeadSLAWarned", data) == (
        "SLA sal-follow-up warning: its deadline is 2026-03-06 16:30 UTC "
        "(started 2026-02-27 16:30 UTC, no owner, policy v3)")


def test_sla_times_may_be_datetimes_and_keep_their_seconds() -> None:
    data = sla(started_at=datetime(2026, 3, 2, 10, 0, 13, tzinfo=UTC),
               deadline=datetime(2026, 3, 2, 14, 0, 13, 500, tzinfo=UTC))
    assert explain("LeadSLABreached", data) == (
        "SLA first-contact breached at its deadline 2026-03-02 14:00:13 UTC "
        "(started 10:00:13, owner maria, policy v3)")


def test_other_events_have_no_explanation() -> None:
    assert explain("LeadWon", {"amount": 100.0, "currency": "EUR"}) is None
    assert explain("LeadCaptured", {"channel": "webinar"}) is None
