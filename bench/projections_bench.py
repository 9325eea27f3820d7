"""Read-model benchmark (issue 3): `python -m bench.projections_bench [--events N] [--keep DIR]`.

* replay: rebuild every read model from zero from a store of ~N events (simulated traffic
  ingested through the inbound handler), into SQLite, as `leadledger replay` does;
* queries: p50/p99 latency of each query on the built read models;
* the peer, in the same run: DuckDB computing the same funnel and velocity from scratch out
  of the exported JSONL events (load + query), checked to agree with ours.

Results are appended to bench/results.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.record import Lines, append_results
from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.audit import export_envelopes
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from projections.engine.replay import REPLAY_WORKERS
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource
from projections.plan import PlanQuery
from projections.query import Query
from projections.service import Analytics

START = datetime(2026, 1, 5, tzinfo=UTC)
SECRET = b"leadledger-bench-secret"
EVENTS_PER_LEAD = 8.2  # what the simulator produces on average


def build_store(home: Path, events: int, seed: int) -> float:
    """Simulated traffic through the inbound handler (the `ingest` path); returns seconds."""
    app = bootstrap(Settings(home=home, secret=SECRET))
    leads = max(10, int(events / EVENTS_PER_LEAD))
    started = time.perf_counter()
    stream = ((i, orjson.dumps(m)) for i, m in
              enumerate(generate(leads=leads, seed=seed, start=START, days=120), start=1))
    for _ in InboundHandler(app, batch_size=2000).handle_stream(stream):
        pass
    app.store.close()
    return time.perf_counter() - started


def replay(store_home: Path, models_home: Path, workers: int) -> tuple[int, float]:
    """`leadledger replay`: drop everything, rebuild from a snapshot of the store (bulk path)."""
    store = bootstrap(Settings(home=store_home, secret=SECRET)).store
    db = open_read_models(Settings(home=models_home, secret=SECRET))
    runner = Runner(db)
    runner.setup()
    source = EmbeddedSource(store)
    try:
        started = time.perf_counter()
        n = runner.replay(source, workers=workers).events
        return n, time.perf_counter() - started
    finally:
        db.close()
        store.close()


def latencies(call: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    result = call()  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p99 = times[max(0, -(-99 * len(times) // 100) - 1)]
    return statistics.median(times), p99, result


def query_suite(analytics: Analytics, mid: datetime) -> dict[str, Callable[[], Any]]:
    day = datetime.combine(mid.date(), datetime.min.time(), tzinfo=UTC)
    month = (day - timedelta(days=30), day)
    return {
        "funnel": lambda: analytics.funnel(Query()),
        "funnel --by channel": lambda: analytics.funnel(Query(by="channel")),
        "funnel --mode period --from/--to (30 d)": lambda: analytics.funnel(
            Query(mode="period", from_=month[0], to=month[1])),
        "funnel --as-of (mid)": lambda: analytics.funnel(Query(as_of=mid)),
        "velocity": lambda: analytics.velocity(Query()),
        "velocity --by campaign": lambda: analytics.velocity(Query(by="campaign")),
        "attribution --by channel (linear, won)": lambda: analytics.attribution(Query(by="channel")),
        "attribution --by campaign --model time_decay --conversion mql": lambda: analytics.attribution(
            Query(by="campaign", model="time_decay", conversion="mql")),
        "speed --by owner": lambda: analytics.speed(Query(by="owner")),
        "leads (50 newest)": lambda: analytics.leads(Query()),
        "leads --stage won": lambda: analytics.leads(Query(stage="won")),
        **drill_suite(analytics, month),
        **analyst_suite(analytics, mid, month),
    }


def analyst_suite(analytics: Analytics, mid: datetime, month: tuple[datetime, datetime]) -> dict[str, Callable[[], Any]]:
    """The analyst's workflows: trends, comparisons, owners, reasons and the plan."""
    quarter = (month[1] - timedelta(days=91), month[1])
    return {
        "funnel --interval week (all data)": lambda: analytics.funnel(Query(interval="week")),
        "funnel --by channel --interval month (all data)": lambda: analytics.funnel(Query(by="channel", interval="month")),
        "funnel --mode period --interval week (91 d)": lambda: analytics.funnel(
            Query(mode="period", interval="week", from_=quarter[0], to=quarter[1])),
        "funnel --by owner": lambda: analytics.funnel(Query(by="owner")),
        "funnel --by channel --compare-to previous (30 d)": lambda: analytics.funnel(
            Query(by="channel", from_=month[0], to=month[1], compare_to="previous")),
        "velocity --compare-to previous (30 d)": lambda: analytics.velocity(
            Query(from_=month[0], to=month[1], compare_to="previous")),
        "attribution --by channel --compare-to previous (30 d)": lambda: analytics.attribution(
            Query(by="channel", from_=month[0], to=month[1], compare_to="previous")),
        "speed --by owner --compare-to previous (30 d)": lambda: analytics.speed(
            Query(by="owner", from_=month[0], to=month[1], compare_to="previous")),
        "reasons --stage lost --by owner": lambda: analytics.reasons(Query(stage="lost", by="owner")),
        "reasons --stage recycled --by channel --from/--to (30 d)": lambda: analytics.reasons(
            Query(stage="recycled", by="channel", from_=month[0], to=month[1])),
        "pipeline (by owner, now)": lambda: analytics.pipeline(Query(by="owner")),
        "pipeline --by channel --as-of (mid)": lambda: analytics.pipeline(Query(by="channel", as_of=mid)),
        "plan --by channel (lookback 180 d before mid)": lambda: analytics.plan(PlanQuery(
            revenue=1_000_000, start=month[1], end=month[1] + timedelta(days=91), by="channel", as_of=mid)),
    }


def drill_cell(analytics: Analytics, q: Query, at_least: int = 10_000) -> tuple[str, str, int]:
    """The smallest (channel, stage) cell of the funnel with at least `at_least` leads."""
    cells = [(n, g["key"], stage) for g in analytics.funnel(q)["groups"] for stage, n in g["stages"].items()
             if n >= at_least]
    n, key, stage = min(cells)
    return key, stage, n


def drill_suite(analytics: Analytics, month: tuple[datetime, datetime]) -> dict[str, Callable[[], Any]]:
    """`leads --reached`: a cell of >= 10,000 leads, its first page, a page from the middle (after a
    cursor) and the whole cell in one page of 10,000; and a period-mode cell."""
    key, stage, n = drill_cell(analytics, Query(by="channel"))
    cell = Query(reached=stage, by="channel", key=key)
    middle = analytics.leads(replace(cell, limit=n // 2))["next"]
    pkey, pstage, pn = drill_cell(analytics, Query(by="channel", mode="period", from_=month[0], to=month[1]), 1_000)
    period = Query(reached=pstage, by="channel", key=pkey, mode="period", from_=month[0], to=month[1])
    name = f"leads --reached {stage} --by channel --key {key} ({n:,} leads)"
    return {
        f"{name}, first 50": lambda: analytics.leads(cell),
        f"{name}, 50 after a cursor in the middle": lambda: analytics.leads(replace(cell, after=middle)),
        f"{name}, 10,000 in one page": lambda: analytics.leads(replace(cell, limit=10_000)),
        f"leads --reached {pstage} --mode period (30 d) --by channel --key {pkey} ({pn:,} leads), first 50":
            lambda: analytics.leads(period),
    }


# ---------------------------------------------------------------- the peer: DuckDB

DUCK_LOAD = """
CREATE TABLE ev AS
SELECT subject AS lid, sequence AS v, split_part(type, '.', 3) AS name,
       CAST(time AS TIMESTAMPTZ) AS ts, data.to_stage AS to_stage, data.channel AS channel
FROM read_json('{path}', format='newline_delimited', columns={{subject: 'VARCHAR', sequence: 'BIGINT',
     type: 'VARCHAR', time: 'VARCHAR', data: 'STRUCT(to_stage VARCHAR, channel VARCHAR)'}})
"""
DUCK_FUNNEL = """
SELECT to_stage, COUNT(DISTINCT lid) FROM ev WHERE to_stage IS NOT NULL GROUP BY 1
"""
DUCK_VELOCITY = """
WITH changes AS (
  SELECT lid, to_stage, ts, LEAD(ts) OVER (PARTITION BY lid ORDER BY ts, v) AS left_ts
  FROM ev WHERE to_stage IS NOT NULL),
stays AS (SELECT to_stage, epoch_us(left_ts) - epoch_us(ts) AS us FROM changes WHERE left_ts IS NOT NULL),
captures AS (SELECT lid, MIN(epoch_us(ts)) AS cap FROM ev WHERE name = 'LeadCaptured' GROUP BY lid),
firsts AS (
  SELECT c.to_stage, MIN(epoch_us(c.ts)) - MIN(k.cap) AS us
  FROM changes c JOIN captures k ON k.lid = c.lid
  WHERE c.to_stage IN ('mql', 'sal', 'sql', 'won') GROUP BY c.lid, c.to_stage)
SELECT 'in', to_stage, COUNT(*), AVG(us) / 1e6, quantile_disc(us, 0.5) / 1e6, quantile_disc(us, 0.9) / 1e6
FROM stays GROUP BY 2
UNION ALL
SELECT 'to', to_stage, COUNT(*), AVG(us) / 1e6, quantile_disc(us, 0.5) / 1e6, quantile_disc(us, 0.9) / 1e6
FROM firsts GROUP BY 2
"""


def duckdb_peer(jsonl: Path, runs: int) -> dict[str, Any]:
    import duckdb

    out: dict[str, Any] = {}
    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(DUCK_LOAD.format(path=jsonl))
    out["load_s"] = time.perf_counter() - t
    for name, sql in (("funnel", DUCK_FUNNEL), ("velocity", DUCK_VELOCITY)):
        times = []
        for _ in range(max(3, runs // 10)):
            t = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times.append(time.perf_counter() - t)
        out[f"{name}_ms"] = statistics.median(times) * 1000
        out[f"{name}_rows"] = rows
    con.close()
    return out


def check_peer(ours_funnel: dict[str, Any], ours_velocity: dict[str, Any], peer: dict[str, Any]) -> str:
    """DuckDB's numbers must be ours (nearest-rank p50/p90 are quantile_disc)."""
    stages = ours_funnel["groups"][0]["stages"]
    duck = {s: n for s, n in peer["funnel_rows"]}
    if any(duck.get(s, 0) != n for s, n in stages.items()):
        return f"MISMATCH funnel: ours {stages} duckdb {duck}"
    group = ours_velocity["groups"][0]
    for kind, stage, count, mean, p50, p90 in peer["velocity_rows"]:
        mine = group["time_in_stage" if kind == "in" else "time_to_stage"][stage]
        if mine["count"] != count or abs(mine["mean_s"] - mean) > 1e-3 or mine["p50_s"] != p50 or mine["p90_s"] != p90:
            return f"MISMATCH velocity {kind} {stage}: ours {mine} duckdb {(count, mean, p50, p90)}"
    return "agree (funnel counts, velocity count/mean/p50/p90)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="approximate store size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the built store here and reuse it if it exists")
    parser.add_argument("--workers", type=int, default=REPLAY_WORKERS,
                        help="replay worker processes (1: read, fold and write in this process)")
    parser.add_argument("--runs", type=int, default=200, help="runs per query for the latency percentiles")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ll-projbench-"))
    store_home = args.keep or work / "store"
    lines = Lines()
    say = lines.say

    try:
        if (store_home / "events.sqlite").exists():
            say(f"store: reusing {store_home}")
        else:
            store_home.mkdir(parents=True, exist_ok=True)
            seconds = build_store(store_home, args.events, args.seed)
            say(f"store: built by ingesting simulated traffic in {seconds:.1f}s")
        models_home = work / "models"
        n, seconds = replay(store_home, models_home, args.workers)
        how = "in one process" if args.workers < 2 else f"{args.workers} worker processes + the writer"
        say(f"- replay into SQLite: {n:,} events in {seconds:.2f}s = **{n / seconds:,.0f} events/s** "
            f"(bulk path, {how}, target >= 100,000)")

        store = bootstrap(Settings(home=store_home, secret=SECRET)).store
        analytics = Analytics(open_read_models(Settings(home=models_home, secret=SECRET)), store, auto_refresh=False)
        jsonl = work / "events.jsonl"
        occurred = []
        with jsonl.open("wb") as fh:
            for env in export_envelopes(store):
                fh.write(orjson.dumps(env) + b"\n")
                occurred.append(env["time"])
        occurred.sort()
        mid = datetime.fromisoformat(occurred[len(occurred) // 2])
        leads = sum(1 for _ in analytics.runner.timelines())
        say(f"- store: {n:,} events of {leads:,} leads; read models {os.path.getsize(models_home / 'readmodels.sqlite') / 1e6:,.0f} MB")
        say(f"- query latency over {args.runs} runs each (ms, p50 / p99; target p99 < 50):")
        results: dict[str, tuple[float, float, Any]] = {}
        for name, call in query_suite(analytics, mid).items():
            results[name] = latencies(call, args.runs)
            say(f"  - `{name}`: {results[name][0]:.1f} / {results[name][1]:.1f}")
        peer = duckdb_peer(jsonl, args.runs)
        say(f"- DuckDB from the exported JSONL ({jsonl.stat().st_size / 1e6:,.0f} MB): load {peer['load_s']:.2f}s, "
            f"funnel {peer['funnel_ms']:.1f} ms, velocity {peer['velocity_ms']:.1f} ms; "
            f"{check_peer(results['funnel'][2], results['velocity'][2], peer)}")
        f50, f99 = results["funnel"][0], results["funnel"][1]
        v50, v99 = results["velocity"][0], results["velocity"][1]
        say(f"- ours ÷ DuckDB, query: funnel {f50 / peer['funnel_ms']:.2f} (p50) / {f99 / peer['funnel_ms']:.2f} (p99), "
            f"velocity {v50 / peer['velocity_ms']:.2f} / {v99 / peer['velocity_ms']:.2f}")
        duck_scratch = peer["load_s"] + (peer["funnel_ms"] + peer["velocity_ms"]) / 1000
        say(f"- ours ÷ DuckDB, from scratch: replay {seconds:.2f}s ÷ (load + funnel + velocity) {duck_scratch:.2f}s "
            f"= {seconds / duck_scratch:.2f}")
        analytics.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not args.no_results:
        append_results("read models (issue 3)", "bench.projections_bench", argv, lines)


if __name__ == "__main__":
    main()
