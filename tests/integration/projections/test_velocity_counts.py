"""The velocity's counts per duration bucket: for generated histories (stage changes and captures at any
instant around UTC midnights, before 1970 too, captures later than a lead's other events, events arriving
out of order) and generated windows (from, to and as-of at exact midnights, a microsecond either side or
anywhere; both modes; every --by), the velocity from the counts (count, sum, and each percentile read
inside its bucket) equals the one read from the rows alone and the plain-Python reference, to the
microsecond; and the counts a run builds batch by batch equal the ones a rebuild and a replay build. Each
on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from lifecycle.store.repository import LeadStore
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource, ListSource
from projections.query import Query, check
from projections.service import Analytics
from projections.velocity import BOUNDS, COUNTS, ODD, bucket, bucket_range, counted_interval
from schemas.facts import Fact
from tests.integration.projections.test_funnel_counts import (
    DAY,
    EPOCH,
    PROPERTY,
    fresh_runner,
    histories,
    reference_events,
    source_events,
    windows,
)
from tests.support.reference import Ev, Params, exported, ref_velocity, simulated_app

BYS = (None, "channel", "campaign")


def velocity_windows(origin: int, times: list[int] | None = None) -> st.SearchStrategy[Query]:
    """The funnel's generated windows with a velocity --by."""
    return st.tuples(windows(origin, times), st.sampled_from(BYS)).map(lambda qb: replace(qb[0], by=qb[1]))


@st.composite
def late_captures(draw: st.DrawFn) -> tuple[int, list[list[Fact]]]:
    """Generated histories, some leads' captures moved after their other events (rows captured after
    their own time: the counts leave those to `ODD`)."""
    origin, leads = draw(histories())
    out = []
    for facts in leads:
        if facts and facts[0].name == "LeadCaptured" and len(facts) > 1 and draw(st.integers(0, 3)) == 0:
            last = max(f.occurred for f in facts)
            t = last + draw(st.sampled_from([0, 1, DAY // 2, 2 * DAY]))
            facts = [facts[0]._replace(occurred=t, recorded=t), *facts[1:]]
        out.append(facts)
    return origin, out


def counts_of(runner: Runner) -> dict[str, list[tuple[Any, ...]]]:
    return runner.db.dump([COUNTS, ODD])


def check_window(analytics: Analytics, reference: list[Ev], q: Query) -> None:
    got = analytics.velocity(q)
    assert got == analytics.velocity(q, from_rows=True), q
    params = Params(by=q.by, start=q.from_, end=q.to, mode=q.mode, as_of=q.as_of)
    expected = ref_velocity(reference, params)
    # the reference lists every group with a row; ours also the groups with none in the window
    ours = [
        g
        for g in got["groups"]
        if q.by is None
        or any(s["count"] for part in ("time_in_stage", "time_to_stage") for s in g[part].values())
    ]
    assert len(ours) == len(expected), q
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine["key"] == theirs["key"], q
        for part in ("time_in_stage", "time_to_stage"):
            for stage, stat in theirs[part].items():
                m = mine[part][stage]
                assert (m["count"], m["p50_s"], m["p90_s"]) == (
                    stat["count"],
                    stat["p50_s"],
                    stat["p90_s"],
                ), (q, stage)
                if stat["count"]:
                    assert m["mean_s"] == pytest.approx(stat["mean_s"], rel=1e-12, abs=1e-6), (q, stage)


def test_buckets_partition_the_durations() -> None:
    assert list(BOUNDS) == sorted(set(BOUNDS)) and 200 <= len(BOUNDS) <= 1000
    for us in (-(2**62), -1, 0, 1, 2, 3, 999, 10**6, 10**6 + 1, 2**40, 2**52 - 1, 2**52, 2**62):
        lo, hi = bucket_range(bucket(us))
        assert (lo is None or lo <= us) and (hi is None or us < hi), us
    for b in range(1, len(BOUNDS)):
        assert bucket(BOUNDS[b - 1]) == b and bucket(BOUNDS[b] - 1) == b


@PROPERTY
@given(late_captures(), st.lists(st.integers(0, 50), max_size=80), st.integers(1, 40), st.data())
def test_counts_equal_the_rows_and_the_reference(
    backend_settings: Settings,
    history: tuple[int, list[list[Fact]]],
    interleave: list[int],
    batch: int,
    data: st.DataObject,
) -> None:
    origin, leads = history
    events = source_events(leads, interleave)
    runner = fresh_runner(backend_settings)
    try:
        runner.catch_up(ListSource(events), batch)  # batch by batch, leads re-derived on late entries
        incremental = counts_of(runner)
        runner.reset(["velocity"])  # the counts again, each lead folded once from its timeline
        assert counts_of(runner) == incremental
    finally:
        runner.db.close()
    analytics = Analytics(open_read_models(backend_settings), None, auto_refresh=False)
    try:
        reference = reference_events(leads)
        times = [f.occurred for facts in leads for f in facts]
        for q in data.draw(st.lists(velocity_windows(origin, times), min_size=1, max_size=12)):
            check_window(analytics, reference, q)
    finally:
        analytics.close()


@pytest.fixture
def traffic(backend_settings: Settings) -> Iterator[tuple[Settings, LeadStore, list[Ev]]]:
    app = simulated_app(backend_settings, leads=120, seed=9)
    yield backend_settings, app.store, exported(app)
    app.store.close()


@PROPERTY
@given(st.data())
def test_counts_equal_the_reference_on_simulated_traffic(
    traffic: tuple[Settings, LeadStore, list[Ev]], data: st.DataObject
) -> None:
    s, store, evs = traffic
    analytics = Analytics(open_read_models(s), store)
    try:
        origin = min(e.at for e in evs).replace(hour=0, minute=0, second=0, microsecond=0) - EPOCH
        for q in data.draw(st.lists(velocity_windows(origin // timedelta(days=1)), min_size=1, max_size=6)):
            check_window(analytics, evs, q)
    finally:
        analytics.db.close()  # the store is the fixture's


def test_the_counts_answer_the_windows_they_claim(traffic: tuple[Settings, LeadStore, list[Ev]]) -> None:
    """Which windows the counts answer (the others read the rows): no known-at; cohort mode with as-of only
    over all captures."""
    t = EPOCH + timedelta(days=20_000)
    answered = [
        Query(),
        Query(by="channel"),
        Query(as_of=t),
        Query(from_=t, to=t + timedelta(days=30)),
        Query(mode="period", from_=t, as_of=t + timedelta(days=3)),
        Query(mode="period", as_of=t),
    ]
    rows = [Query(as_of=t, from_=t - timedelta(days=9)), Query(as_of=t, to=t), Query(known_at=t)]
    assert all(counted_interval(check(q)) is not None for q in answered)
    assert all(counted_interval(check(q)) is None for q in rows)


def test_replay_builds_the_counts_the_batches_build(traffic: tuple[Settings, LeadStore, list[Ev]]) -> None:
    s, store, _ = traffic
    runner = fresh_runner(s)
    try:
        runner.catch_up(EmbeddedSource(store), 97)
        incremental = counts_of(runner)
        assert incremental[COUNTS.name]
        for workers in (1, 2):
            runner.replay(EmbeddedSource(store), workers=workers)
            assert counts_of(runner) == incremental, workers
    finally:
        runner.db.close()
