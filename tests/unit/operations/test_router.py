"""The router of SPEC §9.2: rule choice, candidates and exclusions, stickiness, smooth weighted round robin,
fallback, queue release; and properties over generated histories."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lifecycle.operations.policy import Policy, parse_policy
from lifecycle.operations.routing import (
    Assigned,
    Candidate,
    Exclusion,
    Queued,
    advance,
    fold_currents,
    release_instant,
    route,
)

BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")

POLICY = parse_policy("""
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }
[calendars.apac]
timezone = "Asia/Tokyo"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }

[reps.maria]
calendar = "emea"
capacity = 40
absences = [{ from = "2026-03-02", to = "2026-03-07" }]
[reps.jonas]
calendar = "emea"
[reps.ana]
calendar = "emea"
capacity = 2
[reps.ben]
calendar = "emea"
[reps.cho]
calendar = "apac"

[routing]
[[routing.rules]]
id = "enterprise-dach"
when = { country = ["DE", "AT", "CH"], employees_gte = 1000 }
pool = { maria = 2, jonas = 1 }
sticky = "account"
[[routing.rules]]
id = "japan"
when = { country = "JP" }
pool = { cho = 1 }
fallback = "ben"
[[routing.rules]]
id = "rest"
pool = { ben = 1, ana = 1 }
""")

DACH = {"country": "DE", "employees": 1500}
TUESDAY = datetime(2026, 3, 10, 10, 0, tzinfo=BERLIN)


def run(policy: Policy, attributes: dict[str, object], at: datetime, n: int) -> list[Assigned]:
    """n decisions in a row, each with the `current` values folded from the ones before."""
    decisions: list[Assigned] = []
    for _ in range(n):
        decision = route(policy, attributes, at, {}, fold_currents(decisions))
        assert isinstance(decision, Assigned)
        decisions.append(decision)
    return decisions


def test_smooth_weighted_round_robin_follows_the_weights_and_records_current_before() -> None:
    decisions = run(POLICY, DACH, TUESDAY, 6)
    assert [d.rep for d in decisions] == ["maria", "jonas", "maria"] * 2
    first, second = decisions[0], decisions[1]
    assert first.rule == "enterprise-dach" and first.method == "round_robin" and first.excluded == ()
    assert first.candidates == (Candidate("jonas", 1, 0, 0, None), Candidate("maria", 2, 0, 0, 40))
    assert [(c.rep, c.current_before) for c in second.candidates] == [("jonas", 1), ("maria", -1)]
    assert fold_currents(decisions)["enterprise-dach"] == {"jonas": 0, "maria": 0}  # a full cycle returns to 0


def test_a_tie_goes_to_the_smallest_rep_id() -> None:
    assert [d.rep for d in run(POLICY, {"country": "FR"}, TUESDAY, 4)] == ["ana", "ben", "ana", "ben"]


def test_the_first_matching_rule_gives_the_pool() -> None:
    small_dach = route(POLICY, {"country": "DE", "employees": 10}, TUESDAY, {}, {})
    no_size = route(POLICY, {"country": "DE"}, TUESDAY, {}, {})  # a missing attribute never matches
    assert isinstance(small_dach, Assigned) and small_dach.rule == "rest"
    assert isinstance(no_size, Assigned) and no_size.rule == "rest"


def test_no_matching_rule_and_no_routing_decide_nothing() -> None:
    only_dach = parse_policy(POLICY.source.split('[[routing.rules]]\nid = "japan"')[0])
    assert route(only_dach, {"country": "FR"}, TUESDAY, {}, {}) is None
    assert route(parse_policy(""), DACH, TUESDAY, {}, {}) is None
    assert release_instant(only_dach, {"country": "FR"}, TUESDAY, {}) is None


def test_an_absent_rep_is_excluded_and_keeps_their_current() -> None:
    during = datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN)
    before = {"enterprise-dach": {"maria": -1, "jonas": 1}}
    decision = route(POLICY, DACH, during, {}, before)
    assert isinstance(decision, Assigned) and decision.rep == "jonas"
    assert decision.excluded == (Exclusion("maria", "absent"),)
    assert decision.candidates == (Candidate("jonas", 1, 1, 0, None),)
    after = advance(before["enterprise-dach"], decision)
    assert after == {"maria": -1, "jonas": 1}  # sole candidate: +1 then −1; maria untouched (no backlog)


def test_outside_hours_for_everyone_queues_with_each_reason() -> None:
    saturday = datetime(2026, 3, 14, 10, 0, tzinfo=BERLIN)
    assert route(POLICY, DACH, saturday, {}, {}) == Queued(
        "enterprise-dach", (Exclusion("jonas", "outside_hours"), Exclusion("maria", "outside_hours")))
    evening = datetime(2026, 3, 10, 18, 0, tzinfo=BERLIN)  # hours are [08:00, 18:00)
    assert isinstance(route(POLICY, DACH, evening, {}, {}), Queued)
    assert isinstance(route(POLICY, DACH, evening - timedelta(microseconds=1), {}, {}), Assigned)


def test_a_rep_at_capacity_is_excluded() -> None:
    decision = route(POLICY, {"country": "FR"}, TUESDAY, {"ana": ["a1", None]}, {})
    assert isinstance(decision, Assigned) and decision.rep == "ben"
    assert decision.excluded == (Exclusion("ana", "at_capacity"),)
    below = route(POLICY, {"country": "FR"}, TUESDAY, {"ana": ["a1"]}, {})
    assert isinstance(below, Assigned) and below.rep == "ana"
    assert below.candidates[0] == Candidate("ana", 1, 0, 1, 2)


def test_a_breach_reassignment_excludes_the_breaching_owner_first() -> None:
    decision = route(POLICY, DACH, TUESDAY, {}, {}, exclude="maria")
    assert isinstance(decision, Assigned) and decision.rep == "jonas"
    assert decision.excluded == (Exclusion("maria", "breached"),)
    absent_too = route(POLICY, DACH, datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN), {}, {}, exclude="maria")
    assert isinstance(absent_too, Assigned) and absent_too.excluded == (Exclusion("maria", "breached"),)


def test_account_stickiness_prefers_the_candidate_holding_the_account() -> None:
    lead = {**DACH, "account_key": "acct-1"}
    held = {"jonas": ["acct-1"], "maria": ["acct-2"]}
    decision = route(POLICY, lead, TUESDAY, held, {})
    assert isinstance(decision, Assigned) and (decision.rep, decision.method) == ("jonas", "sticky")
    assert advance({}, decision) == {}  # stickiness does not move the round robin
    # the holder must be a candidate: absent maria holds the account, so round robin decides
    away = route(POLICY, {**lead, "account_key": "acct-2"}, datetime(2026, 3, 3, 10, tzinfo=BERLIN), held, {})
    assert isinstance(away, Assigned) and (away.rep, away.method) == ("jonas", "round_robin")
    # most open leads of the account wins; then the smallest rep id
    both = route(POLICY, lead, TUESDAY, {"jonas": ["acct-1"], "maria": ["acct-1", "acct-1"]}, {})
    tie = route(POLICY, lead, TUESDAY, {"jonas": ["acct-1"], "maria": ["acct-1"]}, {})
    assert isinstance(both, Assigned) and both.rep == "maria"
    assert isinstance(tie, Assigned) and tie.rep == "jonas"
    # a lead without an account key (free-mail) is never sticky
    free = route(POLICY, DACH, TUESDAY, {"jonas": [None]}, {})
    assert isinstance(free, Assigned) and free.method == "round_robin" and free.rep == "maria"


def test_a_rep_fallback_assigns_that_rep_whatever_their_hours() -> None:
    saturday_tokyo = datetime(2026, 3, 14, 11, 0, tzinfo=TOKYO)
    decision = route(POLICY, {"country": "JP"}, saturday_tokyo, {}, {})
    assert decision == Assigned("ben", "japan", "fallback", (), (Exclusion("cho", "outside_hours"),))
    assert advance({"cho": 3}, decision) == {"cho": 3}
    # but never back to the owner whose breach asked for the reassignment
    assert route(POLICY, {"country": "JP"}, saturday_tokyo, {}, {}, exclude="ben") == Queued(
        "japan", (Exclusion("cho", "outside_hours"),))
    assert release_instant(POLICY, {"country": "JP"}, saturday_tokyo, {}) == saturday_tokyo


# ---------------------------------------------------------------------------------------------- release

RELEASE = parse_policy("""
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }
[reps.x]
calendar = "emea"
absences = [{ from = "2026-03-09", to = "2026-03-11" }, { from = "2026-06-01", to = "2028-01-01" }]
[reps.y]
calendar = "emea"
capacity = 1
[[routing.rules]]
id = "all"
pool = { x = 1, y = 1 }
""")


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
           micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=BERLIN)


def test_a_queued_lead_is_released_when_working_hours_begin() -> None:
    saturday = berlin(2026, 3, 7, 12, 0)
    assert isinstance(route(RELEASE, {}, saturday, {}, {}), Queued)
    assert release_instant(RELEASE, {}, saturday, {}) == berlin(2026, 3, 9, 8, 0)  # y on Monday morning
    # across the DST change of Sunday 29 March: Monday 08:00 CEST is 06:00 UTC
    assert release_instant(RELEASE, {}, berlin(2026, 3, 28, 12, 0), {}) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)


def test_a_queued_lead_is_released_when_an_absence_ends() -> None:
    busy = {"y": ["acct"]}  # y stays at capacity until that lead leaves an open stage
    released = release_instant(RELEASE, {}, berlin(2026, 3, 7, 12, 0), busy)
    assert released == berlin(2026, 3, 11, 8, 0)  # x is away [9 March, 11 March)
    assert isinstance(route(RELEASE, {}, released, busy, {}), Assigned)
    assert isinstance(route(RELEASE, {}, released - timedelta(microseconds=1), busy, {}), Queued)
    # x comes back during working hours: released at the first instant of the local date the absence ends
    in_hours = parse_policy(RELEASE.source.replace('mon = "08:00-18:00"', 'mon = "00:00-24:00"').replace(
        '{ from = "2026-03-09", to = "2026-03-11" }', '{ from = "2026-03-04", to = "2026-03-09" }'))
    assert release_instant(in_hours, {}, berlin(2026, 3, 5, 12, 0), busy) == berlin(2026, 3, 9, 0, 0)


def test_release_is_a_bounded_search() -> None:
    busy = {"y": ["acct"]}
    june = berlin(2026, 6, 2, 12, 0)
    assert release_instant(RELEASE, {}, june, busy) is None  # x away until 2028: beyond the 366-day limit
    assert release_instant(RELEASE, {}, june, busy, horizon=timedelta(days=800)) == berlin(2028, 1, 3, 8, 0)
    assert release_instant(RELEASE, {}, berlin(2026, 3, 10, 9, 0), busy, exclude="x") is None  # nobody else
    assert release_instant(RELEASE, {}, berlin(2026, 3, 12, 9, 0), {}) == berlin(2026, 3, 12, 9, 0)  # now


# ---------------------------------------------------------------------------------------------- properties

ZONES = {"emea": ("Europe/Berlin", "08:00-18:00"), "apac": ("Asia/Tokyo", "09:00-17:00"),
         "amer": ("America/New_York", "09:00-17:00")}
MARCH = date(2026, 3, 1)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """2-6 reps over three calendars, capacities and absences in March 2026, 1-3 rules (the last may
    match everything)."""
    lines = []
    for cid, (zone, hours) in ZONES.items():
        week = ", ".join(f'{d} = "{hours}"' for d in ("mon", "tue", "wed", "thu", "fri"))
        sat = ', sat = "10:00-14:00"' if draw(st.booleans()) else ""
        lines += [f"[calendars.{cid}]", f'timezone = "{zone}"', f"hours = {{ {week}{sat} }}"]
    reps = [f"r{i}" for i in range(draw(st.integers(2, 6)))]
    for rep in reps:
        lines += [f"[reps.{rep}]", f'calendar = "{draw(st.sampled_from(sorted(ZONES)))}"']
        capacity = draw(st.none() | st.integers(0, 3))
        if capacity is not None:
            lines.append(f"capacity = {capacity}")
        spans = []
        for start, length in draw(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=2)):
            a = MARCH + timedelta(days=start)
            spans.append(f'{{ from = "{a}", to = "{a + timedelta(days=length)}" }}')
        lines.append(f"absences = [{', '.join(spans)}]")
    for i in range(draw(st.integers(1, 3))):
        pool = draw(st.lists(st.sampled_from(reps), min_size=1, unique=True))
        weights = ", ".join(f"{rep} = {draw(st.integers(1, 5))}" for rep in pool)
        lines += ["[[routing.rules]]", f'id = "rule{i}"', f"pool = {{ {weights} }}"]
        if draw(st.booleans()):
            lines.append(f"when = {{ country = {draw(st.lists(st.sampled_from(['DE', 'FR', 'JP']), min_size=1))} }}")
        if draw(st.booleans()):
            lines.append('sticky = "account"')
    return parse_policy("\n".join(lines))


leads = st.fixed_dictionaries({"country": st.sampled_from(["DE", "FR", "JP"]),
                               "account_key": st.sampled_from([None, "a", "b", "c"])})
triggers = st.lists(st.tuples(st.integers(0, 36 * 3600), leads, st.integers(0, 3), st.booleans()),
                    min_size=1, max_size=40)


def oracle_excluded(policy: Policy, rep: str, at: datetime, held: int, exclude: str | None) -> str | None:
    """The exclusion reason from the definitions, read straight off the policy."""
    found = policy.reps[rep]
    calendar = policy.calendars[found.calendar]
    local = at.astimezone(ZoneInfo(calendar.timezone))
    minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 60e6
    if rep == exclude:
        return "breached"
    if any(a.start <= local.date() < a.end for a in found.absences):
        return "absent"
    if not any(s <= minute < e for s, e in calendar.hours[local.weekday()]):
        return "outside_hours"
    if found.capacity is not None and held >= found.capacity:
        return "at_capacity"
    return None


@settings(max_examples=150, deadline=None)
@given(policies(), triggers, st.data())
def test_no_rep_is_chosen_while_absent_outside_hours_or_at_capacity(
        policy: Policy, steps: list[tuple[int, dict[str, object], int, bool]], data: st.DataObject) -> None:
    at = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    open_leads: dict[str, list[str | None]] = {}
    decisions: list[Assigned] = []
    for gap, lead, closes, breach in steps:
        at += timedelta(seconds=gap)
        for _ in range(closes):  # some open leads leave an open stage
            holders = sorted(r for r, held in open_leads.items() if held)
            if holders:
                rep = data.draw(st.sampled_from(holders))
                open_leads[rep].pop(data.draw(st.integers(0, len(open_leads[rep]) - 1)))
        exclude = data.draw(st.sampled_from(sorted(policy.reps))) if breach else None
        decision = route(policy, lead, at, open_leads, fold_currents(decisions), exclude=exclude)
        if decision is None:
            continue
        rule = next(r for r in policy.routing.rules if r.id == decision.rule)  # type: ignore[union-attr]
        reasons = {rep: oracle_excluded(policy, rep, at, len(open_leads.get(rep, ())), exclude)
                   for rep, _ in rule.pool}
        assert {e.rep: e.reason for e in decision.excluded} == {r: why for r, why in reasons.items() if why}
        for why in {e.reason for e in decision.excluded}:
            event(f"excluded {why}")
        event(decision.method if isinstance(decision, Assigned) else "queued")
        if isinstance(decision, Assigned):
            assert [c.rep for c in decision.candidates] == sorted(r for r, why in reasons.items() if why is None)
            if decision.method != "fallback":
                assert reasons[decision.rep] is None  # never absent, outside hours, at capacity or breached
            decisions.append(decision)
            open_leads.setdefault(decision.rep, []).append(lead["account_key"])  # type: ignore[arg-type]
        else:
            assert all(why is not None for why in reasons.values())


@settings(max_examples=150, deadline=None)
@given(policies(), leads, st.integers(0, 40 * 86400), st.data())
def test_routing_is_deterministic(policy: Policy, lead: dict[str, object], offset: int, data: st.DataObject) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=offset)
    reps = sorted(policy.reps)
    held = {rep: data.draw(st.lists(st.sampled_from([None, "a", "b"]), max_size=3)) for rep in reps}
    currents = {f"rule{i}": {rep: data.draw(st.integers(-10, 10)) for rep in reps} for i in range(3)}
    exclude = data.draw(st.none() | st.sampled_from(reps))
    first = route(policy, lead, at, held, currents, exclude=exclude)
    # the same inputs, built again in another order, and the policy parsed again
    again = route(parse_policy(policy.source), dict(reversed(list(lead.items()))), at.astimezone(TOKYO),
                  dict(reversed(list(held.items()))), {k: dict(reversed(list(v.items()))) for k, v in currents.items()},
                  exclude=exclude)
    assert first == again
    assert release_instant(policy, lead, at, held, exclude=exclude) == release_instant(
        policy, lead, at, held, exclude=exclude)


ALWAYS = """
[calendars.always]
timezone = "UTC"
[calendars.always.hours]
mon = "00:00-24:00"
tue = "00:00-24:00"
wed = "00:00-24:00"
thu = "00:00-24:00"
fri = "00:00-24:00"
sat = "00:00-24:00"
sun = "00:00-24:00"
"""


def constant_pool(weights: dict[str, int]) -> Policy:
    reps = "".join(f'[reps.{rep}]\ncalendar = "always"\n' for rep in weights)
    pool = ", ".join(f"{rep} = {w}" for rep, w in weights.items())
    return parse_policy(ALWAYS + reps + f'[[routing.rules]]\nid = "all"\npool = {{ {pool} }}\n')


def shares(weights: dict[str, int], n: int) -> list[Counter[str]]:
    """Cumulative assignment counts after each of n decisions over a constant candidate set."""
    policy, at = constant_pool(weights), datetime(2026, 3, 2, tzinfo=UTC)
    counts: Counter[str] = Counter()
    out = []
    currents: dict[str, dict[str, int]] = {}
    for _ in range(n):
        decision = route(policy, {}, at, {}, currents)
        assert isinstance(decision, Assigned)
        currents = {"all": advance(currents.get("all", {}), decision)}
        counts[decision.rep] += 1
        out.append(counts.copy())
    return out


weight_maps = st.dictionaries(st.sampled_from([f"r{i}" for i in range(8)]), st.integers(1, 12), min_size=1,
                              max_size=8)


@settings(max_examples=150, deadline=None)
@given(weight_maps, st.integers(1, 150))
def test_over_a_constant_candidate_set_shares_follow_the_weights(weights: dict[str, int], n: int) -> None:
    """Over any prefix a rep is never ahead of its weight share by one assignment or more, and every run
    of W decisions (W = the sum of the weights) gives each rep exactly its weight.

    (Why not "within one either way": the current values sum to 0 and a winner's value before it shrinks
    is the maximum, so every value stays above −W — hence never one assignment ahead; smooth weighted
    round robin can fall behind by one or more, see the next test.)
    """
    total = sum(weights.values())
    for k, counts in enumerate(shares(weights, n), start=1):
        for rep, w in weights.items():
            assert counts[rep] - Fraction(k * w, total) < 1
        if k % total == 0:
            assert all(counts[rep] == w * k // total for rep, w in weights.items())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 120))
def test_a_pool_of_two_stays_within_one_assignment_of_its_weight_share(a: int, b: int, n: int) -> None:
    for k, counts in enumerate(shares({"p": a, "q": b}, n), start=1):
        assert abs(counts["p"] - Fraction(k * a, a + b)) < 1


@pytest.mark.parametrize(("weights", "after", "rep", "behind"), [
    ({"a": 1, "b": 1, "c": 1, "d": 6, "e": 6}, 10, "e", Fraction(1)),
    ({"r0": 1, "r1": 9, "r2": 3, "r3": 3, "r4": 10, "r5": 2, "r6": 50, "r7": 50}, 113, "r7", Fraction(73, 64)),
])
def test_smooth_round_robin_can_fall_one_assignment_behind(weights: dict[str, int], after: int, rep: str,
                                                           behind: Fraction) -> None:
    """The algorithm of §9.2 as specified: with five or more reps a rep can lag its weight share by a whole
    assignment (pinned so a change of algorithm is a deliberate one)."""
    counts = shares(weights, after)[-1]
    assert Fraction(after * weights[rep], sum(weights.values())) - counts[rep] == behind
