"""HTTP API under concurrent load: `python -m bench.http_bench [--events N] [--keep DIR]`.

A store of ~N events (simulated traffic through the ingest path) and its read models; then
`leadledger serve` as a real process on a free loopback port, once per `--query-threads`
value, while `--clients` client threads (httpx, keep-alive) ask a fixed mix of queries
(funnel, funnel by channel, velocity, attribution time_decay by campaign, speed by owner,
leads) for `--seconds`. Reports requests/s and p50/p99 latency per setting; the peer is the
same server with one query thread (one request at a time).

Results are appended to bench/results.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.projections_bench import SECRET, build_store, replay
from bench.record import Lines, append_results

MIX = ["/funnel", "/funnel?by=channel", "/velocity", "/attribution?model=time_decay&by=campaign",
       "/speed?by=owner", "/leads?limit=50"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(home: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(home), LEADLEDGER_SECRET=SECRET.decode())
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "serve", "--port", str(port), "--log-level",
                             "warning", "--query-threads", str(threads)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not come up")


def load(base: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    """(requests answered, latencies in ms) of `clients` threads asking MIX for `seconds`."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            k = i
            while time.monotonic() < stop:
                started = time.perf_counter()
                answer = http.get(MIX[k % len(MIX)])
                latencies[i].append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    failures.append(f"{MIX[k % len(MIX)]}: {answer.status_code}")
                k += 1

    pool = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    flat = sorted(x for per in latencies for x in per)
    return len(flat), flat


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return sorted_values[max(0, math.ceil(len(sorted_values) * p / 100) - 1)] if sorted_values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="approximate store size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the built store here and reuse it if it exists")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--query-threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ll-httpbench-"))
    home = args.keep or work / "home"
    lines = Lines()
    say = lines.say

    try:
        if (home / "events.sqlite").exists():
            say(f"- store: reusing {home}")
        else:
            home.mkdir(parents=True, exist_ok=True)
            say(f"- store: built by ingesting simulated traffic in {build_store(home, args.events, args.seed):.1f}s")
        (home / "readmodels.sqlite").unlink(missing_ok=True)
        n, seconds = replay(home, home, workers=2)
        say(f"- read models: {n:,} events replayed in {seconds:.1f}s")
        rates = {}
        for threads in args.query_threads:
            proc, base = serve(home, threads)
            try:
                load(base, args.clients, 1.0)  # warm the page cache and every thread's connections
                answered, latencies = load(base, args.clients, args.seconds)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            rates[threads] = answered / args.seconds
            say(f"- `serve --query-threads {threads}`, {args.clients} clients, {args.seconds:.0f}s of the mix "
                f"{' '.join(MIX)}: **{rates[threads]:,.1f} requests/s**, latency p50 {pct(latencies, 50):.1f} ms, "
                f"p99 {pct(latencies, 99):.1f} ms")
        for threads in rates:
            if threads != 1 and 1 in rates:
                say(f"- {threads} query threads ÷ 1 (the peer: one request at a time): "
                    f"{rates[threads] / rates[1]:.2f}× the requests/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_results:
        append_results("HTTP API under load (issue 3)", "bench.http_bench", argv, lines)


if __name__ == "__main__":
    main()
