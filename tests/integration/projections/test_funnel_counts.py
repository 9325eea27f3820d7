"""The funnel's pre-aggregated counts: for generated histories (stage entries and captures at any
instant around UTC midnights, before 1970 too, arriving out of order) and generated windows (from,
to and as-of at exact midnights, a microsecond either side or anywhere; both modes; every --by), the
funnel summed from the counts equals the one counted from the entry rows and the plain-Python
reference; and the counts a run builds batch by batch equal the ones a rebuild and a replay build.
Each on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from lifecycle.store.repository import LeadStore
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource, ListSource, SourceEvent
from projections.funnel import BLOCK, BYS, COUNTS, RECORDED, cell_keys
from projections.funnel import ENTRIES as ENTRY_ROWS
from projections.query import Query
from projections.service import Analytics
from schemas.codec import GENESIS
from schemas.facts import Fact
from tests.support.reference import Ev, Params, exported, ref_funnel, simulated_app

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DAY = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: day numbers the histories start at: the epoch, a day in 2026 that starts a block, one before 1970
ORIGINS = (0, 20_480, -401)
SPAN_DAYS = 2 * BLOCK + 5  # long enough for whole blocks and the days around them
ENTRIES = [("LeadNurtured", "nurtured"), ("LeadQualifiedAsMQL", "mql"), ("LeadAcceptedBySales", "sal"),
           ("LeadQualifiedAsSQL", "sql"), ("LeadWon", "won"), ("LeadRecycled", "recycled"), ("LeadLost", "lost"),
           ("LeadDisqualified", "disqualified"), ("LeadRejectedBySales", "recycled")]


def instants(origin: int) -> st.SearchStrategy[int]:
    """µs around the days of a history: exact midnights, a µs either side, or anywhere in the day."""
    day = st.integers(-2, SPAN_DAYS + 2).map(lambda d: (origin + d) * DAY)
    return st.one_of(day, day.map(lambda t: t - 1), day.map(lambda t: t + 1),
                     st.tuples(day, st.integers(0, DAY - 1)).map(sum))


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """(origin day, each lead's facts in arrival order, versions 1..n in that order)."""
    origin = draw(st.sampled_from(ORIGINS))
    at = instants(origin)
    leads = []
    for _ in range(draw(st.integers(1, 12))):
        facts: list[Fact] = []
        if draw(st.integers(0, 9)) > 0:  # a few leads have no capture: they count nowhere
            t = draw(at)
            facts.append(Fact(t, 0, "LeadCaptured", t, "captured", draw(st.sampled_from(["web", "event"])),
                              draw(st.sampled_from([None, "q1", "q2"]))))
        for _ in range(draw(st.integers(0, 8))):
            t = draw(at)
            entered = [f for f in facts if f.stage]
            if entered and draw(st.integers(0, 3)) == 0:  # the same stage again, within hours or days
                again = draw(st.sampled_from(entered))
                t = again.occurred + draw(st.sampled_from([-DAY, -1, 1, DAY // 3, DAY, 3 * DAY]))
                facts.append(again._replace(occurred=t, recorded=t))
            elif draw(st.booleans()):
                name, to = draw(st.sampled_from(ENTRIES))
                owner = draw(st.sampled_from(["ana", "ben"])) if name == "LeadAcceptedBySales" else None
                facts.append(Fact(t, 0, name, t, to, owner=owner))
            else:
                facts.append(Fact(t, 0, "LeadAssigned", t, owner=draw(st.sampled_from(["ana", "ben", "cy"]))))
        if facts:
            leads.append([f._replace(version=i) for i, f in enumerate(facts, start=1)])
    return origin, leads


def source_events(leads: list[list[Fact]], interleave: list[int]) -> list[SourceEvent]:
    """The leads' events in one log, each lead's in version order, the leads interleaved as drawn."""
    queues = [list(facts) for facts in leads]
    out: list[SourceEvent] = []
    picks = iter(interleave)
    while any(queues):
        open_ = [i for i, q in enumerate(queues) if q]
        i = open_[next(picks, 0) % len(open_)]
        f = queues[i].pop(0)
        lead = f"{i + 1:032x}"
        prev = GENESIS if f.version == 1 else f"{lead}-{f.version - 1}"
        out.append(SourceEvent(0, len(out) + 1, lead, f, f"{lead}-{f.version}", prev))
    return out


def reference_events(leads: list[list[Fact]]) -> list[Ev]:
    def dt(us: int) -> datetime:
        return EPOCH + timedelta(microseconds=us)

    return [Ev(f"{i + 1:032x}", f.name, f.version, dt(f.occurred), dt(f.recorded),
               {"to_stage": f.stage, "channel": f.channel, "campaign": f.campaign, "owner": f.owner})
            for i, facts in enumerate(leads) for f in facts]


def near(times: list[int]) -> st.SearchStrategy[int]:
    """µs at, just around, or at the midnight of, the given instants (a history's own times)."""
    t = st.sampled_from(times)
    return st.one_of(t, st.tuples(t, st.sampled_from([-1, 1])).map(sum), t.map(lambda us: us // DAY * DAY))


@st.composite
def windows(draw: st.DrawFn, origin: int, times: list[int] | None = None) -> Query:
    """A funnel query: bounds and as-of at drawn instants (or near `times`), either mode, any --by."""
    us = st.one_of(instants(origin), near(times)) if times else instants(origin)
    at = us.map(lambda t: EPOCH + timedelta(microseconds=t))
    start, end, as_of = (draw(st.one_of(st.none(), at)) for _ in range(3))
    if start is not None and draw(st.booleans()):  # a short window: inside a day, or a few days
        end = start + timedelta(microseconds=draw(st.sampled_from([1, 2, DAY // 2, DAY, 3 * DAY, BLOCK * DAY])))
    if start is not None and end is not None and start >= end:
        start, end = (end, start) if end < start else (start, None)
    return Query(by=draw(st.sampled_from([None, *BYS])), mode=draw(st.sampled_from(["cohort", "period"])),
                 from_=start, to=end, as_of=as_of)


def fresh_runner(s: Settings) -> Runner:
    runner = Runner(open_read_models(s))
    runner.setup()
    runner.reset()
    return runner


def counts_of(runner: Runner) -> list[tuple[Any, ...]]:
    """The counts and the recording times per cell (what --known-at reads beside them)."""
    dumped = runner.db.dump([COUNTS, RECORDED])
    return [*dumped[COUNTS.name], *dumped[RECORDED.name]]


def recorded_from(entries: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`RECORDED` by its definition: per cell of time, the entry rows in it, the first and last recording."""
    cells: dict[tuple[Any, ...], list[int]] = {}
    for row in entries:
        for key in cell_keys(row):
            cells.setdefault(key, []).append(row[-1])
    return sorted((*key, len(times), min(times), max(times)) for key, times in cells.items())


@PROPERTY
@given(histories(), st.lists(st.integers(0, 50), max_size=80), st.integers(1, 40), st.data())
def test_counts_equal_the_rows_and_the_reference(backend_settings: Settings, history: tuple[int, list[list[Fact]]],
                                                 interleave: list[int], batch: int, data: st.DataObject) -> None:
    origin, leads = history
    events = source_events(leads, interleave)
    runner = fresh_runner(backend_settings)
    try:
        runner.catch_up(ListSource(events), batch)  # batch by batch, leads re-derived on late entries
        incremental = counts_of(runner)
        dumped = runner.db.dump([ENTRY_ROWS, RECORDED])
        assert sorted(dumped[RECORDED.name]) == recorded_from(dumped[ENTRY_ROWS.name])
        runner.reset(["funnel"])  # the counts again, each lead folded once from its timeline
        assert counts_of(runner) == incremental
    finally:
        runner.db.close()
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        times = [f.occurred for facts in leads for f in facts]
        for q in data.draw(st.lists(windows(origin, times), min_size=1, max_size=12)):
            got = analytics.funnel(q)
            assert got == analytics.funnel(q, from_rows=True), q
            params = Params(by=q.by, start=q.from_, end=q.to, mode=q.mode, as_of=q.as_of)
            assert got["groups"] == ref_funnel(reference, params), q
    finally:
        analytics.close()


@pytest.fixture
def traffic(backend_settings: Settings) -> Iterator[tuple[Settings, LeadStore, list[Ev]]]:
    app = simulated_app(backend_settings, leads=120, seed=9)
    yield backend_settings, app.store, exported(app)
    app.store.close()


@PROPERTY
@given(st.data())
def test_counts_equal_the_reference_on_simulated_traffic(traffic: tuple[Settings, LeadStore, list[Ev]],
                                                         data: st.DataObject) -> None:
    s, store, evs = traffic
    analytics = Analytics(open_read_models(s), store)
    try:
        origin = min(e.at for e in evs).replace(hour=0, minute=0, second=0, microsecond=0) - EPOCH
        for q in data.draw(st.lists(windows(origin // timedelta(days=1)), min_size=1, max_size=6)):
            got = analytics.funnel(q)
            assert got == analytics.funnel(q, from_rows=True), q
            params = Params(by=q.by, start=q.from_, end=q.to, mode=q.mode, as_of=q.as_of)
            assert got["groups"] == ref_funnel(evs, params), q
    finally:
        analytics.db.close()  # the store is the fixture's


def test_replay_builds_the_counts_the_batches_build(traffic: tuple[Settings, LeadStore, list[Ev]]) -> None:
    s, store, _ = traffic
    runner = fresh_runner(s)
    try:
        runner.catch_up(EmbeddedSource(store), 97)
        incremental = counts_of(runner)
        assert incremental
        for workers in (1, 2):
            runner.replay(EmbeddedSource(store), workers=workers)
            assert counts_of(runner) == incremental, workers
    finally:
        runner.db.close()
