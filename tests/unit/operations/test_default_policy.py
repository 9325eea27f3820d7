"""The demo's policy (lifecycle/simulate/default_policy.toml): it parses, its calendars and reps are the
ones it says, the vacation falls inside the simulated period, and every lead the simulator can make
is routed by a rule meant for it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import click
import pytest

from leadledger.cli.bulk import simulate as simulate_command
from lifecycle.operations.policy import Policy, parse_policy
from lifecycle.operations.routing import select_rule
from lifecycle.simulate import generate
from lifecycle.simulate.world import COUNTRIES, OWNERS, Country

POLICY_FILE = Path(__file__).parents[3] / "lifecycle" / "simulate" / "default_policy.toml"
#: the calendar of each simulator territory's reps (its APAC owners are no reps of the policy)
CALENDAR_OF_TERRITORY = {"emea": "emea", "na": "amer"}
RULE_OF_TERRITORY = {"emea": "emea", "na": "amer", "apac": "rest-of-world"}


@cache
def policy() -> Policy:
    return parse_policy(POLICY_FILE.read_text("utf-8"))


def simulated_period() -> tuple[date, date]:
    """[first, last) capture day of `leadledger simulate` run with its defaults (as `make demo` runs it)."""
    defaults = {p.name: p.default for p in simulate_command.params if isinstance(p, click.Option)}
    start = date.fromisoformat(str(defaults["start"]))
    return start, start + timedelta(days=int(str(defaults["days"])))


def test_the_calendars_are_berlin_and_new_york_office_hours_with_their_holidays() -> None:
    emea, amer = policy().calendars["emea"], policy().calendars["amer"]
    assert (emea.timezone, amer.timezone) == ("Europe/Berlin", "America/New_York")
    assert emea.hours == (((8 * 60, 18 * 60),),) * 5 + ((), ())
    assert amer.hours == (((9 * 60, 17 * 60),),) * 5 + ((), ())
    assert {date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1), date(2027, 12, 25),
            date(2027, 12, 26)} <= emea.holidays
    assert {date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1), date(2027, 11, 25)} <= amer.holidays
    assert all(d.weekday() == 3 for d in (date(2026, 11, 26), date(2027, 11, 25)))  # Thanksgiving: a Thursday


def test_six_reps_three_per_calendar_with_capacities_all_of_them_simulated_owners() -> None:
    reps = policy().reps
    assert len(reps) == 6
    assert Counter(r.calendar for r in reps.values()) == {"emea": 3, "amer": 3}
    assert all(r.capacity is not None and 25 <= r.capacity <= 40 for r in reps.values())
    owners = {o.name: o for o in OWNERS}
    for rep in reps.values():  # the simulator's owners of that territory, so its assignments name reps
        assert CALENDAR_OF_TERRITORY[owners[rep.id].territory] == rep.calendar


def test_one_rep_is_on_two_weeks_of_vacation_inside_the_simulated_period() -> None:
    away = {rep.id: rep.absences for rep in policy().reps.values() if rep.absences}
    assert len(away) == 1
    [(absence,)] = away.values()
    assert absence.end - absence.start == timedelta(days=14)
    first, end = simulated_period()
    assert first <= absence.start and absence.end <= end, (absence, first, end)


def test_routing_on_mql_by_territory_and_a_catch_all_that_queues() -> None:
    routing = policy().routing
    assert routing is not None
    assert [s.value for s in routing.on] == ["mql"]
    rules = {r.id: r for r in routing.rules}
    assert [r.id for r in routing.rules] == ["enterprise-dach", "emea", "amer", "rest-of-world"]
    assert rules["enterprise-dach"].sticky == "account"
    catch_all = routing.rules[-1]
    assert catch_all.when == () and catch_all.fallback is None  # queue
    assert {rep for rep, _ in catch_all.pool} == set(policy().reps)
    for rule_id, calendar in (("enterprise-dach", "emea"), ("emea", "emea"), ("amer", "amer")):
        assert {policy().reps[rep].calendar for rep, _ in rules[rule_id].pool} == {calendar}


def test_sla_first_contact_and_sal_follow_up() -> None:
    first, follow_up = policy().sla
    assert (first.id, first.start, first.stop, first.target, first.clock, first.warn_at, first.on_breach) == (
        "first-contact", "assigned", {"contacted", "sal", "recycled", "disqualified"}, timedelta(hours=4), "business",
        0.75, ("alert", "reassign"))
    assert (follow_up.id, follow_up.start, follow_up.stop, follow_up.target, follow_up.clock,
            follow_up.on_breach) == ("sal-follow-up", "sal", {"sql", "lost", "disqualified", "recycled"},
                                     timedelta(days=5), "calendar", ("alert",))
    assert policy().scoring is None


@pytest.mark.parametrize("country", COUNTRIES, ids=lambda c: str(c.code))
def test_every_country_the_simulator_makes_has_the_rule_of_its_territory(country: Country) -> None:
    code, territory = country.code, country.territory
    rule = select_rule(policy(), {"country": code, "employees": 200})
    assert rule is not None and rule.id == RULE_OF_TERRITORY[territory], code
    enterprise = select_rule(policy(), {"country": code, "employees": 5000})
    assert enterprise is not None
    assert (enterprise.id == "enterprise-dach") == (code in ("DE", "AT", "CH")), code


def test_every_simulated_capture_is_routed_mostly_by_its_territory_rule() -> None:
    start = datetime.combine(simulated_period()[0], datetime.min.time(), tzinfo=UTC)
    routed: Counter[str] = Counter()
    for message in generate(leads=1500, seed=42, start=start, days=120):
        if message["type"].endswith(".capture.v1"):
            data = message["data"]
            attributes = {k: data[k] for k in ("country", "industry", "employees", "role", "language") if k in data}
            rule = select_rule(policy(), attributes)
            assert rule is not None, data
            routed[rule.id] += 1
    total = sum(routed.values())
    assert set(routed) == {"enterprise-dach", "emea", "amer", "rest-of-world"}
    assert routed["rest-of-world"] < 0.2 * total  # APAC and the captures that name no country
    assert routed["enterprise-dach"] > 0.01 * total
