"""Router micro-benchmark: `python -m bench.routing_bench [--decisions N] [--seed S] [--record]`.

One in-process routing decision (SPEC §9.2) over a policy of 50 reps in three zones (capacities, absences)
and 20 rules, 19 of them with a `when` most leads fail, so a typical decision scans many rules and a pool
of up to 50 reps. Prints p50 / p99 / max of `route` (target: p99 < 1 ms) and of `release_instant`, in
wall time and in the thread's CPU time (which a busy machine's preemptions do not inflate);
`--record` appends the lines to bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

from bench.record import Lines, append_results
from lifecycle.operations.policy import Policy, parse_policy
from lifecycle.operations.routing import Assigned, advance, release_instant, route

REPS = 50
RULES = 20
START = datetime(2026, 3, 2, tzinfo=UTC)
ZONES = (("emea", "Europe/Berlin", "08:00-18:00"), ("amer", "America/New_York", "09:00-17:00"),
         ("apac", "Asia/Tokyo", "09:00-18:00"))
COUNTRIES = ("DE", "AT", "CH", "FR", "US", "JP", "GB", "NL", "SE", "BR")


def build_policy(rng: random.Random) -> Policy:
    lines: list[str] = []
    for cid, zone, hours in ZONES:
        days = ", ".join(f'{d} = "{hours}"' for d in ("mon", "tue", "wed", "thu", "fri"))
        holidays = ", ".join(f'"{date(2026, 1, 1) + timedelta(days=rng.randrange(365))}"' for _ in range(12))
        lines += [f"[calendars.{cid}]", f'timezone = "{zone}"', f"hours = {{ {days} }}", f"holidays = [{holidays}]"]
    for i in range(REPS):
        away = date(2026, 3, 2) + timedelta(days=rng.randrange(120))
        lines += [f"[reps.rep{i:02d}]", f'calendar = "{ZONES[i % 3][0]}"', f"capacity = {rng.randint(20, 60)}",
                  f'absences = [{{ from = "{away}", to = "{away + timedelta(days=rng.randint(1, 10))}" }}]']
    lines.append("[routing]")
    for r in range(RULES):
        catch_all = r == RULES - 1
        size = REPS if catch_all else rng.randint(5, 25)
        pool = ", ".join(f"rep{i:02d} = {rng.randint(1, 5)}" for i in sorted(rng.sample(range(REPS), size)))
        lines += ["[[routing.rules]]", f'id = "rule{r:02d}"', f"pool = {{ {pool} }}"]
        if not catch_all:
            countries = ", ".join(f'"{c}"' for c in rng.sample(COUNTRIES, 2))
            lines.append(f"when = {{ country = [{countries}], employees_gte = {rng.choice((200, 1000, 5000))} }}")
            if rng.random() < 0.5:
                lines.append('sticky = "account"')
    return parse_policy("\n".join(lines))


def percentiles(samples_ns: Sequence[int]) -> tuple[float, float, float, float]:
    """p50, p99 (nearest rank), max and mean, in µs."""
    ordered = sorted(samples_ns)

    def rank(q: float) -> float:
        return ordered[max(0, -(-len(ordered) * int(q * 100) // 100) - 1)] / 1000

    return rank(0.5), rank(0.99), ordered[-1] / 1000, statistics.fmean(ordered) / 1000


def timed(n: int, call: Callable[[int], object]) -> tuple[list[int], list[int]]:
    """Wall and CPU nanoseconds of each call. The thread's CPU time leaves out the time the process was
    preempted, which on a busy machine is what a wall-clock p99 measures (one scheduler slice ≈ 4 ms)."""
    wall, cpu = [], []
    for i in range(n):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        call(i)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="append the results to bench/results.md")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    policy = build_policy(rng)
    reps = sorted(policy.reps)
    accounts = [f"acct{i}" for i in range(400)] + [None] * 100
    open_leads: dict[str, list[str | None]] = {rep: [rng.choice(accounts) for _ in range(rng.randint(0, 30))]
                                               for rep in reps}
    # instants spread over four months, so calendars and absences are exercised (and their caches warm)
    instants = [START + timedelta(seconds=rng.randrange(120 * 86_400)) for _ in range(args.decisions)]
    leads = [{"country": rng.choice(COUNTRIES), "employees": rng.choice((10, 300, 2000, 8000)),
              "account_key": rng.choice(accounts)} for _ in range(args.decisions)]
    currents: dict[str, dict[str, int]] = {}

    def decide(i: int) -> None:
        decision = route(policy, leads[i], instants[i], open_leads, currents)
        if isinstance(decision, Assigned):
            currents[decision.rule] = advance(currents.get(decision.rule, {}), decision)

    timed(min(2000, args.decisions), decide)  # warm-up: imports, zone data, per-date caches
    decisions = timed(args.decisions, decide)
    cold_policy = build_policy(random.Random(args.seed + 1))  # nothing cached for its calendars' dates
    cold = timed(200, lambda i: route(cold_policy, leads[i], instants[i], open_leads, {}))
    releases = timed(min(5000, args.decisions), lambda i: release_instant(policy, leads[i], instants[i], open_leads))

    lines = Lines()
    lines.say(f"policy: {REPS} reps in {len(ZONES)} zones, {RULES} rules (the last matches every lead); "
              f"{args.decisions} decisions at instants over 120 days; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
    for name, (wall, cpu) in (("route (warm)", decisions), ("route (cold dates, 200)", cold),
                              ("release_instant", releases)):
        for clock, samples in (("wall", wall), ("cpu", cpu)):
            p50, p99, top, mean = percentiles(samples)
            lines.say(f"{name:<24} {clock:<4} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs   max {top:9.1f} µs   "
                      f"mean {mean:8.1f} µs")
    wall_p99, cpu_p99 = percentiles(decisions[0])[1], percentiles(decisions[1])[1]
    lines.say(f"target p99 < 1000 µs per decision: cpu {'met' if cpu_p99 < 1000 else 'MISSED'} "
              f"({cpu_p99:.0f} µs), wall {'met' if wall_p99 < 1000 else 'MISSED'} ({wall_p99:.0f} µs)")
    if args.record:
        append_results("Router micro-benchmark", "bench.routing_bench", argv, lines)


if __name__ == "__main__":
    main()
