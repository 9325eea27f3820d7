"""The funnel at a known-at time from the live rows: for generated histories whose events arrive out of
metric order (recorded later, occurred earlier; captures after stage entries; recording times that go
back now and then) and generated (as-of, known-at, window, mode, --by, --interval), the answer from the
live rows cut at K (and the late leads re-derived) equals the one re-derived for every lead and the
plain-Python reference. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from projections.engine.sources import ListSource
from projections.query import Query
from projections.service import Analytics
from schemas.facts import Fact
from tests.integration.projections.test_funnel_counts import (
    DAY,
    ENTRIES,
    EPOCH,
    fresh_runner,
    instants,
    reference_events,
    source_events,
    windows,
)
from tests.support.known_at import fold_and_check_late, known_instants
from tests.support.reference import Ev, Params, ref_funnel

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """(origin day, each lead's facts in arrival order, versions 1..n): half the leads have every event
    occur as it is recorded (in order, but a capture may come after other events), the others occur
    anywhere (later arrivals often occurred earlier) and their recording times may go back."""
    origin = draw(st.sampled_from((0, 20_480, -401)))
    at = instants(origin)
    leads = []
    for _ in range(draw(st.integers(1, 10))):
        facts: list[Fact] = []
        recorded = draw(at)
        free = draw(st.booleans())  # else every event occurs as it is recorded (the lead stays in order)
        for k in range(draw(st.integers(1, 8))):
            # -DAY: a recording clock that went back (only for a free lead)
            step = draw(st.sampled_from([0, 1, DAY // 4, DAY, 3 * DAY, *([-DAY] if free else [])]))
            recorded += step
            t = draw(at) if free and draw(st.integers(0, 2)) else recorded
            # mostly captured first; now and then a (second) capture after other events
            captured = draw(st.integers(0, 4)) > 0 if k == 0 else draw(st.integers(0, 6)) == 0
            if captured:
                facts.append(Fact(t, 0, "LeadCaptured", recorded, "captured", draw(st.sampled_from(["web", "event"])),
                                  draw(st.sampled_from([None, "q1"]))))
            elif draw(st.integers(0, 3)):
                name, to = draw(st.sampled_from(ENTRIES))
                owner = draw(st.sampled_from(["ana", "ben"])) if name == "LeadAcceptedBySales" else None
                facts.append(Fact(t, 0, name, recorded, to, owner=owner))
            else:
                facts.append(Fact(t, 0, "LeadAssigned", recorded, owner=draw(st.sampled_from(["ana", "cy"]))))
        leads.append([f._replace(version=i) for i, f in enumerate(facts, start=1)])
    return origin, leads


@PROPERTY
@given(histories(), st.lists(st.integers(0, 50), max_size=60), st.sampled_from([1, 2, 3, 7, 30]), st.data())
def test_known_at_from_the_live_rows_equals_the_rederivation_and_the_reference(
        backend_settings: Settings, history: tuple[int, list[list[Fact]]], interleave: list[int], batch: int,
        data: st.DataObject) -> None:
    origin, leads = history
    fold_and_check_late(backend_settings, leads, interleave, batch, ("funnel",))
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        occurred = [f.occurred for facts in leads for f in facts]
        recorded = [f.recorded for facts in leads for f in facts]
        known = known_instants(origin, recorded)
        for q in data.draw(st.lists(windows(origin, occurred), min_size=1, max_size=8)):
            k = EPOCH + timedelta(microseconds=data.draw(known))
            interval = data.draw(st.sampled_from([None, None, "week", "month"]))
            check_known(analytics, reference, Query(by=q.by, mode=q.mode, from_=q.from_, to=q.to, as_of=q.as_of,
                                                    known_at=k, interval=interval))
    finally:
        analytics.close()


def check_known(analytics: Analytics, reference: list[Ev], q: Query) -> None:
    """The funnel of `q` (a known-at question) equals the one from every lead's rows re-derived at its
    known-at time, and the plain-Python reference."""
    got = analytics.funnel(q)
    assert got == analytics.funnel(q, from_rows=True), q
    params = Params(by=q.by, start=q.from_, end=q.to, mode=q.mode, as_of=q.as_of, known_at=q.known_at)
    assert got["groups"] == ref_funnel(reference, params), q


@st.composite
def imported(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """(origin day, leads) where many leads share a few days of capture and stage entry, and each event is
    recorded when it happens or in a later import wave: cells of days and blocks whose rows were recorded
    partly before and partly after a known-at time. Now and then a lead arrives out of metric order."""
    origin = draw(st.sampled_from((0, 20_480, -401)))
    days = draw(st.lists(st.sampled_from((0, 1, 31, 32, 33, 40, 63, 64, 66)), min_size=2, max_size=4, unique=True))
    waves = sorted(draw(st.lists(st.integers(0, 70), min_size=1, max_size=3)))
    leads = []
    for _ in range(draw(st.integers(10, 30))):
        c = (origin + draw(st.sampled_from(days))) * DAY + draw(st.integers(0, DAY - 1))
        stamps = [c, *sorted(c + draw(st.sampled_from((1, DAY // 3, DAY, 31 * DAY, 33 * DAY))) for _ in range(3))]
        wave = draw(st.sampled_from([None, *waves]))  # None: recorded as it happens

        def rec(t: int, wave: int | None = wave) -> int:
            return max(t, (origin + wave) * DAY + draw(st.integers(0, DAY - 1))) if wave is not None else t

        facts = [Fact(c, 0, "LeadCaptured", rec(c), "captured", draw(st.sampled_from(["web", "event"])), None)]
        for t in stamps[1:draw(st.integers(1, 4))]:
            name, to = draw(st.sampled_from(ENTRIES))
            owner = draw(st.sampled_from(["ana", "ben"])) if name == "LeadAcceptedBySales" else None
            facts.append(Fact(t, 0, name, rec(t), to, owner=owner))
        if len(facts) > 2 and draw(st.integers(0, 4)) == 0:  # arrives out of metric order
            facts[1], facts[2] = facts[2], facts[1]
        leads.append([f._replace(version=i) for i, f in enumerate(facts, start=1)])
    return origin, leads


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(imported(), st.sampled_from([1, 7, 500]), st.data())
def test_known_at_where_cells_were_recorded_on_both_sides_of_it(
        backend_settings: Settings, history: tuple[int, list[list[Fact]]], batch: int, data: st.DataObject) -> None:
    """The counts answer a cell whose rows were recorded partly by K (a block through its days, a day
    through its rows) as the rows do."""
    origin, leads = history
    fold_and_check_late(backend_settings, leads, [], batch, ("funnel",))
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        occurred = [f.occurred for facts in leads for f in facts]
        recorded = [f.recorded for facts in leads for f in facts]
        for q in data.draw(st.lists(windows(origin, occurred), min_size=1, max_size=6)):
            near_wave = st.tuples(st.sampled_from(recorded), st.sampled_from([-1, 0, 1])).map(sum)
            k = EPOCH + timedelta(microseconds=data.draw(st.one_of(near_wave, known_instants(origin, recorded))))
            check_known(analytics, reference,
                        Query(by=q.by, mode=q.mode, from_=q.from_, to=q.to, as_of=q.as_of, known_at=k))
    finally:
        analytics.close()


def test_a_capture_recorded_after_an_earlier_entry_counts_that_entry_once_known(backend_settings: Settings) -> None:
    """In metric order and in recording order alike, an entry, then (a later batch) the capture: at a known-at
    time after both the entry counts, before the capture nothing does."""
    leads = [[Fact(10 * DAY, 1, "LeadQualifiedAsMQL", 10 * DAY, "mql"),
              Fact(20 * DAY, 2, "LeadCaptured", 20 * DAY, "captured", "web", None)]]
    runner = fresh_runner(backend_settings)
    try:
        runner.catch_up(ListSource(source_events(leads, [])), 1)
    finally:
        runner.db.close()
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        for days, reached in ((30, 1), (15, 0)):
            q = Query(mode="period", from_=EPOCH, known_at=EPOCH + timedelta(days=days))
            got = analytics.funnel(q)
            assert got == analytics.funnel(q, from_rows=True)
            assert got["groups"][0]["stages"]["mql"] == reached
            params = Params(mode="period", start=EPOCH, known_at=q.known_at)
            assert got["groups"] == ref_funnel(reference_events(leads), params)
    finally:
        analytics.close()
