"""Drill-down (`leads --reached STAGE`): paging through a funnel cell lists exactly the leads the
funnel counts in it, once each, in entry-time order, each with the entry that counted.

A property over generated histories (leads walking the stage machine, some events occurring
out of order) with generated windows, modes, groups, as-of and known-at instants, checked
against the funnel's own counts and against a plain re-computation from the exported events;
and a hand-written scenario whose cells hold known leads."""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.application import LeadLedger
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from projections.query import Query, QueryError
from projections.service import Analytics
from tests.support.env import POSTGRES_DSN, SKIP_NO_POSTGRES, TEST_SECRET, sqlite_settings
from tests.support.reference import START, Ev, by_lead, capture, exported, fmt, group, inside

#: the triggers each stage allows (docs/contract.md, "Stages and triggers")
ALLOWED = {
    "captured": ("nurture", "qualify_mql", "disqualify"),
    "nurtured": ("qualify_mql", "disqualify"),
    "mql": ("accept", "reject", "disqualify"),
    "sal": ("reject", "qualify_sql", "recycle", "disqualify"),
    "sql": ("win", "lose", "recycle", "disqualify"),
    "won": ("recycle", "disqualify"),
    "recycled": ("nurture", "qualify_mql", "disqualify"),
    "lost": ("recycle", "disqualify"),
    "disqualified": (),
}
TARGET = {"nurture": "nurtured", "qualify_mql": "mql", "accept": "sal", "reject": "recycled", "qualify_sql": "sql",
          "win": "won", "lose": "lost", "recycle": "recycled", "disqualify": "disqualified"}
BANT = {"budget": "approved", "authority": "CFO", "need": "reporting", "timeline": "Q3"}
HOUR = timedelta(hours=1)


def message(kind: str, n: int, email: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"drill-{n}", "source": "drill-test",
            "type": f"leadledger.inbound.{kind}.v1", "time": fmt(at), "data": {"email": email, **data}}


def transition(trigger: str) -> tuple[str, dict[str, Any]]:
    extra: dict[str, Any] = {
        "qualify_mql": {"override": True, "reason": "drill test"},
        "qualify_sql": {"bant": BANT},
        "win": {"amount": 1000, "currency": "EUR"},
    }.get(trigger, {})
    if trigger in ("reject", "lose", "recycle", "disqualify"):
        extra = {"reason": "drill test"}
    return "transition", {"trigger": trigger, **extra}


@st.composite
def lead_messages(draw: st.DrawFn, index: int) -> list[tuple[str, datetime, dict[str, Any]]]:
    """One lead: its capture, then a walk through the stage machine (an owner assigned before each
    accept), each step some hours after the one before or, now and then, before it."""
    at = START + timedelta(hours=draw(st.integers(0, 24 * 20)))
    out = [("capture", at, {"channel": draw(st.sampled_from(["webinar", "social"])),
                            **({} if (c := draw(st.sampled_from([None, "a", "b"]))) is None else {"campaign": c})})]
    stage = "captured"
    for _ in range(draw(st.integers(1, 8))):
        if not ALLOWED[stage]:
            break
        trigger = draw(st.sampled_from(ALLOWED[stage]))
        at += HOUR * draw(st.integers(0, 24 * 6))
        if trigger == "accept":
            out.append(("assign", at, {"owner": draw(st.sampled_from(["ana", "ben"]))}))
        kind, data = transition(trigger)
        out.append((kind, at, data))
        stage = TARGET[trigger]
    return out


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple[str, datetime, dict[str, Any]]]]:
    return [draw(lead_messages(i)) for i in range(draw(st.integers(2, 9)))]


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    """A funnel query's window: from/to (days after START, either may be open), mode, grouping,
    as-of (hours after START) and a known-at choice (a fraction of the events, in store order)."""
    start = draw(st.none() | st.integers(0, 30))
    end = draw(st.none() | st.integers(1, 50))
    if start is not None and end is not None and start >= end:
        start, end = end - 1, start + 1
    day = timedelta(days=1)
    return {"from_": None if start is None else START + start * day, "to": None if end is None else START + end * day,
            "mode": draw(st.sampled_from(["cohort", "period"])), "by": draw(st.sampled_from([None, "channel", "campaign", "owner"])),
            "as_of": draw(st.none() | st.integers(0, 24 * 50).map(lambda h: START + h * HOUR)),
            "known": draw(st.none() | st.floats(0, 1)), "limit": draw(st.integers(1, 4))}


def ingest(app: LeadLedger, leads: list[list[tuple[str, datetime, dict[str, Any]]]]) -> None:
    """Lead by lead, each lead's messages in the order drawn (so their occurred times may disagree)."""
    msgs = []
    for i, lead in enumerate(leads):
        email = f"drill-{i}@example.org"
        msgs += [message(kind, len(msgs) + j, email, at, **data) for j, (kind, at, data) in enumerate(lead)]
    handler = InboundHandler(app, batch_size=50)
    list(handler.handle_stream((i, orjson.dumps(m)) for i, m in enumerate(msgs, start=1)))


def page_through(analytics: Analytics, q: Query) -> tuple[list[dict[str, Any]], int]:
    """Every lead of the drill-down, page after page (and how many pages)."""
    listed: list[dict[str, Any]] = []
    after, pages = None, 0
    while True:
        page = analytics.leads(Query(**{**q.__dict__, "after": after}))
        pages += 1
        assert len(page["leads"]) <= q.limit
        listed += page["leads"]
        after = page["next"]
        if after is None:
            return listed, pages
        assert len(page["leads"]) == q.limit  # only a full page has a next one
        assert pages <= 10_000


def reference_cells(evs: list[Ev], mode: str, start: datetime | None, end: datetime | None, by: str | None,
                    as_of: datetime | None, known_at: datetime | None) -> dict[tuple[str | None, str], dict[str, str]]:
    """(group key, stage) -> {lead id: the time of the entry that counts it}, from the exported
    events alone: cohort mode a captured-in-window lead's first entry, period mode a lead's first
    entry inside the window."""
    cells: dict[tuple[str | None, str], dict[str, str]] = {}
    for lead, lead_evs in by_lead(evs, as_of, known_at).items():
        c = capture(lead_evs)
        if c is None:
            continue
        if mode == "cohort" and not inside(c.at, start, end):
            continue
        owner: str | None = None  # by owner: the owner at each entry (an acceptance names its own)
        seen: set[str] = set()
        for e in lead_evs:
            stage = e.to_stage
            if stage is not None and stage not in seen and (mode == "cohort" or inside(e.at, start, end)):
                seen.add(stage)
                key = group(c, by)
                if by == "owner":
                    key = (e.data["owner"] if e.name == "LeadAcceptedBySales" else owner) or "(none)"
                cells.setdefault((key, stage), {})[lead] = fmt(e.at) or ""
            if e.name in ("LeadAssigned", "LeadAcceptedBySales"):
                owner = e.data["owner"]
            elif e.name in ("LeadRejectedBySales", "LeadRecycled"):
                owner = None
    return cells


def check_every_cell(analytics: Analytics, evs: list[Ev], w: dict[str, Any]) -> int:
    """Every (group, stage) cell of the funnel paged through; returns the leads listed."""
    known_at = None
    if w["known"] is not None:
        recorded = sorted(e.recorded for e in evs)
        known_at = recorded[min(len(recorded) - 1, int(w["known"] * len(recorded)))]
    window = {k: w[k] for k in ("from_", "to", "mode", "as_of")} | {"known_at": known_at}
    answer = analytics.funnel(Query(by=w["by"], **window))
    expected = reference_cells(evs, w["mode"], w["from_"], w["to"], w["by"], w["as_of"], known_at)
    total = 0
    for g in answer["groups"]:
        for stage, count in g["stages"].items():
            key = g["key"] if w["by"] else None
            if w["by"] == "owner" and key is None:
                key = "(none)"  # the funnel's null owner, as the drill-down names it
            listed, _ = page_through(analytics, Query(reached=stage, by=w["by"], key=key, limit=w["limit"], **window))
            ids = [item["lead_id"] for item in listed]
            assert len(ids) == len(set(ids)) == count, (g["key"], stage)
            order = [(item["entered_at"], item["lead_id"]) for item in listed]
            assert order == sorted(order)
            assert {item["lead_id"]: item["entered_at"] for item in listed} == expected.get((key, stage), {})
            total += count
    assert sum(len(v) for v in expected.values()) == total
    return total


@contextmanager
def fresh_store(backend: str) -> Iterator[Settings]:
    """An empty store of its own per example: a temporary folder, and on PostgreSQL its own schema."""
    with tempfile.TemporaryDirectory(prefix="ll-drill-") as home:
        if backend == "sqlite":
            yield sqlite_settings(Path(home))
            return
        import psycopg

        schema = f"ll_drill_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield Settings(home=Path(home), postgres_dsn=POSTGRES_DSN, postgres_schema=schema, secret=TEST_SECRET)
        finally:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_property(backend: str, leads: list[list[tuple[str, datetime, dict[str, Any]]]],
                 queries: list[dict[str, Any]]) -> None:
    with fresh_store(backend) as s:
        app = bootstrap(s)
        analytics = Analytics(open_read_models(s), app.store)
        try:
            ingest(app, leads)
            evs = exported(app)
            for w in queries:
                check_every_cell(analytics, evs, w)
        finally:
            analytics.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(windows(), min_size=1, max_size=3))
def test_paging_a_cell_lists_exactly_the_leads_the_funnel_counts(
        leads: list[list[tuple[str, datetime, dict[str, Any]]]], queries: list[dict[str, Any]]) -> None:
    run_property("sqlite", leads, queries)


@pytest.mark.postgres
@SKIP_NO_POSTGRES
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(windows(), min_size=1, max_size=2))
def test_paging_a_cell_lists_exactly_the_leads_the_funnel_counts_on_postgresql(
        leads: list[list[tuple[str, datetime, dict[str, Any]]]], queries: list[dict[str, Any]]) -> None:
    run_property("postgres", leads, queries)


def test_the_cells_of_a_simulated_store_page_through(backend_settings: Settings) -> None:
    """Simulated traffic (late touches, recycles): every cell of a few windows, paged by 7."""
    from tests.support.reference import simulated_app

    app = simulated_app(backend_settings, leads=60, seed=21)
    analytics = Analytics(open_read_models(backend_settings), app.store)
    try:
        evs = exported(app)
        mid = sorted(e.at for e in evs)[len(evs) // 2]
        listed = 0
        for w in ({"from_": None, "to": None, "mode": "cohort", "by": "campaign", "as_of": None, "known": None},
                  {"from_": START + timedelta(days=8), "to": START + timedelta(days=20), "mode": "period",
                   "by": "channel", "as_of": mid, "known": None},
                  {"from_": START + timedelta(days=3), "to": None, "mode": "cohort", "by": None, "as_of": None,
                   "known": 0.7}):
            listed += check_every_cell(analytics, evs, {**w, "limit": 7})
        assert listed > 100
    finally:
        analytics.close()
        app.store.close()


# ---------------------------------------------------------------- a scenario with known leads
#
# Days from D0 = Monday 2026-03-02 00:00Z; every MQL by override, every accept after an assignment.
# ada (webinar, q1): captured D0 09:00, mql D1 10:00, sal D2 09:00, rejected D3 (recycled, no owner),
#   mql D10 09:00, sal again D11 09:00 (ana).
# bob (social, no campaign): captured D0 10:00, mql D2 10:00, sal D4 09:00 (ben).
# cy (webinar, no campaign): captured D5 09:00, mql D5 12:00, sal D5 15:00 (cat), disqualified D6.
# eve (webinar, q1): captured D1 09:00, nurtured D2 09:00.
# dee (social, q1): captured D12 09:00, mql D12 10:00, sal D12 11:00 (ana) -- stored last, after `known`.

D0 = datetime(2026, 3, 2, tzinfo=START.tzinfo)


def day(d: int, hour: int = 0) -> datetime:
    return D0 + timedelta(days=d, hours=hour)


def to_sal(mql: datetime, sal: datetime, owner: str) -> list[tuple[str, datetime, dict[str, Any]]]:
    return [transition_at("qualify_mql", mql), ("assign", sal - HOUR, {"owner": owner}), transition_at("accept", sal)]


def transition_at(trigger: str, at: datetime) -> tuple[str, datetime, dict[str, Any]]:
    kind, data = transition(trigger)
    return kind, at, data


SCENARIO = {
    "ada@example.org": [("capture", day(0, 9), {"channel": "webinar", "campaign": "q1"}),
                        *to_sal(day(1, 10), day(2, 9), "ana"), transition_at("reject", day(3, 9)),
                        *to_sal(day(10, 9), day(11, 9), "ana")],
    "bob@example.org": [("capture", day(0, 10), {"channel": "social"}), *to_sal(day(2, 10), day(4, 9), "ben")],
    "cy@example.org": [("capture", day(5, 9), {"channel": "webinar"}), *to_sal(day(5, 12), day(5, 15), "cat"),
                       transition_at("disqualify", day(6, 9))],
    "eve@example.org": [("capture", day(1, 9), {"channel": "webinar", "campaign": "q1"}),
                        transition_at("nurture", day(2, 9))],
}
LATE = {"dee@example.org": [("capture", day(12, 9), {"channel": "social", "campaign": "q1"}),
                            *to_sal(day(12, 10), day(12, 11), "ana")]}


def store_scenario(app: LeadLedger) -> tuple[dict[str, str], datetime]:
    """The scenario stored (dee after `known`); the lead id of each name."""
    from lifecycle.domain.commands import LeadRef

    def send(leads: dict[str, list[tuple[str, datetime, dict[str, Any]]]], first: int) -> None:
        steps = [(email, *step) for email, lead in leads.items() for step in lead]
        msgs = [message(kind, first + i, email, at, **data) for i, (email, kind, at, data) in enumerate(steps)]
        results = list(InboundHandler(app, batch_size=10).handle_stream(
            (i, orjson.dumps(m)) for i, m in enumerate(msgs, start=1)))
        assert all(r.status == "applied" for r in results), results

    send(SCENARIO, 0)
    known = datetime.now(START.tzinfo)
    send(LATE, 1000)
    ids = {email.split("@")[0]: str(app.lead_id_for(LeadRef(email=email))) for email in [*SCENARIO, *LATE]}
    return ids, known


@pytest.fixture
def scenario(backend_settings: Settings) -> Iterator[tuple[Analytics, dict[str, str], datetime]]:
    app = bootstrap(backend_settings)
    ids, known = store_scenario(app)
    analytics = Analytics(open_read_models(backend_settings), app.store)
    yield analytics, ids, known
    analytics.close()
    app.store.close()


def listed(analytics: Analytics, **params: Any) -> list[tuple[str, str]]:
    """(lead id, counted entry time) of every lead of the drill-down, paged by 2."""
    items, _ = page_through(analytics, Query(**{"limit": 2, **params}))
    return [(item["lead_id"], item["entered_at"]) for item in items]


def test_a_hand_written_scenario_lists_the_known_leads_of_each_cell(
        scenario: tuple[Analytics, dict[str, str], datetime]) -> None:
    analytics, ids, known = scenario
    ada, bob, cy, dee, eve = (ids[n] for n in ("ada", "bob", "cy", "dee", "eve"))
    week = {"from_": day(0), "to": day(7)}
    # cohort: captured in the first week, first entry into sal (ada's second one, D11, is not it)
    assert listed(analytics, reached="sal", **week) == [
        (ada, fmt(day(2, 9))), (bob, fmt(day(4, 9))), (cy, fmt(day(5, 15)))]
    assert listed(analytics, reached="sal", by="campaign", key="(none)", **week) == [
        (bob, fmt(day(4, 9))), (cy, fmt(day(5, 15)))]
    assert listed(analytics, reached="sal", by="campaign", key="q1", **week) == [(ada, fmt(day(2, 9)))]
    assert listed(analytics, reached="sal", by="channel", key=" Webinar", **week) == [
        (ada, fmt(day(2, 9))), (cy, fmt(day(5, 15)))]
    assert listed(analytics, reached="captured", by="campaign", key="q1", **week) == [
        (ada, fmt(day(0, 9))), (eve, fmt(day(1, 9)))]
    assert listed(analytics, reached="won", **week) == []
    # period: ada's first entry inside the window counts (her D2 entry is before it)
    assert listed(analytics, reached="sal", mode="period", from_=day(8), to=day(14)) == [
        (ada, fmt(day(11, 9))), (dee, fmt(day(12, 11)))]
    assert listed(analytics, reached="sal", mode="period", from_=day(0), to=day(14)) == [
        (ada, fmt(day(2, 9))), (bob, fmt(day(4, 9))), (cy, fmt(day(5, 15))), (dee, fmt(day(12, 11)))]
    # known-at: dee was stored later
    assert listed(analytics, reached="sal", mode="period", from_=day(0), to=day(14), known_at=known) == [
        (ada, fmt(day(2, 9))), (bob, fmt(day(4, 9))), (cy, fmt(day(5, 15)))]
    assert listed(analytics, reached="mql", by="channel", key="social", known_at=known) == [
        (bob, fmt(day(2, 10)))]


def test_each_listed_lead_shows_its_stage_and_owner_now_or_at_as_of(
        scenario: tuple[Analytics, dict[str, str], datetime]) -> None:
    analytics, ids, _ = scenario
    now = analytics.leads(Query(reached="sal", from_=day(0), to=day(7), limit=10))
    assert [(i["lead_id"], i["stage"], i["owner"]) for i in now["leads"]] == [
        (ids["ada"], "sal", "ana"), (ids["bob"], "sal", "ben"), (ids["cy"], "disqualified", "cat")]
    ada = now["leads"][0]
    assert ada == {"lead_id": ids["ada"], "entered_at": fmt(day(2, 9)), "stage": "sal", "owner": "ana",
                   "score": None, "channel": "webinar", "campaign": "q1", "captured_at": fmt(day(0, 9)),
                   "last_change_at": fmt(day(11, 9))}
    assert now["next"] is None and now["reached"] == "sal" and now["mode"] == "cohort"
    then = analytics.leads(Query(reached="sal", from_=day(0), to=day(7), as_of=day(4, 12), limit=10))
    assert [(i["lead_id"], i["stage"], i["owner"], i["last_change_at"]) for i in then["leads"]] == [
        (ids["ada"], "recycled", None, fmt(day(3, 9))), (ids["bob"], "sal", "ben", fmt(day(4, 9)))]
    assert then["leads"][1]["campaign"] is None  # as the lead list shows a lead without a campaign


def test_pages_end_with_a_cursor_until_the_last(scenario: tuple[Analytics, dict[str, str], datetime]) -> None:
    analytics, ids, _ = scenario
    q = Query(reached="sal", from_=day(0), to=day(7), limit=1)
    first = analytics.leads(q)
    second = analytics.leads(Query(**{**q.__dict__, "after": first["next"]}))
    third = analytics.leads(Query(**{**q.__dict__, "after": second["next"]}))
    assert [p["leads"][0]["lead_id"] for p in (first, second, third)] == [ids["ada"], ids["bob"], ids["cy"]]
    assert isinstance(first["next"], str) and isinstance(second["next"], str) and third["next"] is None
    two = analytics.leads(Query(reached="sal", from_=day(0), to=day(7), limit=3))
    assert len(two["leads"]) == 3 and two["next"] is None  # a full last page has no next one


def test_bad_drill_down_parameters_are_refused_with_what_to_do(
        scenario: tuple[Analytics, dict[str, str], datetime]) -> None:
    analytics, _, _ = scenario
    cell = {"reached": "sal", "from_": day(0), "to": day(7), "limit": 1}
    cursor = analytics.leads(Query(**cell))["next"]
    refusals = [
        (Query(from_=day(0)), "give --reached STAGE"),
        (Query(by="channel"), "give --reached STAGE"),
        (Query(reached="sold"), "--reached must be one of"),
        (Query(reached="sal", stage="sal"), "--stage does not go with --reached"),
        (Query(reached="sal", channel="webinar"), "--by channel|campaign|owner --key KEY"),
        (Query(reached="sal", by="channel"), "--by channel needs --key"),
        (Query(reached="sal", key="webinar"), "--key needs --by"),
        (Query(reached="sal", by="rep", key="ana"), "--by must be one of"),
        (Query(reached="sal", limit=0), "--limit must be between 1 and 10000"),
        (Query(reached="sal", after="not a cursor"), "is not a drill-down cursor"),
        (Query(reached="sal", after="WzEsMl0"), "is not a drill-down cursor"),  # base64 of [1,2]
        (Query(**{**cell, "to": day(8)}, after=cursor), "this cursor pages another drill-down"),
        (Query(**{**cell, "reached": "mql"}, after=cursor), "this cursor pages another drill-down"),
    ]
    for q, message in refusals:
        with pytest.raises(QueryError, match=re.escape(message)):
            analytics.leads(q)
