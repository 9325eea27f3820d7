"""`leadledger operate` catch-up vs the projector's: `python -m bench.operate_bench [--events N] [--keep DIR] [--record]`.

* store: the demo policy (lifecycle/simulate/default_policy.toml) is published FIRST, so it is in force
  for every event, then ~N events of simulated traffic are ingested through the inbound handler (the
  `ingest` path). With `--keep DIR` the store is built there once and reused.
* operate: a fresh `OperatorRunner` on a copy of that store (made before the round, not timed),
  `run_once(now=<the last event's time>)`, as `leadledger operate --once` does: the whole log is handled
  (routing on the policy's `[routing] on` stage entries for ownerless leads, SLA clocks on every lead)
  and the decisions are committed with the position. Reported: lead events handled/s, decisions/s and
  decisions by kind; then, on the operated copy, a restart (a second fresh runner: it rebuilds its state
  by folding the whole log, events and decisions, and has nothing left to handle): events folded/s. A
  long catch-up reads and decodes in a helper process (lifecycle/operate.py `_Decoder`): its CPU is
  counted in operate's.
* projector: every read model rebuilt from zero from the SAME store (the N lead events, without the
  operator's decisions), as `leadledger replay` does (bulk path, `--workers` processes + the writer).

Rounds are interleaved (op, proj, op, proj, …), each in a freshly spawned process (a clean heap and a
per-round peak RSS); medians and the ratio operate ÷ projector events/s (target >= 50 %) are printed
as a markdown block, and with `--record` appended to bench/results.md with the command.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from bench.record import Lines, append_results

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 120
SECRET = b"leadledger-bench-secret"
#: stored events per simulated lead (measured: 500k-event stores of seed 7, 120 days); the build is
#: sized with a margin below it so the store reaches N
EVENTS_PER_LEAD = 8.2
POLICY_FILE = Path(__file__).parents[1] / "lifecycle" / "simulate" / "default_policy.toml"
STORE_DB = "events.sqlite"
TARGET = 0.5


def _settings(home: Path) -> Any:
    from lifecycle.settings import Settings

    return Settings(home=home, secret=SECRET, postgres_dsn=None)


def build_store(home: Path, events: int, seed: int) -> tuple[float, int, int]:
    """Publish the demo policy, then ingest simulated traffic; (seconds, leads, stored events)."""
    from leadledger.bootstrap import bootstrap
    from lifecycle.inbound import InboundHandler
    from lifecycle.policies import PolicyStream
    from lifecycle.simulate import generate

    app = bootstrap(_settings(home))
    PolicyStream(app.store).publish(POLICY_FILE.read_text(), actor="bench", now=START)
    leads = max(10, int(events / (EVENTS_PER_LEAD * 0.98)) + 1)
    started = time.perf_counter()
    stream = ((i, orjson.dumps(m)) for i, m in
              enumerate(generate(leads=leads, seed=seed, start=START, days=DAYS), start=1))
    for _ in InboundHandler(app, batch_size=2000).handle_stream(stream):
        pass
    stored = app.store.head_position()
    app.store.close()
    return time.perf_counter() - started, leads, stored


def store_facts(home: Path) -> dict[str, Any]:
    """Events, policy versions and the last event's time (the end of the traffic: operate's `now`)."""
    from leadledger.bootstrap import bootstrap
    from lifecycle.operate import decode
    from lifecycle.policies import PolicyStream

    store = bootstrap(_settings(home)).store
    try:
        head = store.head_position()
        last = decode(store.raw(head - 1, 1)[0])
        versions = PolicyStream(store).versions()
        return {"events": head, "leads": len(store.lead_ids()), "now": last.occurred.isoformat(),
                "policies": len(versions), "policy_position": versions[0].position if versions else None}
    finally:
        store.close()


# ---------------------------------------------------------------- the rounds (each in its own process)


ROOT = Path(__file__).parents[1]


def code_fingerprint() -> str:
    """sha256 (12 hex digits) of the repository's source files this process has imported: other people
    edit the tree while a long run goes on, and each round's fresh process imports what is there then."""
    import hashlib
    import sys

    digest = hashlib.sha256()
    files = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str):
            path = Path(name).resolve()
            if path.is_relative_to(ROOT) and ".venv" not in path.parts:
                files.add(path)
    for path in sorted(files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def operate_round(store_home: Path, work: Path, now_iso: str, batch: int) -> dict[str, Any]:
    """A fresh operator's catch-up over a copy of the store, then a restart's rebuild on that copy."""
    from leadledger.bootstrap import bootstrap
    from lifecycle.operate import OperatorRunner

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy2(store_home / STORE_DB, work / STORE_DB)
    now = datetime.fromisoformat(now_iso)
    store = bootstrap(_settings(work)).store

    def cpu() -> float:  # the runner's process and its decoder (joined when the catch-up ends)
        return _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)

    try:
        cpu0, wall0 = cpu(), time.perf_counter()
        report = OperatorRunner(store, batch=batch).run_once(now)
        wall, used = time.perf_counter() - wall0, cpu() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        decoder_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        cpu0, wall0 = cpu(), time.perf_counter()
        again = OperatorRunner(store, batch=batch).run_once(now)  # a restart: rebuild, nothing to handle
        rwall, rcpu = time.perf_counter() - wall0, cpu() - cpu0
        head = store.head_position()
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"handled": report.handled, "folded": report.folded, "decisions": dict(report.decisions),
            "seconds": report.seconds, "wall": wall, "cpu": used, "rss_mb": rss, "decoder_rss_mb": decoder_rss,
            "head": head,
            "restart_folded": again.folded, "restart_handled": again.handled,
            "restart_decisions": sum(again.decisions.values()), "restart_seconds": again.seconds,
            "restart_wall": rwall, "restart_cpu": rcpu, "rss_after_restart_mb":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "code": code_fingerprint()}


def projector_round(store_home: Path, work: Path, workers: int, batch: int | None = None) -> dict[str, Any]:
    """`leadledger replay`: drop every read model and rebuild it from a snapshot of the store; with `batch`,
    `leadledger project --once` from empty read models instead: the incremental projector's catch-up (what
    `project` and every query's refresh do), batch by batch like operate."""
    from leadledger.bootstrap import bootstrap, open_read_models
    from projections.engine.runner import Runner
    from projections.engine.sources import EmbeddedSource

    store = bootstrap(_settings(store_home)).store
    db = open_read_models(_settings(work))
    try:
        runner = Runner(db)
        runner.setup()
        source = EmbeddedSource(store)
        cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        n = runner.replay(source, workers=workers).events if batch is None else runner.catch_up(source, batch)
        seconds = time.perf_counter() - started
        cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0
    finally:
        db.close()
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"events": n, "seconds": seconds, "cpu": cpu,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "code": code_fingerprint()}


def _child(send: Connection, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        send.send(("ok", call(*args)))
    except BaseException as exc:  # reported by the parent
        import traceback

        send.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    finally:
        send.close()


def isolated(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` in a freshly spawned (not daemonic: the replay forks its workers) process."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(send, call, args))
    process.start()
    send.close()
    status, value = recv.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(f"{call.__name__} failed in its process:\n{value}")
    return value


# ---------------------------------------------------------------- main


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parents[1], check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dirty() -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, cwd=Path(__file__).parents[1], check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.strip())


def _rates(values: Sequence[float]) -> str:
    return " · ".join(f"{v:,.0f}" for v in values)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000, help="the store's size (at least; default 500000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the store here once and reuse it")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, interleaved (default 3)")
    parser.add_argument("--batch", type=int, default=5000, help="operate's events per transaction (its default)")
    parser.add_argument("--workers", type=int, default=None,
                        help="the projector replay's worker processes (default: `leadledger replay`'s)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/results.md")
    args = parser.parse_args(argv)
    from projections.engine.replay import REPLAY_WORKERS

    workers = REPLAY_WORKERS if args.workers is None else args.workers

    work = Path(tempfile.mkdtemp(prefix="ll-opbench-"))
    store_home = args.keep or work / "store"
    lines = Lines()
    say = lines.say
    try:
        if (store_home / STORE_DB).exists():
            built = f"reused from {store_home}"
        else:
            store_home.mkdir(parents=True, exist_ok=True)
            seconds, leads, stored = isolated(_build, store_home, args.events, args.seed)
            built = f"built in {seconds:.0f}s ({leads:,} simulated leads, seed {args.seed}, {DAYS} days from " \
                    f"{START:%Y-%m-%d}, ingested through the inbound handler: {stored / seconds:,.0f} events/s)"
        facts = isolated(store_facts, store_home)
        if facts["events"] < args.events:
            say(f"**warning**: the store holds {facts['events']:,} events, fewer than --events {args.events:,}")
        if facts["policies"] != 1 or facts["policy_position"] != 0:
            say(f"**warning**: the store has {facts['policies']} policy version(s), the first at position "
                f"{facts['policy_position']} (expected the demo policy alone, published before any event)")
        say(f"- store: {facts['events']:,} events of {facts['leads']:,} leads, the demo policy "
            f"(lifecycle/simulate/default_policy.toml) published before the first event; {built}")
        say(f"- operate's clock (`run_once(now)`): {facts['now']} (the last event's time); "
            f"batch {args.batch:,}; projector: `leadledger replay`'s bulk path, "
            + ("in one process" if workers < 2 else f"{workers} worker processes + the writer")
            + ", over the same store without the operator's decisions")
        say(f"- machine: {os.cpu_count()} cores, shared with other work running at the same time "
            f"(load average {os.getloadavg()[0]:.1f} at the start); each round in a freshly spawned process")

        ops: list[dict[str, Any]] = []
        projs: list[dict[str, Any]] = []
        incs: list[dict[str, Any]] = []
        for r in range(1, args.rounds + 1):
            op = isolated(operate_round, store_home, work / f"op{r}", facts["now"], args.batch)
            ops.append(op)
            print(f"  round {r} operate: {op['handled']:,} handled in {op['seconds']:.1f}s "
                  f"({op['handled'] / op['seconds']:,.0f}/s), {sum(op['decisions'].values()):,} decisions; "
                  f"restart folded {op['restart_folded']:,} in {op['restart_seconds']:.1f}s", flush=True)
            proj = isolated(projector_round, store_home, work / f"proj{r}", workers)
            projs.append(proj)
            print(f"  round {r} projector: {proj['events']:,} in {proj['seconds']:.1f}s "
                  f"({proj['events'] / proj['seconds']:,.0f}/s)", flush=True)
            inc = isolated(projector_round, store_home, work / f"inc{r}", 1, args.batch)
            incs.append(inc)
            print(f"  round {r} incremental projector: {inc['events']:,} in {inc['seconds']:.1f}s "
                  f"({inc['events'] / inc['seconds']:,.0f}/s)", flush=True)

        op_rates = [o["handled"] / o["seconds"] for o in ops]
        dec_rates = [sum(o["decisions"].values()) / o["seconds"] for o in ops]
        fold_rates = [o["restart_folded"] / o["restart_seconds"] for o in ops]
        proj_rates = [p["events"] / p["seconds"] for p in projs]
        op_med, proj_med = statistics.median(op_rates), statistics.median(proj_rates)
        kinds = Counter(ops[0]["decisions"])
        same = all(o["decisions"] == ops[0]["decisions"] for o in ops)
        decided = sum(kinds.values())
        mid = sorted(ops, key=lambda o: o["handled"] / o["seconds"])[len(ops) // 2]
        ratio = op_med / proj_med
        say("")
        say(f"| {args.rounds} rounds, interleaved | per round | median |")
        say("|---|---|---|")
        say(f"| operate catch-up: lead events handled/s | {_rates(op_rates)} | **{op_med:,.0f}** |")
        say(f"| operate catch-up: decisions/s | {_rates(dec_rates)} | {statistics.median(dec_rates):,.0f} |")
        say("| operate catch-up: wall seconds (`run_once`) | "
            + " · ".join(f"{o['seconds']:.1f}" for o in ops) + f" | {statistics.median(o['seconds'] for o in ops):.1f} |")
        say("| operate catch-up: CPU seconds (user + sys, with its decoder process) | "
            + " · ".join(f"{o['cpu']:.1f}" for o in ops) + f" | {statistics.median(o['cpu'] for o in ops):.1f} |")
        say(f"| operate restart (fresh runner on the operated store): events folded/s | {_rates(fold_rates)} | "
            f"{statistics.median(fold_rates):,.0f} |")
        say(f"| projector replay from zero: events/s | {_rates(proj_rates)} | **{proj_med:,.0f}** |")
        say("| projector replay: wall seconds | " + " · ".join(f"{p['seconds']:.1f}" for p in projs)
            + f" | {statistics.median(p['seconds'] for p in projs):.1f} |")
        say("| projector replay: CPU seconds (all processes) | " + " · ".join(f"{p['cpu']:.1f}" for p in projs)
            + f" | {statistics.median(p['cpu'] for p in projs):.1f} |")
        inc_rates = [i["events"] / i["seconds"] for i in incs]
        inc_med = statistics.median(inc_rates)
        say(f"| incremental projector (`project --once`, batch {args.batch:,}) from zero: events/s | "
            f"{_rates(inc_rates)} | **{inc_med:,.0f}** |")
        say("| incremental projector: CPU seconds | " + " · ".join(f"{i['cpu']:.1f}" for i in incs)
            + f" | {statistics.median(i['cpu'] for i in incs):.1f} |")
        say("")
        say(f"- operate ÷ incremental projector events/s (medians): **{op_med / inc_med:.0%}** (the same kind of "
            "catch-up: one process, batch by batch)")
        say(f"- operate ÷ projector events/s (medians): **{ratio:.0%}** — target >= {TARGET:.0%}: "
            + ("**met**" if ratio >= TARGET else "**missed**")
            + f"; per CPU second (medians): operate {statistics.median(o['handled'] / o['cpu'] for o in ops):,.0f}, "
            f"projector {statistics.median(p['events'] / p['cpu'] for p in projs):,.0f} events/s")
        say(f"- operate handled {mid['handled']:,} lead events (folded {mid['folded']:,} while rebuilding: a fresh "
            f"operator has no position), decided {decided:,}: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items()))
            + ("" if same else " (round 1; the rounds DIFFER: " + "; ".join(str(o["decisions"]) for o in ops) + ")")
            + f"; store head after: {mid['head']:,}")
        say(f"- the restart folded {mid['restart_folded']:,} events (lead events + decisions), handled "
            f"{mid['restart_handled']:,}, decided {mid['restart_decisions']:,}"
            + (" (a restart repeats nothing)" if all(o["restart_decisions"] == 0 for o in ops) else
               " — **a restart decided again: the rebuilt state differs from the live one** (per round: "
               + ", ".join(str(o["restart_decisions"]) for o in ops) + ")"))
        say(f"- peak RSS: operate {max(o['rss_mb'] for o in ops):,.0f} MB (catch-up; its decoder process "
            f"{max(o.get('decoder_rss_mb', 0) for o in ops):,.0f} MB; "
            f"{max(o['rss_after_restart_mb'] for o in ops):,.0f} MB after the restart's rebuild in the same process), "
            f"projector writer {max(p['rss_mb'] for p in projs):,.0f} MB, its largest worker "
            f"{max(p['children_rss_mb'] for p in projs):,.0f} MB")
        op_codes = sorted({o["code"] for o in ops})
        proj_codes = sorted({p["code"] for p in projs})
        say(f"- code (sha256 of the repository files each round imported): operate {', '.join(op_codes)}, "
            f"projector {', '.join(proj_codes)}"
            + ("" if len(op_codes) == len(proj_codes) == 1 else
               " — **the tree changed between rounds** (edited meanwhile): the rounds ran different code"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.record:
        commit = _commit() + ("+uncommitted changes" if _dirty() else "")
        append_results("operate catch-up vs the projector's", "bench.operate_bench", argv, lines,
                       detail=f"git {commit}, shared with other work")


def _build(home: Path, events: int, seed: int) -> tuple[float, int, int]:
    return build_store(home, events, seed)


if __name__ == "__main__":
    main()
