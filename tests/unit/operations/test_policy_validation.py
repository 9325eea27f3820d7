"""The policy file (SPEC §9.1): the example parses; every invalid case is refused naming its key path."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lifecycle.domain.stage import Stage
from lifecycle.operations.policy import Condition, PolicyError, diff, matches, parse_policy

# SPEC §9.1's example, with the rep `jonas` its pool names (the example alone does not define him).
EXAMPLE = """
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-16:00" }
holidays = ["2026-12-24", "2026-12-25", "2027-01-01"]

[reps.maria]
calendar = "emea"
capacity = 40                      # open leads: owned and in mql, sal or sql
absences = [{ from = "2026-03-02", to = "2026-03-07" }]   # [from, to), dates in the rep's calendar zone

[reps.jonas]
calendar = "emea"

[routing]
on = ["mql"]
[[routing.rules]]
id = "enterprise-dach"
when = { country = ["DE", "AT", "CH"], employees_gte = 1000 }
pool = { maria = 2, jonas = 1 }
sticky = "account"
fallback = "queue"

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "5m"
clock = "business"
warn_at = 0.8
on_breach = ["alert", "reassign"]

[scoring]
threshold = 70
auto_mql = true
[[scoring.fit]]
id = "large-company"
when = { employees_gte = 200 }
points = 20
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 15
half_life = "30d"
max_per_day = 30

[fx]
USD = [{ from = "2026-01-01", rate = 0.92 }]
"""

CAL = """
[calendars.emea]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00" }
[reps.maria]
calendar = "emea"
[reps.jonas]
calendar = "emea"
"""


def refused(text: str) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value.problems


def test_the_spec_example_parses_into_typed_objects() -> None:
    policy = parse_policy(EXAMPLE)
    emea = policy.calendars["emea"]
    assert emea.timezone == "Europe/Berlin"
    assert emea.hours[0] == ((8 * 60, 18 * 60),) and emea.hours[4] == ((8 * 60, 16 * 60),)
    assert emea.hours[5] == () and emea.hours[6] == ()
    assert date(2026, 12, 24) in emea.holidays
    maria = policy.reps["maria"]
    assert maria.capacity == 40 and maria.absences[0].start == date(2026, 3, 2)
    assert policy.reps["jonas"].capacity is None
    assert policy.routing is not None and policy.routing.on == (Stage.MQL,)
    rule = policy.routing.rules[0]
    assert rule.pool == (("jonas", 1), ("maria", 2)) and rule.sticky == "account" and rule.fallback is None
    assert rule.when == (Condition("country", "in", ("DE", "AT", "CH")), Condition("employees", "gte", (1000,)))
    sla = policy.sla[0]
    assert (sla.start, sla.stop, sla.target, sla.clock, sla.warn_at, sla.on_breach) == (
        "assigned", frozenset({"contacted"}), timedelta(minutes=5), "business", 0.8, ("alert", "reassign"))
    assert policy.scoring is not None and policy.scoring.threshold == 70 and policy.scoring.auto_mql
    assert policy.scoring.behaviour[0].half_life == timedelta(days=30)
    assert policy.fx["USD"][0].rate == 0.92


def test_the_spec_example_as_printed_is_refused_for_its_undefined_rep() -> None:
    problems = refused(EXAMPLE.replace('[reps.jonas]\ncalendar = "emea"\n', ""))
    assert problems == ("routing.rules[0].pool.jonas: unknown rep 'jonas' (reps: maria)",)


def test_an_empty_policy_has_no_behaviour() -> None:
    policy = parse_policy("")
    assert policy.routing is None and policy.scoring is None and policy.sla == () and not policy.reps


INVALID = [
    # unknown keys, at every level
    ("[owner]\nx = 1", "owner: unknown key (expected one of: calendars, reps, routing, sla, scoring, fx)"),
    (CAL + "[calendars.apac]\ntimezone = 'Asia/Tokyo'\nhours = { mon = '09:00-17:00' }\ncolour = 'red'",
     "calendars.apac.colour: unknown key"),
    (CAL.replace('[reps.jonas]\ncalendar = "emea"', '[reps.jonas]\ncalendar = "emea"\nteam = "a"'),
     "reps.jonas.team: unknown key"),
    (CAL + "[reps.ann]\ncalendar = 'emea'\nabsences = [{ from = 2026-01-01, to = 2026-01-02, why = 'x' }]",
     "reps.ann.absences[0].why: unknown key"),
    (CAL + "[routing]\ntimeout = 5", "routing.timeout: unknown key"),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1 }\npriority = 1", "routing.rules[0].priority: unknown key"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\nescalate = true",
     "sla[0].escalate: unknown key"),
    ("[scoring]\nmodel = 'x'", "scoring.model: unknown key"),
    ("[[scoring.fit]]\nid = 'f'\npoints = 1\nhalf_life = '3d'", "scoring.fit[0].half_life: unknown key"),
    ("[[scoring.behaviour]]\nid = 'b'\npoints = 1\ndecay = '3d'", "scoring.behaviour[0].decay: unknown key"),
    ("[fx]\nUSD = [{ from = 2026-01-01, rate = 0.9, source = 'ecb' }]", "fx.USD[0].source: unknown key"),
    # reps in pools and fallbacks
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1, nobody = 1 }",
     "routing.rules[0].pool.nobody: unknown rep 'nobody' (reps: jonas, maria)"),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1 }\nfallback = 'nobody'",
     'routing.rules[0].fallback: unknown rep "nobody" (expected "queue" or a rep id: jonas, maria)'),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = {}", "routing.rules[0].pool: must name at least one rep"),
    (CAL + "[[routing.rules]]\nid = 'r'", "routing.rules[0].pool: required"),
    # weights
    (CAL + "[[routing.rules]]\nid = 'a'\npool = { jonas = 1 }\n[[routing.rules]]\nid = 'b'\npool = { maria = 0 }",
     "routing.rules[1].pool.maria: weight must be a positive integer, got 0"),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = -2 }",
     "routing.rules[0].pool.maria: weight must be a positive integer, got -2"),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1.5 }",
     "routing.rules[0].pool.maria: weight must be a positive integer, got 1.5"),
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = true }",
     "routing.rules[0].pool.maria: weight must be a positive integer, got true"),
    # hours
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '8-18' }",
     "calendars.c.hours.mon: malformed hours '8-18': expected \"HH:MM-HH:MM\""),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '08:00-25:00' }",
     "calendars.c.hours.mon: malformed hours '08:00-25:00': a time is out of range"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '18:00-08:00' }",
     "calendars.c.hours.mon: hours '18:00-08:00': the end must be after the start"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { tue = '09:00-09:00' }",
     "calendars.c.hours.tue: hours '09:00-09:00': the end must be after the start"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { wed = '08:00-12:00, 11:00-18:00' }",
     "calendars.c.hours.wed: hours '11:00-18:00' overlap '08:00-12:00'"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { thu = ['13:00-18:00', '08:00-13:30'] }",
     "calendars.c.hours.thu[0]: hours '13:00-18:00' overlap '08:00-13:30'"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { monday = '08:00-18:00' }",
     "calendars.c.hours.monday: unknown key (expected one of: mon, tue, wed, thu, fri, sat, sun)"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = 8 }",
     "calendars.c.hours.mon: must be a string or a non-empty list of strings, got 8"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { sat = [] }",
     "calendars.c.hours: no working hours on any day"),
    ("[calendars.c]\ntimezone = 'UTC'", "calendars.c.hours: required"),
    # time zones
    ("[calendars.c]\ntimezone = 'Europe/Berlinn'\nhours = { mon = '08:00-18:00' }",
     'calendars.c.timezone: unknown time zone "Europe/Berlinn"'),
    ("[calendars.c]\ntimezone = '+02:00'\nhours = { mon = '08:00-18:00' }",
     'calendars.c.timezone: unknown time zone "+02:00"'),
    ("[calendars.c]\ntimezone = '../../etc/passwd'\nhours = { mon = '08:00-18:00' }",
     "calendars.c.timezone: unknown time zone"),
    ("[calendars.c]\nhours = { mon = '08:00-18:00' }", "calendars.c.timezone: required"),
    # duplicate ids
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1 }\n[[routing.rules]]\nid = 'r'\npool = { jonas = 1 }",
     "routing.rules[1].id: duplicate routing rule id 'r' (also routing.rules[0])"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\n"
     "[[sla]]\nid = 's'\nstart = 'mql'\nstop = 'assigned'\ntarget = '1h'",
     "sla[1].id: duplicate sla rule id 's' (also sla[0])"),
    ("[[scoring.fit]]\nid = 'x'\npoints = 1\n[[scoring.behaviour]]\nid = 'x'\npoints = 2",
     "scoring.behaviour[0].id: duplicate scoring rule id 'x' (also scoring.fit[0])"),
    (CAL + "[[routing.rules]]\nid = 'two words'\npool = { maria = 1 }",
     "routing.rules[0].id: must be a non-empty name without spaces, got 'two words'"),
    # durations
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5'",
     "sla[0].target: bad duration '5': expected Ns, Nm, Nh or Nd"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5 min'",
     "sla[0].target: bad duration '5 min'"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '1h30m'",
     "sla[0].target: bad duration '1h30m'"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '-5m'", "sla[0].target: bad duration '-5m'"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '0m'",
     "sla[0].target: bad duration '0m': must be positive"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = 300",
     'sla[0].target: bad duration 300: a string such as "5m"'),
    ("[[scoring.behaviour]]\nid = 'b'\npoints = 1\nhalf_life = '2w'", "scoring.behaviour[0].half_life: bad duration '2w'"),
    # dates
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '08:00-18:00' }\nholidays = ['2026-13-01']",
     'calendars.c.holidays[0]: bad date "2026-13-01": expected YYYY-MM-DD'),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '08:00-18:00' }\nholidays = ['2026-12-24', '24.12.2026']",
     'calendars.c.holidays[1]: bad date "24.12.2026"'),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = '08:00-18:00' }\nholidays = [2026-12-24T10:00:00]",
     "calendars.c.holidays[0]: bad date 2026-12-24T10:00:00"),
    (CAL + "[reps.ann]\ncalendar = 'emea'\nabsences = [{ from = 'soon', to = 2026-01-02 }]",
     'reps.ann.absences[0].from: bad date "soon"'),
    (CAL + "[reps.ann]\ncalendar = 'emea'\nabsences = [{ from = 2026-03-07, to = 2026-03-02 }]",
     "reps.ann.absences[0].to: 2026-03-02 must be after from = 2026-03-07 (the range is [from, to))"),
    (CAL + "[reps.ann]\ncalendar = 'emea'\nabsences = [{ from = 2026-03-07, to = 2026-03-07 }]",
     "reps.ann.absences[0].to: 2026-03-07 must be after from = 2026-03-07"),
    (CAL + "[reps.ann]\ncalendar = 'emea'\nabsences = [{ from = 2026-03-07 }]", "reps.ann.absences[0].to: required"),
    ("[fx]\nUSD = [{ from = '2026-02-30', rate = 0.9 }]", 'fx.USD[0].from: bad date "2026-02-30"'),
    # warn_at
    *[(f"[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\nwarn_at = {v}",
       f"sla[0].warn_at: must be a fraction of the target strictly between 0 and 1, got {shown}")
      for v, shown in (("0", "0"), ("1", "1"), ("1.5", "1.5"), ("-0.2", "-0.2"), ("true", "true"),
                       ("'80%'", '"80%"'))],
    # start / stop kinds
    ("[[sla]]\nid = 's'\nstart = 'owned'\nstop = 'contacted'\ntarget = '5m'",
     'sla[0].start: unknown event kind "owned" (kinds: assigned,'),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = ['contacted', 'called']\ntarget = '5m'",
     'sla[0].stop[1]: unknown event kind "called"'),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = ['assigned']\ntarget = '5m'",
     "sla[0].stop: 'assigned' is also the start kind"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = []\ntarget = '5m'",
     "sla[0].stop: must be a string or a non-empty list of strings, got []"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\ntarget = '5m'", "sla[0].stop: required"),
    # on_breach, clock, calendar of a rule
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\non_breach = ['alert', 'page']",
     "sla[0].on_breach[1]: unknown breach action 'page' (expected: alert, reassign)"),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\nclock = 'wall'",
     'sla[0].clock: must be "business" or "calendar" (24x7), got "wall"'),
    ("[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\nclock = 'business'\ncalendar = 'x'",
     'sla[0].calendar: unknown calendar "x" (calendars: none defined)'),
    (CAL + "[[sla]]\nid = 's'\nstart = 'assigned'\nstop = 'contacted'\ntarget = '5m'\nclock = 'calendar'\n"
     "calendar = 'emea'", 'sla[0].calendar: only a clock = "business" uses a calendar'),
    ("[sla]\nid = 's'", "sla: must be an array of tables ([[sla]]), got a table"),
    # when keys
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { size = 'big' }\npool = { maria = 1 }",
     "routing.rules[0].when.size: unknown when key (expected one of: country, industry, employees,"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { touch_kind = 'webinar' }\npool = { maria = 1 }",
     "routing.rules[0].when.touch_kind: unknown when key (expected one of: country, industry, employees, "
     "employees_gte, employees_lte, role, language, email_domain_kind, account_key) (touch_kind, channel and "
     "campaign are for scoring.behaviour rules)"),
    ("[[scoring.fit]]\nid = 'f'\nwhen = { channel = 'paid' }\npoints = 5", "scoring.fit[0].when.channel: unknown when key"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { employees_gte = 'big' }\npool = { maria = 1 }",
     'routing.rules[0].when.employees_gte: must be a number (an inclusive bound), got "big"'),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { employees_gte = 500, employees_lte = 100 }\npool = { maria = 1 }",
     "routing.rules[0].when: employees_gte 500 is above employees_lte 100: the rule can never match"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { country = ['DE', 'at'] }\npool = { maria = 1 }",
     'routing.rules[0].when.country[1]: a country is an ISO 3166-1 alpha-2 code in capitals (e.g. DE), got "at"'),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { language = 'DE' }\npool = { maria = 1 }",
     "routing.rules[0].when.language: a language is an ISO 639-1 code in lower case"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { email_domain_kind = 'corporate' }\npool = { maria = 1 }",
     'routing.rules[0].when.email_domain_kind: must be "free" or "business", got "corporate"'),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { industry = [] }\npool = { maria = 1 }",
     "routing.rules[0].when.industry: must be a value or a non-empty list of values"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = { employees = nan }\npool = { maria = 1 }",
     "routing.rules[0].when.employees: must be a number, got nan"),
    ("[calendars.c]\ntimezone = 'UTC'\nhours = { mon = 08:00:00 }",
     "calendars.c.hours.mon: must be a string or a non-empty list of strings, got 08:00:00"),
    (CAL + "[[routing.rules]]\nid = 'r'\nwhen = 'DE'\npool = { maria = 1 }",
     "routing.rules[0].when: must be a table, got str"),
    # the rest of routing, reps, scoring, fx
    (CAL + "[[routing.rules]]\nid = 'r'\npool = { maria = 1 }\nsticky = 'contact'",
     'routing.rules[0].sticky: must be "account" (or left out), got "contact"'),
    (CAL + "[routing]\non = ['mql', 'hot']", "routing.on[1]: unknown stage 'hot'"),
    (CAL + "[reps.ann]\ncalendar = 'apac'", 'reps.ann.calendar: unknown calendar "apac" (calendars: emea)'),
    (CAL + "[reps.ann]\ncapacity = 5", "reps.ann.calendar: required"),
    (CAL + "[reps.ann]\ncalendar = 'emea'\ncapacity = -1",
     "reps.ann.capacity: capacity must be a non-negative integer (open leads), got -1"),
    ("[scoring]\nthreshold = 101", "scoring.threshold: threshold must be an integer from 0 to 100, got 101"),
    ("[scoring]\nauto_mql = 'yes'", 'scoring.auto_mql: must be true or false, got "yes"'),
    ("[[scoring.behaviour]]\nid = 'b'\npoints = 1\nmax_per_day = 0",
     "scoring.behaviour[0].max_per_day: max_per_day must be a positive integer, got 0"),
    ("[[scoring.fit]]\nid = 'f'\npoints = 'ten'", 'scoring.fit[0].points: points must be an integer, got "ten"'),
    ("[fx]\nusd = [{ from = 2026-01-01, rate = 0.9 }]", "fx.usd: a currency is a three-letter ISO 4217 code"),
    ("[fx]\nUSD = [{ from = 2026-01-01, rate = 0 }]", "fx.USD[0].rate: must be a positive number, got 0"),
    ("[fx]\nUSD = [{ from = 2026-01-01, rate = 0.9 }, { from = 2026-01-01, rate = 0.8 }]",
     "fx.USD[1].from: a second rate from 2026-01-01"),
    # not TOML at all
    ("[routing\non = 1", "(file): not valid TOML: "),
]


@pytest.mark.parametrize(("text", "expected"), INVALID, ids=[e.split(":")[0] for _, e in INVALID])
def test_an_invalid_policy_is_refused_naming_the_key_path(text: str, expected: str) -> None:
    problems = refused(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_collected_and_listed_in_one_error() -> None:
    text = EXAMPLE.replace("maria = 2", "maria = 0").replace('target = "5m"', 'target = "5 minutes"').replace(
        "warn_at = 0.8", "warn_at = 2").replace('"Europe/Berlin"', '"Europe/Berlim"')
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "calendars.emea.timezone", "routing.rules[0].pool.maria", "sla[0].target", "sla[0].warn_at"]
    message = str(caught.value)
    assert message.startswith("policy refused (4 problems):\n  - calendars.emea.timezone: unknown time zone")
    assert isinstance(caught.value, ValueError)


def test_hours_forms_a_day_off_adjacent_spans_and_an_end_of_day() -> None:
    policy = parse_policy("[calendars.c]\ntimezone = 'UTC'\n"
                          "hours = { mon = '08:00-12:00, 12:00-18:00', tue = ['13:00-17:00', '08:00-12:00'], "
                          "wed = [], sun = '00:00-24:00' }")
    hours = policy.calendars["c"].hours
    assert hours[0] == ((480, 1080),)
    assert hours[1] == ((480, 720), (780, 1020))
    assert hours[2] == () and hours[6] == ((0, 1440),)


def test_optional_parts_take_their_documented_defaults() -> None:
    policy = parse_policy(CAL + "[routing]\n[[routing.rules]]\nid = 'all'\npool = { maria = 1 }\n"
                                "[[sla]]\nid = 's'\nstart = 'mql'\nstop = 'assigned'\ntarget = '1h'")
    assert policy.routing is not None and policy.routing.on == (Stage.MQL,)
    assert policy.routing.rules[0].when == () and policy.routing.rules[0].fallback is None
    sla = policy.sla[0]
    assert sla.clock == "calendar" and sla.warn_at is None and sla.on_breach == () and sla.calendar is None
    assert sla.stop == frozenset({"assigned"})  # a single kind may be written without brackets


# ---------------------------------------------------------------------------------------------- canonical form


def test_the_canonical_form_ignores_comments_layout_key_order_and_date_spelling() -> None:
    a = parse_policy(EXAMPLE)
    reordered = EXAMPLE.replace('holidays = ["2026-12-24", "2026-12-25", "2027-01-01"]',
                                "holidays = [2026-12-24, 2026-12-25, 2027-01-01]  # TOML dates").replace(
        "threshold = 70\nauto_mql = true", "auto_mql = true\n\n\nthreshold   =   70")
    b = parse_policy(reordered)
    assert a.canonical == b.canonical and a.canonical_sha256 == b.canonical_sha256
    assert a.sha256 != b.sha256  # the recorded digest is of the file as published, byte for byte
    assert len(a.sha256) == 64 and a.sha256 == parse_policy(EXAMPLE).sha256
    changed = parse_policy(EXAMPLE.replace("maria = 2", "maria = 3"))
    assert changed.canonical_sha256 != a.canonical_sha256
    assert a.document()["routing"]["rules"][0]["pool"] == {"maria": 2, "jonas": 1}


def test_diff_names_the_key_paths_added_removed_and_changed() -> None:
    a = parse_policy(EXAMPLE)
    b = parse_policy(
        EXAMPLE.replace("maria = 2", "maria = 3")
        .replace('holidays = ["2026-12-24", "2026-12-25", "2027-01-01"]', 'holidays = ["2026-12-24"]')
        .replace("[reps.jonas]\ncalendar = \"emea\"\n", "[reps.jonas]\ncalendar = \"emea\"\ncapacity = 10\n")
        .replace("[fx]\nUSD = [{ from = \"2026-01-01\", rate = 0.92 }]\n", "")
        + '\n[[routing.rules]]\nid = "everyone"\npool = { jonas = 1 }\n'
    )
    changes = {(c.path, c.kind) for c in diff(a, b)}
    assert changes == {
        ("calendars.emea.holidays", "changed"),
        ("fx", "removed"),
        ("reps.jonas.capacity", "added"),
        ("routing.rules[id=enterprise-dach].pool.maria", "changed"),
        ("routing.rules[id=everyone]", "added"),
    }
    pool = next(c for c in diff(a, b) if c.path.endswith("pool.maria"))
    assert (pool.before, pool.after) == (2, 3)
    assert str(pool) == "~ routing.rules[id=enterprise-dach].pool.maria: 2 → 3"
    assert diff(a, parse_policy(EXAMPLE)) == ()


def test_diff_reports_a_reordering_of_routing_rules() -> None:
    two = CAL + "[[routing.rules]]\nid = 'a'\npool = { maria = 1 }\n[[routing.rules]]\nid = 'b'\npool = { jonas = 1 }\n"
    swapped = CAL + "[[routing.rules]]\nid = 'b'\npool = { jonas = 1 }\n[[routing.rules]]\nid = 'a'\npool = { maria = 1 }\n"
    changes = diff(parse_policy(two), parse_policy(swapped))
    assert [(c.path, c.kind, c.before, c.after) for c in changes] == [
        ("routing.rules", "reordered", ["a", "b"], ["b", "a"])]


# ---------------------------------------------------------------------------------------------- when


def when_of(text: str) -> tuple[Condition, ...]:
    policy = parse_policy(CAL + f"[[routing.rules]]\nid = 'r'\nwhen = {text}\npool = {{ maria = 1 }}")
    assert policy.routing is not None
    return policy.routing.rules[0].when


@pytest.mark.parametrize(("when", "attributes", "expected"), [
    ("{}", {}, True),
    ("{ country = ['DE', 'AT'] }", {"country": "AT"}, True),
    ("{ country = ['DE', 'AT'] }", {"country": "FR"}, False),
    ("{ country = 'DE' }", {"country": "DE"}, True),
    ("{ country = 'DE' }", {}, False),
    ("{ country = 'DE' }", {"country": None}, False),
    ("{ employees_gte = 1000 }", {"employees": 1000}, True),
    ("{ employees_gte = 1000 }", {"employees": 999}, False),
    ("{ employees_lte = 50 }", {"employees": 50}, True),
    ("{ employees_lte = 50 }", {"employees": 51}, False),
    ("{ employees_gte = 10, employees_lte = 50 }", {"employees": 30}, True),
    ("{ employees_gte = 10 }", {}, False),
    ("{ employees_gte = 10 }", {"employees": "many"}, False),
    ("{ employees_gte = 0 }", {"employees": True}, False),
    ("{ employees = [10, 20] }", {"employees": 20}, True),
    ("{ country = 'DE', employees_gte = 1000 }", {"country": "DE", "employees": 5}, False),
    ("{ country = 'DE', employees_gte = 1000 }", {"country": "DE", "employees": 5000, "role": "cto"}, True),
    ("{ email_domain_kind = 'business', account_key = 'k1' }", {"email_domain_kind": "business", "account_key": "k1"},
     True),
])
def test_when_matching(when: str, attributes: dict[str, object], expected: bool) -> None:
    assert matches(when_of(when), attributes) is expected


def test_behaviour_rules_match_a_touch_and_the_lead() -> None:
    policy = parse_policy("[[scoring.behaviour]]\nid = 'b'\nwhen = { touch_kind = 'webinar_attended', "
                          "channel = ['events', 'web'], country = 'DE' }\npoints = 5")
    assert policy.scoring is not None
    when = policy.scoring.behaviour[0].when
    assert matches(when, {"touch_kind": "webinar_attended", "channel": "web", "country": "DE"})
    assert not matches(when, {"touch_kind": "webinar_attended", "channel": "web"})
    assert not matches(when, {"touch_kind": "demo", "channel": "web", "country": "DE"})
