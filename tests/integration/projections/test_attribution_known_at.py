"""Attribution at a known-at time from the live rows: for generated histories of captures, touches and
stage entries (wins with amounts) whose events arrive out of metric order (recorded later, occurred
earlier; recording times that go back now and then) and generated (as-of, known-at, window, mode, --by,
model, conversion), the answer from the live credit rows cut at K (and the late leads re-derived)
equals the one re-derived for every lead and the plain-Python reference. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from projections.attribution import LATE
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
    source_events,
)
from tests.support.known_at import fold_and_check_late, known_instants, reference_events
from tests.support.reference import Params, approx_equal, ref_attribution

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CHANNELS = ["web", "event", "ads"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """(origin day, each lead's facts in arrival order, versions 1..n): a capture first, then touches and
    stage entries (a win with an amount); half the leads have every event occur as it is recorded, the
    others occur anywhere (later arrivals often occurred earlier) and their recording times may go back."""
    origin = draw(st.sampled_from((0, 20_480, -401)))
    at = instants(origin)
    leads = []
    for _ in range(draw(st.integers(1, 8))):
        recorded = draw(at)
        free = draw(st.booleans())
        facts = [Fact(recorded, 0, "LeadCaptured", recorded, "captured", draw(st.sampled_from(CHANNELS)),
                      draw(st.sampled_from([None, "q1"])))]
        for _ in range(draw(st.integers(0, 9))):
            recorded += draw(st.sampled_from([0, 1, DAY // 4, DAY, 3 * DAY, *([-DAY] if free else [])]))
            t = draw(at) if free and draw(st.integers(0, 2)) else recorded
            if draw(st.booleans()):
                facts.append(Fact(t, 0, "LeadTouched", recorded, None, draw(st.sampled_from(CHANNELS)),
                                  draw(st.sampled_from([None, "q1", "q2"]))))
            elif draw(st.integers(0, 2)):
                name, to = draw(st.sampled_from(ENTRIES))
                facts.append(Fact(t, 0, name, recorded, to, value=1000.0 if to == "won" else None,
                                  currency="EUR" if to == "won" else None))
            else:
                facts.append(Fact(t, 0, "LeadWon", recorded, "won", value=float(draw(st.integers(1, 9)) * 250),
                                  currency="EUR"))
        leads.append([f._replace(version=i) for i, f in enumerate(facts, start=1)])
    return origin, leads


@st.composite
def questions(draw: st.DrawFn, origin: int, occurred: list[int], recorded: list[int]) -> Query:
    near = st.one_of(st.sampled_from(occurred), instants(origin))
    at = near.map(lambda us: EPOCH + timedelta(microseconds=us))
    start, end, as_of = (draw(st.one_of(st.none(), at)) for _ in range(3))
    if start is not None and end is not None and start >= end:
        start, end = (end, start) if end < start else (start, None)
    known = draw(known_instants(origin, recorded))
    return Query(by=draw(st.sampled_from([None, "channel", "campaign"])),
                 mode=draw(st.sampled_from(["cohort", "period"])), from_=start, to=end, as_of=as_of,
                 known_at=EPOCH + timedelta(microseconds=known),
                 model=draw(st.sampled_from(["first", "last", "linear", "u_shaped", "time_decay"])),
                 conversion=draw(st.sampled_from(["mql", "sql", "won"])))


@PROPERTY
@given(histories(), st.lists(st.integers(0, 50), max_size=60), st.sampled_from([1, 2, 3, 7, 30]), st.data())
def test_known_at_from_the_live_rows_equals_the_rederivation_and_the_reference(
        backend_settings: Settings, history: tuple[int, list[list[Fact]]], interleave: list[int], batch: int,
        data: st.DataObject) -> None:
    origin, leads = history
    fold_and_check_late(backend_settings, leads, interleave, batch, ("attribution",))
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        occurred = [f.occurred for facts in leads for f in facts]
        recorded = [f.recorded for facts in leads for f in facts]
        for q in data.draw(st.lists(questions(origin, occurred, recorded), min_size=1, max_size=8)):
            got = analytics.attribution(q)
            approx_equal(got, analytics.attribution(q, from_rows=True))
            params = Params(by=q.by, start=q.from_, end=q.to, mode=q.mode, as_of=q.as_of, known_at=q.known_at,
                            model=q.model, conversion=q.conversion)
            approx_equal(got["groups"], ref_attribution(reference, params))
    finally:
        analytics.close()


def test_a_touch_recorded_after_the_win_it_occurred_before_is_credited_only_once_known(
        backend_settings: Settings) -> None:
    """Captured by web, won on day 10, and on day 20 a webinar touch arrives that occurred on day 5: known at
    day 15 the win is web's alone; known at day 25 web and the webinar share it (linear)."""
    leads = [[Fact(1 * DAY, 1, "LeadCaptured", 1 * DAY, "captured", "web", None),
              Fact(10 * DAY, 2, "LeadWon", 10 * DAY, "won", value=1000.0, currency="EUR"),
              Fact(5 * DAY, 3, "LeadTouched", 20 * DAY, None, "webinar", None)]]
    runner = fresh_runner(backend_settings)
    try:
        runner.catch_up(ListSource(source_events(leads, [])), 1)
        assert runner.db.dump([LATE])[LATE.name] == [(1,)]
    finally:
        runner.db.close()
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        for days, credit in ((15, {"web": 1.0}), (25, {"web": 0.5, "webinar": 0.5})):
            q = Query(by="channel", known_at=EPOCH + timedelta(days=days))
            got = analytics.attribution(q)
            approx_equal(got, analytics.attribution(q, from_rows=True))
            assert {g["key"]: g["conversions"] for g in got["groups"]} == credit
            assert {g["key"]: g["revenue"] for g in got["groups"]} == {k: 1000.0 * c for k, c in credit.items()}
    finally:
        analytics.close()
