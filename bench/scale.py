"""Scale benchmark: `python -m bench.scale [--events 10000000] [--keep DIR] [--backends sqlite,postgres]`.

In one run, per backend (SQLite files, and PostgreSQL where LEADLEDGER_POSTGRES_DSN is set):

* the store: built once by ingesting simulated traffic through the inbound handler (the `ingest`
  path, decoding ahead in a helper process; the traffic is made in a process of its own), kept under
  --keep and reused; the ingest rate over the whole build and per million events;
* `leadledger replay` (a subprocess): events/s and the peak RSS of its largest process;
* every query's p50 / p99 (plain, --by, period, as-of, known-at, drill-down), in-process through the
  analyst service AND through `leadledger serve` over HTTP;
* the peer: DuckDB over the exported JSONL loaded into memory (load time reported apart, query time
  only), answering the same questions, the answers checked equal to ours.

Ratios, not absolute times: these machines are shared. Results are appended to bench/results.md with
the command (--no-results to skip).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.projections_bench import DUCK_VELOCITY, latencies
from bench.record import Lines, append_results
from leadledger.bootstrap import bootstrap, open_read_models
from lifecycle.audit import export_envelopes
from lifecycle.forked import Child, send_from_child
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from lifecycle.simulate import generate
from projections.query import Query
from projections.service import Analytics

START = datetime(2025, 1, 6, tzinfo=UTC)
SECRET = "leadledger-scale-bench-secret"
EVENTS_PER_LEAD = 8.2  # what the simulator produces on average
SCHEMA = "ll_scale_bench"
FAR = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Backend:
    name: str
    home: Path
    dsn: str | None

    def settings(self) -> Settings:
        extra: dict[str, Any] = {"postgres_dsn": self.dsn, "postgres_schema": SCHEMA} if self.dsn else {}
        return Settings(home=self.home, secret=SECRET.encode(), **extra)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
        env.update(LEADLEDGER_HOME=str(self.home), LEADLEDGER_SECRET=SECRET)
        if self.dsn:
            env.update(LEADLEDGER_POSTGRES_DSN=self.dsn, LEADLEDGER_POSTGRES_SCHEMA=SCHEMA)
        return env

    def built(self) -> bool:
        marker = self.home / "scale-built.json"
        return marker.exists()


# ---------------------------------------------------------------- the store


def build(backend: Backend, events: int, seed: int, days: int, say: Callable[[str], None]) -> None:
    """Ingest simulated traffic; say the rate over the whole build and per million messages."""
    app = bootstrap(backend.settings())
    leads = max(10, int(events / EVENTS_PER_LEAD))
    started = time.perf_counter()
    marks: list[tuple[int, float]] = [(0, started)]
    stream = enumerate(generated(leads, seed, days), start=1)
    n = 0
    for n, _ in enumerate(InboundHandler(app, batch_size=2000, decode_ahead=True).handle_stream(stream), start=1):
        if n % 1_000_000 == 0:
            marks.append((n, time.perf_counter()))
    marks.append((n, time.perf_counter()))
    app.store.close()
    seconds = marks[-1][1] - started
    rates = [f"{(b - a) / (tb - ta):,.0f}" for (a, ta), (b, tb) in itertools.pairwise(marks) if b > a]
    say(f"- {backend.name}: ingest of {n:,} messages ({leads:,} leads over {days} days) in {seconds:,.0f} s = "
        f"**{n / seconds:,.0f} events/s** over the whole build; per million: {', '.join(rates)}")
    (backend.home / "scale-built.json").write_text(orjson.dumps({"messages": n, "seconds": seconds}).decode())


def generated(leads: int, seed: int, days: int) -> Iterator[bytes]:
    """The simulator's messages as JSON, made in a forked helper (the upstream systems' work, not the
    ingest's) and handed over its pipe a few thousand at a time (the pipe bounds how far it runs ahead)."""
    child = Child(_generate_main, leads, seed, days, name="scale generator")
    try:
        while chunk := child.recv():
            yield from chunk
    finally:
        child.kill()


def _generate_main(conn: Connection, leads: int, seed: int, days: int) -> None:
    """The helper: chunks of messages, then an empty one."""
    chunk: list[bytes] = []
    for message in generate(leads=leads, seed=seed, start=START, days=days):
        chunk.append(orjson.dumps(message))
        if len(chunk) >= 2000:
            send_from_child(conn, chunk)
            chunk = []
    if chunk:
        send_from_child(conn, chunk)
    send_from_child(conn, [])


def export(backend: Backend, path: Path) -> tuple[int, datetime, datetime]:
    """The store as JSONL envelopes; (events, the median occurred time, the median recorded time)."""
    app = bootstrap(backend.settings())
    occurred: list[str] = []
    recorded: list[str] = []
    with path.open("wb") as fh:
        for env in export_envelopes(app.store):
            fh.write(orjson.dumps(env) + b"\n")
            occurred.append(env["time"])
            recorded.append(env["recordedat"])
    app.store.close()
    occurred.sort()
    recorded.sort()
    return (len(occurred), datetime.fromisoformat(occurred[len(occurred) // 2]),
            datetime.fromisoformat(recorded[len(recorded) // 2]))


def replay(backend: Backend, say: Callable[[str], None]) -> None:
    """`leadledger replay` in a process of its own: events/s and its largest process's peak RSS."""
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lifecycle", "replay", "--json"],
                          env=backend.env(), capture_output=True, check=True)
    seconds = time.perf_counter() - started
    lines = done.stdout.decode().strip().splitlines()
    answer, rss_kb = orjson.loads("\n".join(lines[:-1])), int(lines[-1])
    events = int(answer.get("events", 0))
    say(f"- {backend.name}: replay of {events:,} events in {seconds:,.1f} s = **{events / seconds:,.0f} events/s**, "
        f"peak RSS of its largest process {rss_kb / 1024:,.0f} MB")


# ---------------------------------------------------------------- our queries


@dataclass(frozen=True)
class Question:
    """One question: our query, the HTTP request for it, and DuckDB's SQL with its parameters."""

    name: str
    query: Query
    path: str
    params: dict[str, str]
    duck: str
    duck_params: list[Any]


def questions(mid: datetime, known: datetime, cell_key: str, cell_stage: str) -> list[Question]:
    month = (mid - timedelta(days=30), mid)
    window = {"from": month[0].isoformat(), "to": month[1].isoformat()}
    return [
        Question("funnel", Query(), "/funnel", {}, DUCK_FUNNEL, [FAR, FAR, None, None]),
        Question("funnel --by channel", Query(by="channel"), "/funnel", {"by": "channel"}, DUCK_FUNNEL_BY,
                 [FAR, FAR, None, None]),
        Question("funnel --mode period (30 d)", Query(mode="period", from_=month[0], to=month[1]), "/funnel",
                 {"mode": "period", **window}, DUCK_FUNNEL_PERIOD, [FAR, FAR, month[0], month[1]]),
        Question("funnel --as-of (mid)", Query(as_of=mid), "/funnel", {"as_of": mid.isoformat()}, DUCK_FUNNEL,
                 [mid, FAR, None, None]),
        Question("funnel --as-of (mid) --known-at (median recorded)", Query(as_of=mid, known_at=known), "/funnel",
                 {"as_of": mid.isoformat(), "known_at": known.isoformat()}, DUCK_FUNNEL, [mid, known, None, None]),
        Question("velocity", Query(), "/velocity", {}, DUCK_VELOCITY, []),
        Question("velocity --by channel", Query(by="channel"), "/velocity", {"by": "channel"}, DUCK_VELOCITY_AT,
                 [FAR, True]),
        Question("velocity --as-of (mid)", Query(as_of=mid), "/velocity", {"as_of": mid.isoformat()},
                 DUCK_VELOCITY_AT, [mid, False]),
        Question(f"leads --reached {cell_stage} --by channel --key {cell_key} (first 50)",
                 Query(reached=cell_stage, by="channel", key=cell_key), "/leads",
                 {"reached": cell_stage, "by": "channel", "key": cell_key}, DUCK_DRILL,
                 [FAR, FAR, cell_stage, cell_key]),
    ]


# a lead's visible events (occurred at or before T, recorded at or before K), its capture (the first), and
# its stage entries: what our read models count (docs/contract.md)
_VISIBLE = """
WITH vis AS (SELECT * FROM ev WHERE ts <= $1 AND rec <= $2),
caps AS (SELECT lid, arg_min(channel, ts) AS channel, min(ts) AS cap FROM vis WHERE name = 'LeadCaptured'
         GROUP BY lid)
"""
DUCK_FUNNEL = _VISIBLE + """
SELECT NULL, e.to_stage, COUNT(DISTINCT e.lid) FROM vis e JOIN caps c USING (lid)
WHERE e.to_stage IS NOT NULL AND ($3::TIMESTAMPTZ IS NULL OR c.cap >= $3::TIMESTAMPTZ)
  AND ($4::TIMESTAMPTZ IS NULL OR c.cap < $4::TIMESTAMPTZ) GROUP BY 2
"""
DUCK_FUNNEL_BY = _VISIBLE + """
SELECT c.channel, e.to_stage, COUNT(DISTINCT e.lid) FROM vis e JOIN caps c USING (lid)
WHERE e.to_stage IS NOT NULL AND ($3::TIMESTAMPTZ IS NULL OR c.cap >= $3::TIMESTAMPTZ)
  AND ($4::TIMESTAMPTZ IS NULL OR c.cap < $4::TIMESTAMPTZ) GROUP BY 1, 2
"""
DUCK_FUNNEL_PERIOD = _VISIBLE + """
SELECT NULL, e.to_stage, COUNT(DISTINCT e.lid) FROM vis e JOIN caps c USING (lid)
WHERE e.to_stage IS NOT NULL AND e.ts >= $3 AND e.ts < $4 GROUP BY 2
"""
DUCK_DRILL = _VISIBLE + """
SELECT e.lid, min(e.ts) AS entered FROM vis e JOIN caps c USING (lid)
WHERE e.to_stage = $3 AND c.channel = $4 GROUP BY e.lid ORDER BY entered, e.lid LIMIT 50
"""
# velocity at an as-of time T ($1), per channel when $2: the stays left at or before T and the first entries
# at or before T, of leads captured at or before T
DUCK_VELOCITY_AT = """
WITH changes AS (
  SELECT lid, to_stage, ts, LEAD(ts) OVER (PARTITION BY lid ORDER BY ts, v) AS left_ts
  FROM ev WHERE to_stage IS NOT NULL),
caps AS (SELECT lid, arg_min(channel, ts) AS channel, MIN(ts) AS cap FROM ev WHERE name = 'LeadCaptured'
         GROUP BY lid),
stays AS (SELECT k.channel, c.to_stage, epoch_us(c.left_ts) - epoch_us(c.ts) AS us FROM changes c JOIN caps k USING (lid)
          WHERE c.left_ts IS NOT NULL AND c.left_ts <= $1 AND k.cap <= $1),
firsts AS (
  SELECT k.channel, c.to_stage, MIN(epoch_us(c.ts)) - MIN(epoch_us(k.cap)) AS us
  FROM changes c JOIN caps k USING (lid)
  WHERE c.to_stage IN ('mql', 'sal', 'sql', 'won') AND k.cap <= $1 GROUP BY c.lid, k.channel, c.to_stage
  HAVING MIN(c.ts) <= $1)
SELECT 'in', CASE WHEN $2 THEN channel END, to_stage, COUNT(*), AVG(us) / 1e6, quantile_disc(us, 0.5) / 1e6,
       quantile_disc(us, 0.9) / 1e6
FROM stays GROUP BY 2, 3
UNION ALL
SELECT 'to', CASE WHEN $2 THEN channel END, to_stage, COUNT(*), AVG(us) / 1e6, quantile_disc(us, 0.5) / 1e6,
       quantile_disc(us, 0.9) / 1e6
FROM firsts GROUP BY 2, 3
"""
DUCK_LOAD = """
CREATE TABLE ev AS
SELECT replace(subject, '-', '') AS lid, sequence AS v, split_part(type, '.', 3) AS name,
       CAST(time AS TIMESTAMPTZ) AS ts, CAST(recordedat AS TIMESTAMPTZ) AS rec,
       data.to_stage AS to_stage, data.channel AS channel
FROM read_json('{path}', format='newline_delimited', columns={{subject: 'VARCHAR', sequence: 'BIGINT',
     type: 'VARCHAR', time: 'VARCHAR', recordedat: 'VARCHAR', data: 'STRUCT(to_stage VARCHAR, channel VARCHAR)'}})
"""


def same(path: str, answer: dict[str, Any], rows: list[tuple[Any, ...]]) -> bool:
    """Whether DuckDB's rows are our answer: funnel counts per (key, stage), a drill-down page's leads and
    entry times in order, velocity count / mean (to 1 ms) / nearest-rank p50 and p90 per stage."""
    if path == "/leads":
        return [(item["lead_id"].replace("-", ""), item["entered_at"]) for item in answer["leads"]] == [
            (lid, ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) for lid, ts in rows]
    if path == "/velocity":
        groups = {g["key"]: g for g in answer["groups"]}
        for row in rows:
            kind, key, stage, count, mean, p50, p90 = row if len(row) == 7 else (row[0], None, *row[1:])
            if key not in groups:
                return False
            mine = groups[key]["time_in_stage" if kind == "in" else "time_to_stage"][stage]
            if (mine["count"], mine["p50_s"], mine["p90_s"]) != (count, p50, p90) or abs(mine["mean_s"] - mean) > 1e-3:
                return False
        return True
    ours = {(g["key"], stage): n for g in answer["groups"] for stage, n in g["stages"].items() if n}
    return ours == {(key, stage): n for key, stage, n in rows}


# ---------------------------------------------------------------- HTTP


@contextmanager
def serving(backend: Backend) -> Iterator[str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "error"], env=backend.env(), stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not come up: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- the run


def drill_cell(analytics: Analytics) -> tuple[str, str]:
    """The (channel, stage) cell with the most leads short of the captures (a large, real cell)."""
    cells = [(n, g["key"], stage) for g in analytics.funnel(Query(by="channel"))["groups"]
             for stage, n in g["stages"].items() if stage != "captured"]
    _, key, stage = max(cells)
    return key, stage


def bench_backend(backend: Backend, args: argparse.Namespace, say: Callable[[str], None], work: Path) -> None:
    if not backend.built():
        backend.home.mkdir(parents=True, exist_ok=True)
        build(backend, args.events, args.seed, args.days, say)
    else:
        say(f"- {backend.name}: store reused from {backend.home} ({orjson.loads((backend.home / 'scale-built.json').read_bytes())})")
    if args.replay_only:
        replay(backend, say)
        return
    jsonl = work / f"{backend.name}.jsonl"
    events, mid, known = export(backend, jsonl)
    say(f"- {backend.name}: {events:,} events exported ({jsonl.stat().st_size / 1e9:,.2f} GB JSONL); as-of = the median "
        f"occurred time {mid.isoformat()}, known-at = the median recorded time {known.isoformat()}")
    replay(backend, say)

    analytics = Analytics(open_read_models(backend.settings()), bootstrap(backend.settings()).store,
                          auto_refresh=False)
    key, stage = drill_cell(analytics)
    asked = questions(mid, known, key, stage)
    ours: dict[str, tuple[float, float, Any]] = {}
    for q in asked:
        ask: Callable[[Query], dict[str, Any]] = {"/leads": analytics.leads, "/velocity": analytics.velocity}.get(
            q.path, analytics.funnel)

        def call(ask: Callable[[Query], dict[str, Any]] = ask, q: Question = q) -> dict[str, Any]:
            return ask(q.query)
        ours[q.name] = latencies(call, args.runs)
    analytics.close()

    http: dict[str, tuple[float, float]] = {}
    with serving(backend) as base, httpx.Client(base_url=base, timeout=600) as client:
        for q in asked:
            def get(q: Question = q) -> Any:
                response = client.get(q.path, params=q.params)
                response.raise_for_status()
                return response.json()
            p50, p99, _ = latencies(get, args.runs)
            http[q.name] = (p50, p99)

    import duckdb

    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(DUCK_LOAD.format(path=jsonl))
    load_s = time.perf_counter() - t
    say(f"- {backend.name}: DuckDB loads the JSONL into memory in {load_s:,.1f} s (not counted below)")
    say(f"- {backend.name}: p50 / p99 ms over {args.runs} runs (DuckDB: {args.duck_runs} runs)")
    say("")
    say("| question | ours in-process | ours over HTTP | DuckDB in memory | DuckDB p99 ÷ ours p99 | same answer |")
    say("|---|---|---|---|---|---|")
    for q in asked:
        times = []
        rows: list[tuple[Any, ...]] = []
        for _ in range(args.duck_runs):
            t = time.perf_counter()
            rows = con.execute(q.duck, q.duck_params).fetchall()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        d50, d99 = statistics.median(times), times[max(0, -(-99 * len(times) // 100) - 1)]
        o50, o99, answer = ours[q.name]
        agree = same(q.path, answer, rows)
        say(f"| `{q.name}` | {o50:.1f} / {o99:.1f} | {http[q.name][0]:.1f} / {http[q.name][1]:.1f} | "
            f"{d50:.1f} / {d99:.1f} | {d99 / o99:.1f}× | {'yes' if agree else '**NO**'} |")
    say("")
    con.close()


def drop_schema(dsn: str) -> None:
    """A store not kept leaves nothing behind on the server."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="approximate store size")
    parser.add_argument("--days", type=int, default=730, help="the simulated traffic's span in days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the built stores here (one directory per backend), reused")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="sqlite and/or postgres (postgres needs LEADLEDGER_POSTGRES_DSN)")
    parser.add_argument("--runs", type=int, default=50, help="runs per query for our percentiles")
    parser.add_argument("--duck-runs", type=int, default=10, help="runs per query for DuckDB's")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/results.md")
    parser.add_argument("--replay-only", action="store_true",
                        help="build or reuse the stores and measure `replay` only (no export, no queries)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ll-scale-"))
    root = args.keep or work / "stores"
    lines = Lines()
    try:
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            dsn = os.environ.get("LEADLEDGER_POSTGRES_DSN") if name == "postgres" else None
            if name == "postgres" and not dsn:
                lines.say("- postgres: skipped, LEADLEDGER_POSTGRES_DSN is not set")
                continue
            bench_backend(Backend(name, root / name, dsn), args, lines.say, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.keep is None and os.environ.get("LEADLEDGER_POSTGRES_DSN"):
            drop_schema(os.environ["LEADLEDGER_POSTGRES_DSN"])
    if not args.no_results:
        append_results("scale", "bench.scale", argv, lines)


if __name__ == "__main__":
    main()
