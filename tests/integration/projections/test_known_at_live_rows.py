"""Velocity, qualification, reasons and the pipeline at a known-at time from the live rows: for generated histories (captures,
MQLs from each source, wins, losses, disqualifications, recycles and rejections with reasons, owners
set and cleared) whose events arrive out of metric order (recorded later, occurred earlier; recording
times that go back now and then), the answer from the live rows cut at K (the late leads re-derived)
equals the one re-derived for every lead, and for reasons by channel or campaign the plain-Python
reference. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from projections import qualification, reasons
from projections.engine.sources import ListSource
from projections.query import Query
from projections.service import Analytics
from schemas.facts import Fact
from tests.integration.projections.test_funnel_counts import DAY, EPOCH, fresh_runner, instants, source_events
from tests.support.known_at import fold_and_check_late, known_instants, reference_events
from tests.support.reference import Params, approx_equal, ref_reasons

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: (event, stage it enters, a reason?)
STEPS = [("LeadQualifiedAsMQL", "mql", False), ("LeadWon", "won", False), ("LeadLost", "lost", True),
         ("LeadDisqualified", "disqualified", True), ("LeadRecycled", "recycled", True),
         ("LeadRejectedBySales", "recycled", True), ("LeadAcceptedBySales", "sal", False),
         ("LeadQualifiedAsSQL", "sql", False), ("LeadAssigned", None, False)]


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """(origin day, each lead's facts in arrival order, versions 1..n): a capture first, then the steps
    above; half the leads have every event occur as it is recorded, the others occur anywhere (later
    arrivals often occurred earlier) and their recording times may go back."""
    origin = draw(st.sampled_from((0, 20_480, -401)))
    at = instants(origin)
    leads = []
    for _ in range(draw(st.integers(1, 8))):
        recorded = draw(at)
        free = draw(st.booleans())
        facts = [Fact(recorded, 0, "LeadCaptured", recorded, "captured", draw(st.sampled_from(["web", "ads"])),
                      draw(st.sampled_from([None, "q1"])))]
        for _ in range(draw(st.integers(0, 8))):
            recorded += draw(st.sampled_from([0, 1, DAY // 4, DAY, *([-DAY] if free else [])]))
            t = draw(at) if free and draw(st.integers(0, 2)) else recorded
            name, stage, reasoned = draw(st.sampled_from(STEPS))
            owner = draw(st.sampled_from(["ana", "ben"])) if name in ("LeadAssigned", "LeadAcceptedBySales") else None
            expected = name == "LeadQualifiedAsSQL" and draw(st.booleans())
            facts.append(Fact(t, 0, name, recorded, stage, owner=owner,
                              value=float(draw(st.integers(1, 9)) * 100) if expected else None,
                              currency=draw(st.sampled_from(["EUR", "USD"])) if expected else None,
                              source=draw(st.sampled_from(["scorer", "external", "override"]))
                              if name == "LeadQualifiedAsMQL" else None,
                              reason=draw(st.sampled_from(["price", "timing"])) if reasoned else None))
        leads.append([f._replace(version=i) for i, f in enumerate(facts, start=1)])
    return origin, leads


@st.composite
def windows(draw: st.DrawFn, origin: int, occurred: list[int], recorded: list[int]) -> tuple[Query, str]:
    at = st.one_of(st.sampled_from(occurred), instants(origin)).map(lambda us: EPOCH + timedelta(microseconds=us))
    start, end, as_of = (draw(st.one_of(st.none(), at)) for _ in range(3))
    if start is not None and end is not None and start >= end:
        start, end = (end, start) if end < start else (start, None)
    known = draw(known_instants(origin, recorded))
    stage = draw(st.sampled_from(["lost", "disqualified", "recycled", "rejected"]))
    return (Query(by=draw(st.sampled_from([None, "channel", "campaign", "owner"])), from_=start, to=end,
                  as_of=as_of, known_at=EPOCH + timedelta(microseconds=known), stage=stage), stage)


@PROPERTY
@given(histories(), st.lists(st.integers(0, 50), max_size=60), st.sampled_from([1, 2, 3, 7, 30]), st.data())
def test_known_at_from_the_live_rows_equals_the_rederivation(
        backend_settings: Settings, history: tuple[int, list[list[Fact]]], interleave: list[int], batch: int,
        data: st.DataObject) -> None:
    origin, leads = history
    fold_and_check_late(backend_settings, leads, interleave, batch, ("qualification", "reasons", "pipeline", "velocity"))
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        occurred = [f.occurred for facts in leads for f in facts]
        recorded = [f.recorded for facts in leads for f in facts]
        for q, stage in data.draw(st.lists(windows(origin, occurred, recorded), min_size=1, max_size=6)):
            got = analytics.reasons(q)
            assert got == analytics.reasons(q, from_rows=True), q
            if q.by != "owner":  # (the reference's owner is the product's for simulated traffic only)
                params = Params(by=q.by, start=q.from_, end=q.to, as_of=q.as_of, known_at=q.known_at)
                approx_equal({"events": got["events"], "groups": got["groups"]},
                             ref_reasons(reference, params, stage), str(q))
            asked = Query(from_=q.from_, to=q.to, as_of=q.as_of, known_at=q.known_at)
            assert analytics.qualification(asked) == analytics.qualification(asked, from_rows=True), asked
            for mode in ("cohort", "period"):
                stays = Query(by=None if q.by == "owner" else q.by, mode=mode, from_=q.from_, to=q.to, as_of=q.as_of,
                              known_at=q.known_at)
                approx_equal(analytics.velocity(stays), analytics.velocity(stays, from_rows=True), str(stays))
            open_at = Query(by=q.by, as_of=q.as_of, known_at=q.known_at)
            approx_equal(analytics.pipeline(open_at), analytics.pipeline(open_at, from_rows=True), str(open_at))
    finally:
        analytics.close()


def test_a_loss_recorded_late_counts_only_once_known(backend_settings: Settings) -> None:
    """Lost on day 5 (recorded on day 9) after a touch-free capture on day 1 and an MQL on day 3 recorded on
    day 10 from the scorer: known at day 8 nothing; at day 9 the loss; at day 10 the MQL too."""
    leads = [[Fact(1 * DAY, 1, "LeadCaptured", 1 * DAY, "captured", "web", None),
              Fact(5 * DAY, 2, "LeadLost", 9 * DAY, "lost", reason="price"),
              Fact(3 * DAY, 3, "LeadQualifiedAsMQL", 10 * DAY, "mql", source="scorer")]]
    runner = fresh_runner(backend_settings)
    try:
        runner.catch_up(ListSource(source_events(leads, [])), 1)
        assert runner.db.dump([qualification.LATE])[qualification.LATE.name] == []  # capture, then the MQL
        assert runner.db.dump([reasons.LATE])[reasons.LATE.name] == []
    finally:
        runner.db.close()
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        for day, lost, mqls in ((8, 0, 0), (9, 1, 0), (10, 1, 1)):
            k = EPOCH + timedelta(days=day)
            got = analytics.reasons(Query(stage="lost", known_at=k))
            assert got == analytics.reasons(Query(stage="lost", known_at=k), from_rows=True)
            assert got["events"] == lost
            q = analytics.qualification(Query(known_at=k))
            assert q == analytics.qualification(Query(known_at=k), from_rows=True)
            assert q["total"]["entries"] == mqls
    finally:
        analytics.close()
