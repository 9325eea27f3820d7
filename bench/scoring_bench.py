"""`leadledger scoring backtest` vs `leadledger replay`: `python -m bench.scoring_bench [--leads N] [--keep DIR] [--record]`.

* store: `leadledger simulate --leads N --seed S` (the ingest path, ~9 events a lead: 100k leads make
  ~900k events); with `--keep DIR` it is built there once and reused.
* backtest: one scoring model (SCORING_MODEL below: fit rules on the simulated country, industry,
  employees, role and e-mail kind, behaviour rules on its touch kinds) over every lead, as the command
  computes it — every stored event read and checked (`decode`), folded per lead, then each lead's
  would-be MQL instant, outcomes and score at capture + 7 days. Reported: leads/s, events/s, wall and
  CPU seconds, and how much of the wall time reading, decoding and folding took.
* the command as a person runs it: `leadledger scoring backtest MODEL --against MODEL --json` in a
  subprocess (two models, interpreter start-up included), wall seconds.
* replay: every read model rebuilt from zero from the same store, as `leadledger replay` does.

Rounds are interleaved (backtest, replay, …), each in a freshly spawned process; the medians and the
ratio backtest ÷ replay wall time (target <= 2: a back-test of one model costs no more than two
replays) are printed as a markdown block, and with `--record` appended to bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.operate_bench import (
    SECRET,
    STORE_DB,
    _commit,
    _cpu,
    _dirty,
    _settings,
    code_fingerprint,
    isolated,
    projector_round,
)
from bench.record import Lines, append_results

TARGET = 2.0  # backtest wall time <= TARGET × replay wall time
AT_AGE = timedelta(days=7)
SCORING_MODEL = """
[scoring]
threshold = 70

[[scoring.fit]]
id = "base"
points = 30

[[scoring.fit]]
id = "large-company"
when = { employees_gte = 200 }
points = 10

[[scoring.fit]]
id = "small-company"
when = { employees_lte = 49 }
points = -5

[[scoring.fit]]
id = "buying-industry"
when = { industry = ["software", "financial services"] }
points = 5

[[scoring.fit]]
id = "dach"
when = { country = ["DE", "AT", "CH"] }
points = 3

[[scoring.fit]]
id = "decision-maker"
when = { role = ["executive", "manager"] }
points = 7

[[scoring.fit]]
id = "free-mail"
when = { email_domain_kind = "free" }
points = -7

[[scoring.behaviour]]
id = "demo-or-pricing"
when = { touch_kind = ["demo_requested", "pricing_page"] }
points = 10
half_life = "30d"
max_per_day = 20

[[scoring.behaviour]]
id = "webinar-or-intro-call"
when = { touch_kind = ["webinar_attended", "intro_call"] }
points = 10
half_life = "30d"
max_per_day = 20

[[scoring.behaviour]]
id = "any-touch"
points = 1
half_life = "14d"
max_per_day = 3
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(home), LEADLEDGER_SECRET=SECRET.decode())
    return env


def _leadledger(home: Path, *args: str) -> tuple[float, bytes]:
    """`leadledger ARGS` in a subprocess on the embedded store under `home`: (wall seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=_env(home), capture_output=True,
                          check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"leadledger {' '.join(args)} failed ({done.returncode}):\n{done.stderr.decode()}")
    return seconds, done.stdout


def build_store(home: Path, leads: int, seed: int) -> tuple[float, dict[str, Any]]:
    """`leadledger simulate`: (seconds, its JSON answer)."""
    seconds, out = _leadledger(home, "simulate", "--leads", str(leads), "--seed", str(seed), "--json")
    return seconds, orjson.loads(out)


def store_facts(home: Path) -> dict[str, Any]:
    from leadledger.bootstrap import bootstrap

    store = bootstrap(_settings(home)).store
    try:
        return {"events": store.head_position(), "leads": len(store.lead_ids())}
    finally:
        store.close()


class _Timed:
    """The rows as they are read, counted, with the instant the last one was handed over."""

    def __init__(self, rows: Iterable[Any]) -> None:
        self.rows, self.count, self.done = rows, 0, 0.0

    def __iter__(self) -> Iterator[Any]:
        for row in self.rows:
            self.count += 1
            yield row
        self.done = time.perf_counter()


def backtest_round(store_home: Path) -> dict[str, Any]:
    """One model over every lead, as `scoring backtest` computes it (no rendering)."""
    from leadledger.bootstrap import bootstrap
    from lifecycle.operate import decode
    from lifecycle.operations.fairness import Window
    from lifecycle.operations.policy import parse_policy
    from lifecycle.operations.scoring_backtest import Model, backtest

    settings = _settings(store_home)
    scoring = parse_policy(SCORING_MODEL).scoring
    assert scoring is not None
    store = bootstrap(settings).store
    try:
        cpu0, started = _cpu(resource.RUSAGE_SELF), time.perf_counter()
        rows = _Timed(store.iter_raw(0, batch=20_000))
        result = backtest((decode(row) for row in rows), [Model("bench", "bench", scoring)], Window(),
                          at_age=AT_AGE, default_threshold=settings.mql_threshold)
        wall, cpu = time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu0
    finally:
        store.close()
    (model,) = result.models
    return {"leads": result.leads, "events": rows.count, "wall": wall, "cpu": cpu, "read": rows.done - started,
            "would_be_mql": model.would_be_mql, "won": result.won, "auc": model.auc,
            "too_young": result.too_young, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "code": code_fingerprint()}


def command_round(store_home: Path, model_file: Path) -> dict[str, Any]:
    """`leadledger scoring backtest MODEL --against MODEL --json`, as a person runs it."""
    seconds, out = _leadledger(store_home, "scoring", "backtest", str(model_file), "--against", str(model_file),
                               "--json")
    body = orjson.loads(out)
    return {"wall": seconds, "leads": body["leads"], "would_be_mql": [m["would_be_mql"] for m in body["models"]]}


def _median(rounds: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def _each(values: Iterable[float], digits: int = 1) -> str:
    return " · ".join(f"{v:,.{digits}f}" for v in values)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000, help="simulated leads (default 100000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the store here once and reuse it")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, interleaved (default 3)")
    parser.add_argument("--workers", type=int, default=None,
                        help="the replay's worker processes (default: `leadledger replay`'s)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/results.md")
    args = parser.parse_args(argv)
    from projections.engine.replay import REPLAY_WORKERS

    workers = REPLAY_WORKERS if args.workers is None else args.workers
    work = Path(tempfile.mkdtemp(prefix="ll-scorebench-"))
    store_home = args.keep or work / "store"
    model_file = work / "model.toml"
    model_file.write_text(SCORING_MODEL, encoding="utf-8")
    lines = Lines()
    say = lines.say
    try:
        if (store_home / STORE_DB).exists():
            built = f"reused from {store_home}"
        else:
            store_home.mkdir(parents=True, exist_ok=True)
            seconds, simulated = build_store(store_home, args.leads, args.seed)
            built = (f"built in {seconds:.0f}s by `leadledger simulate --leads {args.leads} --seed {args.seed}` "
                     f"({simulated['applied']:,} events applied)")
        facts = isolated(store_facts, store_home)
        say(f"- store: {facts['events']:,} events of {facts['leads']:,} leads; {built}")
        say(f"- backtest: one model (bench/scoring_bench.py SCORING_MODEL: 7 fit and 3 behaviour rules), score "
            f"at capture + {AT_AGE.days}d; replay: `leadledger replay`'s bulk path, "
            + ("in one process" if workers < 2 else f"{workers} worker processes + the writer"))
        say(f"- machine: {os.cpu_count()} cores, shared with other work running at the same time "
            f"(load average {os.getloadavg()[0]:.1f} at the start); each round in a freshly spawned process")

        backs: list[dict[str, Any]] = []
        commands: list[dict[str, Any]] = []
        replays: list[dict[str, Any]] = []
        for r in range(1, args.rounds + 1):
            back = isolated(backtest_round, store_home)
            backs.append(back)
            print(f"  round {r} backtest: {back['leads']:,} leads, {back['events']:,} events in "
                  f"{back['wall']:.1f}s (reading and folding {back['read']:.1f}s)", flush=True)
            command = command_round(store_home, model_file)
            commands.append(command)
            print(f"  round {r} command: {command['wall']:.1f}s", flush=True)
            replay = isolated(projector_round, store_home, work / f"replay{r}", workers)
            replays.append(replay)
            print(f"  round {r} replay: {replay['events']:,} events in {replay['seconds']:.1f}s", flush=True)

        for back in backs:
            back["leads_s"], back["events_s"] = back["leads"] / back["wall"], back["events"] / back["wall"]
        for replay in replays:
            replay["events_s"] = replay["events"] / replay["seconds"]
        back_wall, replay_wall = _median(backs, "wall"), _median(replays, "seconds")
        ratio = back_wall / replay_wall
        first = backs[0]
        say("")
        say(f"| {args.rounds} rounds, interleaved | per round | median |")
        say("|---|---|---|")
        say(f"| backtest (one model): leads/s | {_each((b['leads_s'] for b in backs), 0)} | "
            f"**{_median(backs, 'leads_s'):,.0f}** |")
        say(f"| backtest (one model): events/s | {_each((b['events_s'] for b in backs), 0)} | "
            f"**{_median(backs, 'events_s'):,.0f}** |")
        say(f"| backtest (one model): wall seconds | {_each(b['wall'] for b in backs)} | {back_wall:.1f} |")
        say(f"| … of which reading, checking and folding the events | {_each(b['read'] for b in backs)} | "
            f"{_median(backs, 'read'):.1f} |")
        say(f"| backtest (one model): CPU seconds | {_each(b['cpu'] for b in backs)} | {_median(backs, 'cpu'):.1f} |")
        say(f"| `scoring backtest MODEL --against MODEL --json` (two models, a subprocess): wall seconds | "
            f"{_each(c['wall'] for c in commands)} | {_median(commands, 'wall'):.1f} |")
        say(f"| replay from zero: events/s | {_each((p['events_s'] for p in replays), 0)} | "
            f"**{_median(replays, 'events_s'):,.0f}** |")
        say(f"| replay from zero: wall seconds | {_each(p['seconds'] for p in replays)} | {replay_wall:.1f} |")
        say(f"| replay from zero: CPU seconds (all processes) | {_each(p['cpu'] for p in replays)} | "
            f"{_median(replays, 'cpu'):.1f} |")
        say("")
        say(f"- backtest ÷ replay wall time (medians): **{ratio:.2f}×** — target <= {TARGET:g}×: "
            + ("**met**" if ratio <= TARGET else "**missed**"))
        say(f"- the model: {first['would_be_mql']:,} would-be MQLs of {first['leads']:,} leads ({first['won']:,} won), "
            f"AUC at {AT_AGE.days}d {first['auc'] if first['auc'] is None else round(first['auc'], 3)}, "
            f"{first['too_young']:,} too young; the command agreed: "
            + ("yes" if all(c["leads"] == first["leads"] and c["would_be_mql"] == [first["would_be_mql"]] * 2
                            for c in commands) else "**no**"))
        say(f"- peak RSS: backtest {max(b['rss_mb'] for b in backs):,.0f} MB, replay writer "
            f"{max(p['rss_mb'] for p in replays):,.0f} MB, its largest worker "
            f"{max(p['children_rss_mb'] for p in replays):,.0f} MB")
        back_codes, replay_codes = sorted({b["code"] for b in backs}), sorted({p["code"] for p in replays})
        say(f"- code (sha256 of the repository files each round imported): backtest {', '.join(back_codes)}, "
            f"replay {', '.join(replay_codes)}"
            + ("" if len(back_codes) == len(replay_codes) == 1 else
               " — **the tree changed between rounds** (edited meanwhile): the rounds ran different code"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.record:
        commit = _commit() + ("+uncommitted changes" if _dirty() else "")
        append_results("scoring backtest vs replay", "bench.scoring_bench", argv, lines,
                       detail=f"git {commit}, shared with other work")


if __name__ == "__main__":
    main()
