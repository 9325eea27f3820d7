"""The `sla` figures over lead timelines, computed by hand: a business-hours clock (Europe/Berlin,
Mon–Fri 08:00–18:00, a holiday) met, breached, open, at risk and restarted, across a weekend; by
rule and by owner; compliance and nearest-rank p50/p90; the window, as-of, and policy versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lifecycle.operations.policy import content_sha256
from lifecycle.policies import PolicyTimeline, Published
from projections import sla
from projections.base import Lead
from projections.query import Query, QueryError
from schemas.facts import Fact, dt_to_us

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = """
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }
holidays = ["2026-03-05"]

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "30m"
clock = "business"
calendar = "emea"
warn_at = 0.5

[[sla]]
id = "accept"
start = "mql"
stop = ["sal", "rejected"]
target = "1d"
"""
FAR_PAST = datetime(2026, 1, 1, tzinfo=UTC)


def berlin(day: int, hour: int, minute: int = 0) -> datetime:
    """March 2026 in Berlin (CET, UTC+1): Monday 2 … Friday 6, the weekend, Monday 9."""
    return datetime(2026, 3, day, hour, minute, tzinfo=BERLIN)


def published(version: int, text: str, recorded_at: datetime = FAR_PAST) -> Published:
    return Published(version=version, sha256=content_sha256(text), content=text, position=0,
                     recorded_at=recorded_at, actor="test", event_id=f"policy-{version}", hash=f"{version:064x}",
                     envelope={})


def lead(no: int, *events: tuple[datetime, str, str | None]) -> tuple[Lead, list[Fact]]:
    """A captured lead with (occurred, event name, owner) events, each recorded when it occurred."""
    facts = [Fact(dt_to_us(berlin(1, 12)), 1, "LeadCaptured", dt_to_us(berlin(1, 12)), "captured", "web")]
    for version, (at, name, owner) in enumerate(events, start=2):
        stage = {"LeadQualifiedAsMQL": "mql", "LeadAcceptedBySales": "sal", "LeadRejectedBySales": "mql"}.get(name)
        facts.append(Fact(dt_to_us(at), version, name, dt_to_us(at), stage, owner=owner))
    return Lead(no, f"{no:032x}"), sorted(facts)


def assigned(at: datetime, owner: str) -> tuple[datetime, str, str | None]:
    return at, "LeadAssigned", owner


def contacted(at: datetime, owner: str) -> tuple[datetime, str, str | None]:
    return at, "LeadContacted", owner


#: first-contact target 30 business minutes, warning at 15
LEADS = [
    lead(1, assigned(berlin(2, 9), "maria"), contacted(berlin(2, 9, 20), "maria")),  # met, 20 min
    lead(2, assigned(berlin(2, 10), "maria"), contacted(berlin(2, 11), "maria")),  # breached, stopped late: 60 min
    # Friday 17:50 → Monday 08:15: 10 min + 15 min = 25 min, met (deadline Monday 08:20)
    lead(3, assigned(berlin(6, 17, 50), "jonas"), contacted(berlin(9, 8, 15), "jonas")),
    # Friday 17:40, never contacted: 20 min Friday, deadline Monday 08:10, breached
    lead(4, assigned(berlin(6, 17, 40), "jonas")),
    lead(5, assigned(berlin(9, 11, 40), "maria")),  # open at 12:00: 20 min, past the warning (11:55)
    lead(6, assigned(berlin(9, 11, 50), "maria")),  # open at 12:00: 10 min, warning at 12:05
    # restarted at 10 min by a reassignment (before the deadline), then met after 15 min by jonas
    lead(7, assigned(berlin(2, 14), "maria"), assigned(berlin(2, 14, 10), "jonas"), contacted(berlin(2, 14, 25), "jonas")),
    # restarted at 45 min (after the 09:30 deadline: breached), then met after 5 min by jonas
    lead(8, assigned(berlin(3, 9), "maria"), assigned(berlin(3, 9, 45), "jonas"), contacted(berlin(3, 9, 50), "jonas")),
    # Wednesday 17:55, Thursday a holiday, contacted Friday 08:20: 5 + 20 = 25 min, met
    lead(9, assigned(berlin(4, 17, 55), "maria"), contacted(berlin(6, 8, 20), "maria")),
]
AS_OF = berlin(9, 12)
MIN = 60.0


def answer(by: str | None = None, versions: list[Published] | None = None, leads: Any = None,
           from_: datetime | None = None, to: datetime | None = None,
           as_of: datetime | None = None) -> dict[str, Any]:
    w = sla.check_sla(Query(by=by, from_=from_, to=to, as_of=as_of))
    timeline = PolicyTimeline([published(1, POLICY)] if versions is None else versions)
    return sla.compute(w, LEADS if leads is None else leads, timeline, now=datetime(2027, 1, 1, tzinfo=UTC))


def rows(result: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(r["sla"], r["group"]): r for r in result["rules"]}


def test_by_rule_counts_every_outcome_with_compliance_and_nearest_rank_percentiles() -> None:
    result = answer(as_of=AS_OF)
    assert result["by"] == "rule" and result["note"] is None and result["policy_version"] == 1
    assert result["evaluated_at"] == "2026-03-09T11:00:00.000000Z"
    first = rows(result)[("first-contact", "first-contact")]
    assert first == {
        "sla": "first-contact", "group": "first-contact", "started": 11,
        "met": 5, "breached": 3, "restarted": 1, "open": 2, "at_risk": 1,
        "compliance": 5 / 8,
        # stopped: 5, 15, 20, 25, 25, 60 min → ranks ⌈6/2⌉ = 3 and ⌈5.4⌉ = 6
        "p50_seconds": 20 * MIN, "p90_seconds": 60 * MIN,
    }
    # the policy's other rule is listed without clocks, in the policy's order
    assert [r["sla"] for r in result["rules"]] == ["first-contact", "accept"]
    assert rows(result)[("accept", "accept")]["started"] == 0
    assert rows(result)[("accept", "accept")]["compliance"] is None


def test_by_owner_groups_by_the_owner_at_the_deadline_or_the_end() -> None:
    got = rows(answer(by="owner", as_of=AS_OF))
    assert set(got) == {("first-contact", "maria"), ("first-contact", "jonas")}
    maria, jonas = got[("first-contact", "maria")], got[("first-contact", "jonas")]
    # maria: 1 met 20, 2 breached 60, 5 open at risk, 6 open, 7 restarted, 8 breached (her deadline), 9 met 25
    assert (maria["started"], maria["met"], maria["breached"], maria["restarted"], maria["open"],
            maria["at_risk"]) == (7, 2, 2, 1, 2, 1)
    assert maria["compliance"] == 0.5
    assert (maria["p50_seconds"], maria["p90_seconds"]) == (25 * MIN, 60 * MIN)  # of 20, 25, 60
    # jonas: 3 met 25, 4 breached, 7 met 15, 8 met 5
    assert (jonas["started"], jonas["met"], jonas["breached"], jonas["restarted"], jonas["open"],
            jonas["at_risk"]) == (4, 3, 1, 0, 0, 0)
    assert jonas["compliance"] == 0.75
    assert (jonas["p50_seconds"], jonas["p90_seconds"]) == (15 * MIN, 25 * MIN)  # of 5, 15, 25


def test_as_of_friday_evening_the_weekend_clocks_are_still_open() -> None:
    first = rows(answer(as_of=berlin(6, 18, 30)))[("first-contact", "first-contact")]
    # 1, 2, 7, 8, 9 are decided; 3 (10 min, warning Monday 08:05) and 4 (20 min, warned 17:55) are open
    assert (first["started"], first["met"], first["breached"], first["restarted"], first["open"],
            first["at_risk"]) == (9, 4, 2, 1, 2, 1)
    assert first["compliance"] == 4 / 6
    assert (first["p50_seconds"], first["p90_seconds"]) == (20 * MIN, 60 * MIN)  # of 5, 15, 20, 25, 60


def test_the_window_is_on_the_clocks_start() -> None:
    result = answer(as_of=AS_OF, from_=berlin(9, 0), to=berlin(10, 0))
    first = rows(result)[("first-contact", "first-contact")]
    assert (first["started"], first["open"], first["at_risk"], first["compliance"]) == (2, 2, 1, None)
    assert result["from"] == "2026-03-08T23:00:00.000000Z" and result["to"] == "2026-03-09T23:00:00.000000Z"
    # Friday's clocks, decided on Monday
    friday = rows(answer(as_of=AS_OF, from_=berlin(6, 0), to=berlin(7, 0)))[("first-contact", "first-contact")]
    assert (friday["started"], friday["met"], friday["breached"], friday["p50_seconds"]) == (2, 1, 1, 25 * MIN)


def test_without_as_of_the_clocks_are_judged_now() -> None:
    result = answer()
    assert result["as_of"] is None and result["evaluated_at"] == "2027-01-01T00:00:00.000000Z"
    first = rows(result)[("first-contact", "first-contact")]
    assert (first["met"], first["breached"], first["open"]) == (5, 5, 0)  # 5 and 6 ran out since


def test_each_clock_is_judged_by_the_version_in_force_when_its_start_was_recorded() -> None:
    stricter = POLICY.replace('target = "30m"', 'target = "10m"')
    versions = [published(1, POLICY), published(2, stricter, recorded_at=berlin(2, 12))]
    # both contacted after 20 min; the first assignment was recorded before v2, the second after
    leads = [lead(1, assigned(berlin(2, 9), "maria"), contacted(berlin(2, 9, 20), "maria")),
             lead(2, assigned(berlin(2, 13), "maria"), contacted(berlin(2, 13, 20), "maria"))]
    result = answer(as_of=AS_OF, versions=versions, leads=leads)
    first = rows(result)[("first-contact", "first-contact")]
    assert (first["started"], first["met"], first["breached"]) == (2, 1, 1)
    assert result["policy_version"] == 2
    # an assignment that occurred early but was recorded after v2 is judged by v2
    late = Lead(3, "3" * 32), [Fact(dt_to_us(berlin(1, 12)), 1, "LeadCaptured", dt_to_us(berlin(1, 12)), "captured"),
                                Fact(dt_to_us(berlin(2, 9)), 2, "LeadAssigned", dt_to_us(berlin(2, 13)), owner="a"),
                                Fact(dt_to_us(berlin(2, 9, 20)), 3, "LeadContacted", dt_to_us(berlin(2, 13)), owner="a")]
    first = rows(answer(as_of=AS_OF, versions=versions, leads=[late]))[("first-contact", "first-contact")]
    assert (first["met"], first["breached"]) == (0, 1)
    # as known before v2 was recorded, v1 judges the lead's clock
    before = rows(answer(as_of=berlin(2, 11), versions=versions, leads=leads))[("first-contact", "first-contact")]
    assert (before["started"], before["met"]) == (1, 1)


def test_stage_kinds_and_a_rejection_stop_a_24x7_clock() -> None:
    leads = [lead(1, (berlin(2, 9), "LeadQualifiedAsMQL", None), (berlin(2, 15), "LeadRejectedBySales", None)),
             lead(2, (berlin(2, 9), "LeadQualifiedAsMQL", None), (berlin(2, 9, 5), "LeadAssigned", "maria"),
                  (berlin(4, 9), "LeadAcceptedBySales", "maria"))]
    accept = rows(answer(as_of=AS_OF, leads=leads))[("accept", "accept")]
    # a rejection enters mql again: it stops the first clock (6 h) and starts a new one, open since (> 1 d)
    assert (accept["started"], accept["met"], accept["breached"], accept["open"]) == (3, 1, 2, 0)
    assert (accept["p50_seconds"], accept["p90_seconds"]) == (6 * 3600.0, 48 * 3600.0)


def test_without_a_policy_or_sla_rules_the_report_is_empty_and_says_why() -> None:
    none = answer(versions=[])
    assert none["rules"] == [] and none["note"] == sla.NO_POLICY and none["policy_version"] is None
    assert "leadledger policy publish FILE" in none["note"]
    bare = answer(versions=[published(1, '[calendars.emea]\ntimezone = "UTC"\nhours = { mon = "08:00-18:00" }\n')])
    assert bare["rules"] == [] and bare["note"] == sla.NO_RULES


def test_by_is_rule_or_owner_and_there_is_no_mode() -> None:
    assert sla.check_sla(Query()).by == "rule"
    with pytest.raises(QueryError, match="--by"):
        sla.check_sla(Query(by="channel"))
    with pytest.raises(QueryError, match="--mode"):
        sla.check_sla(Query(mode="period"))
