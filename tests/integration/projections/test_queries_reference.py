"""Every query agrees with an independent plain-Python reference over the exported envelopes,
on simulated traffic of several seeds (with late, out-of-order touches), for as-of, known-at,
from/to, by, mode and model variants; plus the metric invariants. Revenue is converted with an
`[fx]` table whose USD rate changes mid-traffic, whose GBP rate starts mid-traffic (earlier GBP
wins stay unconverted) and which has no SGD rate at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leadledger.bootstrap import open_read_models
from lifecycle.settings import Settings
from projections.money import FxTable, parse_fx
from projections.query import MODELS, REASON_STAGES, Query, QueryError
from projections.service import Analytics
from tests.support.env import sqlite_settings
from tests.support.reference import (
    STAGES,
    Params,
    Rates,
    approx_equal,
    conversions,
    exported,
    fmt,
    ref_attribution,
    ref_funnel,
    ref_leads,
    ref_pipeline,
    ref_reasons,
    ref_speed,
    ref_velocity,
    simulated_app,
)

SEEDS = (11, 12, 13)
#: hand-made leads won in USD, GBP, SGD, EUR, usd and CHF (tests.support.reference.currency_deals)
DEALS = 12
#: the day the USD rate changes and the GBP rate starts
FX_CHANGE = date(2026, 3, 16)


class World:
    """A simulated store, its read models, and its exported events."""

    def __init__(self, settings: Settings, leads: int, seed: int) -> None:
        self.app = simulated_app(settings, leads, seed, deals=DEALS)
        self.events = exported(self.app)
        occurred = sorted(e.at for e in self.events)
        recorded = sorted(e.recorded for e in self.events)
        self.mid = occurred[len(occurred) // 2]
        self.rates, self.fx = fx_tables(FX_CHANGE)
        self.analytics = Analytics(open_read_models(settings), self.app.store, fx=self.fx)
        self.late = occurred[(len(occurred) * 4) // 5]
        self.last = occurred[-1]
        self.known = recorded[(len(recorded) * 7) // 10]
        self.day = datetime.combine(self.mid.date(), datetime.min.time(), tzinfo=UTC)

    def variants(self) -> list[Params]:
        d = self.day
        return [
            Params(),
            Params(by="channel"),
            Params(by="campaign", mode="period"),
            Params(start=d - timedelta(days=7), end=d),
            Params(by="channel", start=d - timedelta(days=10), end=d + timedelta(days=3), mode="period"),
            Params(as_of=self.mid),
            Params(by="campaign", as_of=self.late, start=d - timedelta(days=5), end=d + timedelta(days=5)),
            Params(as_of=self.late, known_at=self.known),
            Params(by="channel", known_at=self.known, mode="period", start=d - timedelta(days=20)),
            Params(as_of=self.mid, known_at=self.known, mode="period", end=d),
        ]

    def query(self, p: Params, **extra: Any) -> Query:
        return Query(by=p.by, from_=p.start, to=p.end, mode=p.mode, as_of=p.as_of, known_at=p.known_at, **extra)


def fx_tables(change: date) -> tuple[Rates, FxTable]:
    """The same `[fx]` table for the reference (plain pairs) and for the service (as TOML decodes it)."""
    rates: Rates = {"USD": [(date(2026, 1, 1), 0.92), (change, 0.87)], "GBP": [(change, 1.16)]}
    toml = {cur: [{"from": start.isoformat(), "rate": rate} for start, rate in reversed(pairs)]
            for cur, pairs in rates.items()}
    return rates, parse_fx(toml, "EUR", "test")


@pytest.fixture(scope="module", params=SEEDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp(f"seed{request.param}")
    w = World(sqlite_settings(home), leads=220, seed=request.param)
    yield w
    w.analytics.close()


def test_funnel_matches_reference(world: World) -> None:
    for p in world.variants():
        got = world.analytics.funnel(world.query(p))
        approx_equal(got["groups"], ref_funnel(world.events, p), f"funnel {p}")
        assert got["mode"] == p.mode and got["by"] == p.by and got["as_of"] == fmt(p.as_of)
        assert got["from"] == fmt(p.start) and got["to"] == fmt(p.end)


def test_funnel_by_owner_matches_reference(world: World) -> None:
    """Each stage entry under the owner at that entry; every lead still counts once per stage."""
    for p in world.variants():
        q = Params(**{**p.__dict__, "by": "owner"})
        got = world.analytics.funnel(world.query(q))
        want = ref_funnel(world.events, q)
        approx_equal(got["groups"], want, f"funnel {q}")
        assert len(want) > 2, want  # owners and the unowned (captures): the case is not trivial
        whole = ref_funnel(world.events, Params(**{**p.__dict__, "by": None}))[0]["stages"]
        assert {s: sum(g["stages"][s] for g in got["groups"]) for s in whole} == whole


def test_velocity_matches_reference(world: World) -> None:
    for p in world.variants():
        got = world.analytics.velocity(world.query(p))
        approx_equal(got["groups"], ref_velocity(world.events, p), f"velocity {p}")


def test_attribution_matches_reference_for_every_model_and_conversion(world: World) -> None:
    variants = world.variants()
    for model in MODELS:
        for conversion in ("mql", "sql", "won"):
            for p in (variants[0], variants[1], variants[6], variants[7]):
                q = Params(**{**p.__dict__, "model": model, "conversion": conversion})
                got = world.analytics.attribution(world.query(q, model=model, conversion=conversion))
                approx_equal(got["groups"], ref_attribution(world.events, q, world.rates), f"attribution {q}")
                assert (got["model"], got["conversion"], got["currency"]) == (model, conversion, "EUR")


def test_the_traffic_has_wins_converted_and_not(world: World) -> None:
    """The FX case is exercised: USD at both rates, GBP before and after its first rate, SGD never."""
    won = {(e.data["currency"], e.at.date() >= FX_CHANGE) for e in world.events if e.name == "LeadWon"}
    assert {("USD", False), ("USD", True), ("GBP", False), ("GBP", True), ("SGD", True), ("EUR", True)} <= won
    got = world.analytics.attribution(Query())["groups"][0]
    assert got["revenue"] > 0 and set(got["unconverted"]) == {"CHF", "GBP", "SGD"}


def test_without_rates_only_reporting_currency_amounts_are_revenue(world: World) -> None:
    plain = Analytics(world.analytics.db, None, auto_refresh=False)  # no [fx] table: EUR only
    for by in (None, "channel"):
        p = Params(by=by)
        approx_equal(plain.attribution(world.query(p))["groups"], ref_attribution(world.events, p, {}), f"{by}")
    eur = sum(float(e.data["amount"]) for e in world.events if e.name == "LeadWon" and e.data["currency"] == "EUR")
    total = plain.attribution(Query())["groups"][0]
    assert abs(total["revenue"] - eur) < 1e-6 * eur
    assert set(total["unconverted"]) == {e.data["currency"] for e in world.events if e.name == "LeadWon"} - {"EUR"}


def test_speed_matches_reference(world: World) -> None:
    for p in world.variants():
        for by in (None, "owner"):
            q = Params(**{**p.__dict__, "by": by})
            got = world.analytics.speed(world.query(q))
            approx_equal(got["groups"], ref_speed(world.events, q), f"speed {q}")


def test_leads_matches_reference(world: World) -> None:
    a = world.analytics
    owner = next(e.data["owner"] for e in world.events if e.name == "LeadAssigned")
    cases: list[dict[str, Any]] = [
        {}, {"stage": "nurtured"}, {"channel": "webinar", "limit": 7}, {"owner": owner},
        {"as_of": world.mid}, {"as_of": world.late, "known_at": world.known, "stage": "mql"},
        {"known_at": world.known, "limit": 500},
    ]
    for case in cases:
        got = a.leads(Query(**case))
        want = ref_leads(world.events, case.get("as_of"), case.get("known_at"), case.get("stage"),
                         case.get("channel"), case.get("owner"), case.get("limit", 50))
        approx_equal(got["leads"], want, f"leads {case}")
        assert got["as_of"] == fmt(case.get("as_of"))


def reasons_query(p: Params, stage: str) -> Query:
    """The reasons query of a variant's window, group and instants (it has no mode)."""
    return Query(stage=stage, by=p.by, from_=p.start, to=p.end, as_of=p.as_of, known_at=p.known_at)


def test_reasons_matches_reference(world: World) -> None:
    for p in world.variants():
        for by in (p.by, "owner"):
            q = Params(**{**p.__dict__, "by": by})
            for stage in REASON_STAGES:
                got = world.analytics.reasons(reasons_query(q, stage))
                want = ref_reasons(world.events, q, stage)
                approx_equal({"events": got["events"], "groups": got["groups"]}, want, f"reasons {stage} {q}")
                assert (got["stage"], got["by"], got["from"], got["to"], got["as_of"]) == (
                    stage, by, fmt(q.start), fmt(q.end), fmt(q.as_of))


def test_the_traffic_has_reasons_of_every_stage(world: World) -> None:
    """The reasons comparison is not vacuous: every stage has events, several reasons and owners."""
    for stage in REASON_STAGES:
        got = world.analytics.reasons(Query(stage=stage, by="owner"))
        assert got["events"] > 0, stage
    assert len(world.analytics.reasons(Query(stage="disqualified"))["groups"][0]["reasons"]) > 1
    assert len(world.analytics.reasons(Query(stage="recycled", by="owner"))["groups"]) > 1


def test_pipeline_matches_reference(world: World) -> None:
    sqls = [e for e in world.events if e.name == "LeadQualifiedAsSQL"]
    assert any(e.data["amount"] is None for e in sqls) and any(e.data["amount"] is not None for e in sqls)
    instants = [(None, None), (world.mid, None), (world.late, None), (world.late, world.known), (None, world.known)]
    totals = []
    for by in ("owner", "channel", "campaign"):
        for as_of, known_at in instants:
            got = world.analytics.pipeline(Query(by=by, as_of=as_of, known_at=known_at))
            want = ref_pipeline(world.events, by, as_of, known_at, world.rates)
            approx_equal(got["groups"], want, f"pipeline by {by} as of {as_of} known at {known_at}")
            assert (got["by"], got["as_of"], got["known_at"]) == (by, fmt(as_of), fmt(known_at))
            totals.append(got["total"])
    # open SQLs with an expected amount are valued (amounts without a rate: the hand-made scenario,
    # tests/integration/projections/test_pipeline_query.py)
    assert any(t["value"] > 0 and t["with_amount"] > 0 for t in totals)


# ---------------------------------------------------------------- invariants


def test_cohort_funnel_never_grows_along_the_main_path(world: World) -> None:
    for p in world.variants():
        if p.mode != "cohort":
            continue
        for g in world.analytics.funnel(world.query(p))["groups"]:
            s = g["stages"]
            assert s["captured"] >= s["mql"] >= s["sal"] >= s["sql"] >= s["won"], (p, g)


def test_no_duration_is_ever_negative(world: World) -> None:
    """The time rules (nothing before the capture, stage changes in order) make every stay and
    every time-to-stage >= 0, late touches notwithstanding."""
    for p in world.variants():
        for g in world.analytics.velocity(world.query(p))["groups"]:
            for kind in ("time_in_stage", "time_to_stage"):
                for st in g[kind].values():
                    assert all(st[k] is None or st[k] >= 0 for k in ("mean_s", "p50_s", "p90_s")), (p, g)


def test_credits_of_each_conversion_sum_to_one(world: World) -> None:
    for model in MODELS:
        for conversion in ("mql", "sql", "won"):
            p = Params(model=model, conversion=conversion)
            convs = conversions(world.events, p)
            for _, _, credited in convs:
                assert abs(sum(w for _, w in credited) - 1) < 1e-9
            got = world.analytics.attribution(Query(model=model, conversion=conversion, by="channel"))
            assert abs(sum(g["conversions"] for g in got["groups"]) - len(convs)) < 1e-6


def test_as_of_the_latest_event_equals_no_as_of(world: World) -> None:
    a = world.analytics
    for by in (None, "channel"):
        assert a.funnel(Query(by=by, as_of=world.last))["groups"] == a.funnel(Query(by=by))["groups"]
        assert a.velocity(Query(by=by, as_of=world.last))["groups"] == a.velocity(Query(by=by))["groups"]
        assert a.speed(Query(as_of=world.last))["groups"] == a.speed(Query())["groups"]
        for model in MODELS:
            q = Query(by=by, model=model, as_of=world.last)
            assert a.attribution(q)["groups"] == a.attribution(Query(by=by, model=model))["groups"]
    assert a.leads(Query(as_of=world.last, limit=300))["leads"] == a.leads(Query(limit=300))["leads"]


def test_json_types_follow_the_spec(world: World) -> None:
    f = world.analytics.funnel(Query(by="channel"))
    assert all(type(v) is int for g in f["groups"] for v in g["stages"].values())
    assert list(f["groups"][0]["stages"]) == list(STAGES)
    v = world.analytics.velocity(Query())["groups"][0]
    assert type(v["time_in_stage"]["captured"]["count"]) is int
    assert type(v["time_in_stage"]["captured"]["mean_s"]) is float
    assert v["time_in_stage"]["disqualified"] == {"count": 0, "mean_s": None, "p50_s": None, "p90_s": None}
    mql = world.analytics.attribution(Query(conversion="mql", by="campaign"))
    assert all(g["revenue"] is None for g in mql["groups"])
    assert "(none)" in {g["key"] for g in mql["groups"]}


def test_bad_parameters_raise_query_error(world: World) -> None:
    a = world.analytics
    t = datetime(2026, 2, 1, tzinfo=UTC)
    for call, q in [
        (a.funnel, Query(by="rep")), (a.velocity, Query(by="owner")), (a.funnel, Query(mode="weekly")), (a.velocity, Query(from_=t, to=t)),
        (a.attribution, Query(model="w_shaped")), (a.attribution, Query(conversion="sal")),
        (a.speed, Query(by="stage")), (a.leads, Query(stage="hot")), (a.leads, Query(limit=0)),
        (a.funnel, Query(as_of=datetime(2026, 2, 1))),
    ]:
        with pytest.raises(QueryError):
            call(q)


def test_known_at_before_anything_was_recorded_is_empty(world: World) -> None:
    early = min(e.recorded for e in world.events) - timedelta(seconds=1)
    f = world.analytics.funnel(Query(known_at=early))
    assert f["groups"][0]["stages"]["captured"] == 0


# ---------------------------------------------------------------- both backends


def test_reference_agreement_on_each_backend(backend_settings: Settings) -> None:
    w = World(backend_settings, leads=120, seed=21)
    try:
        for p in w.variants()[::2]:
            approx_equal(w.analytics.funnel(w.query(p))["groups"], ref_funnel(w.events, p), f"funnel {p}")
            approx_equal(w.analytics.velocity(w.query(p))["groups"], ref_velocity(w.events, p), f"velocity {p}")
            q = Params(**{**p.__dict__, "model": "time_decay", "conversion": "mql"})
            approx_equal(w.analytics.attribution(w.query(q, model="time_decay", conversion="mql"))["groups"],
                         ref_attribution(w.events, q), f"attribution {q}")
            r = Params(**{**p.__dict__, "model": "u_shaped"})
            approx_equal(w.analytics.attribution(w.query(r, model="u_shaped"))["groups"],
                         ref_attribution(w.events, r, w.rates), f"attribution {r}")
            s = Params(**{**p.__dict__, "by": "owner"})
            approx_equal(w.analytics.speed(w.query(s))["groups"], ref_speed(w.events, s), f"speed {s}")
        for p in w.variants()[5:8]:
            for stage in ("recycled", "lost"):
                q = Params(**{**p.__dict__, "by": "owner"})
                approx_equal(w.analytics.reasons(reasons_query(q, stage))["groups"],
                             ref_reasons(w.events, q, stage)["groups"], f"reasons {stage} {q}")
        approx_equal(w.analytics.leads(Query(as_of=w.mid, known_at=w.known))["leads"],
                     ref_leads(w.events, w.mid, w.known), "leads")
    finally:
        w.analytics.close()


# ---------------------------------------------------------------- trends and comparisons


def test_every_interval_of_a_trend_is_the_reference_funnel_of_that_interval(world: World) -> None:
    d = world.day
    for p in world.variants():
        for kind in ("week", "month"):
            window = Params(**{**p.__dict__, "start": p.start or d - timedelta(days=45), "end": p.end or d})
            got = world.analytics.funnel(world.query(window, interval=kind))
            assert got["intervals"], (window, kind)
            assert got["intervals"][0]["from"] == fmt(window.start) and got["intervals"][-1]["to"] == fmt(window.end)
            for iv in got["intervals"]:
                part = Params(**{**window.__dict__, "start": datetime.fromisoformat(iv["from"]),
                                 "end": datetime.fromisoformat(iv["to"])})
                approx_equal(iv["groups"], ref_funnel(world.events, part), f"{kind} {iv['label']} {part}")


def test_a_comparison_is_the_two_separate_queries_and_their_difference(world: World) -> None:
    d = world.day
    a = world.analytics
    asks = {"funnel": a.funnel, "velocity": a.velocity, "attribution": a.attribution, "speed": a.speed}
    for p in world.variants():
        window = Params(**{**p.__dict__, "start": d - timedelta(days=14), "end": d})
        for name, ask in asks.items():
            for other in ("previous", (d - timedelta(days=40), d - timedelta(days=20))):
                got = ask(world.query(window, compare_to=other))
                here = ask(world.query(window))
                start, end = (d - timedelta(days=28), d - timedelta(days=14)) if other == "previous" else other
                there = ask(world.query(Params(**{**window.__dict__, "start": start, "end": end})))
                assert {k: v for k, v in got.items() if k not in ("compare", "difference")} == here, name
                assert got["compare"] == {"from": fmt(start), "to": fmt(end), "groups": there["groups"]}, name
                theirs = {g["key"]: g for g in there["groups"]}
                for g in got["difference"]["groups"]:
                    mine = next((h for h in here["groups"] if h["key"] == g["key"]), None)
                    assert mine is not None or g["key"] in theirs
                    for path, value in leaves(g):
                        x, y = pick(mine, path), pick(theirs.get(g["key"]), path)
                        if isinstance(x, int | float) and isinstance(y, int | float):
                            assert value == x - y, (name, path)
                        elif isinstance(x, int) and mine is not None and theirs.get(g["key"]) is None:
                            assert value == x, (name, path)  # a group only here: its counts read 0 there
                        else:
                            assert value is None or (x is None) != (y is None), (name, path, value)


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if not path and k == "key":
                continue
            yield from leaves(v, (*path, k))
    else:
        yield path, value


def pick(group: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = group
    for k in path:
        if not isinstance(value, dict):
            return None
        value = value.get(k)
    return value
