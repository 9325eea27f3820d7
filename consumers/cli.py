"""The Kafka roles `consume` and `relay`; `register(cli)` adds them to the `leadledger` group.

Settings come from the environment (consumers/kafka_config.py) with `--bootstrap` on top.
SIGTERM or Ctrl-C stops cleanly after the batch in hand; a second one aborts it (nothing
of an aborted batch is committed, so it is redelivered or republished on restart).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from consumers.kafka_config import KafkaSettings
from lifecycle.cli import Context, fail, pass_ctx
from lifecycle.settings import SettingsError

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(func: F) -> F:
    return click.option("--bootstrap", help="Kafka bootstrap servers host:port[,...] [env LEADLEDGER_KAFKA_BOOTSTRAP].")(
        func
    )


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    try:
        return KafkaSettings.from_env(bootstrap=bootstrap)
    except SettingsError as exc:
        fail(str(exc), 2)
        raise  # unreachable: fail() exits


def log_to_stderr() -> None:
    """Progress lines of the roles on stderr (the `leadledger.*` loggers, INFO)."""
    logger = logging.getLogger("leadledger")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Yields `should_stop()`: true after the first SIGTERM/SIGINT; the second aborts at once."""
    requested = {"stop": False}

    def on_signal(signum: int, _frame: Any) -> None:
        if requested["stop"]:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: abort the batch in hand")
        requested["stop"] = True
        logging.getLogger("leadledger").info(
            "%s: stopping after the batch in hand (again to abort it)", signal.Signals(signum).name
        )

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: requested["stop"]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _kafka_failed(settings: KafkaSettings, exc: Exception) -> None:
    fail(f"Kafka at {settings.bootstrap}: {exc}")


@click.command()
@bootstrap_option
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Records per poll, applied in one transaction.")
@click.option("--once", is_flag=True, help="Stop when every assigned partition is consumed to its end.")
@click.option("--log-every", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds between progress lines.")
@click.option("--session-timeout-ms", type=click.IntRange(1000, 3_600_000), default=10_000, show_default=True,
              help="Group session timeout (a crashed member's partitions move after this).")
@click.option("--max-poll-interval-ms", type=click.IntRange(1000, 3_600_000), default=60_000, show_default=True,
              help="Longest time one batch may take before the group assumes this consumer died.")
@pass_ctx
def consume(ctx: Context, bootstrap: str | None, batch: int, once: bool, log_every: float,
            session_timeout_ms: int, max_poll_interval_ms: int) -> None:
    """Apply inbound messages from Kafka (leadledger.inbound); bad ones go to the dead-letter topic.

    Offsets are committed only after the batch is stored and its dead letters are
    acknowledged, so a crash redelivers rather than loses (repeats are duplicates).
    One lead's messages stay in order only if upstream keys them by the lead's e-mail
    or id: Kafka keeps order per partition."""
    from kafka.errors import KafkaError

    from consumers.inbound import ConsumeOptions, run_consumer
    from consumers.relay import ensure_topics
    from lifecycle.inbound import InboundHandler

    settings = kafka_settings(bootstrap)
    log_to_stderr()
    options = ConsumeOptions(batch=batch, once=once, log_every_s=log_every,
                             session_timeout_ms=session_timeout_ms,
                             heartbeat_interval_ms=max(300, min(3000, session_timeout_ms // 3)),
                             max_poll_interval_ms=max_poll_interval_ms)
    handler = InboundHandler(ctx.app, batch_size=batch)
    try:
        ensure_topics(settings)
        with stop_on_signals() as should_stop:
            stats = run_consumer(handler, settings, options, should_stop)
    except KafkaError as exc:
        _kafka_failed(settings, exc)
    except KeyboardInterrupt:
        fail("aborted: the batch in hand was not committed and will be redelivered", 130)
    else:
        click.echo(f"consumed {stats.records}: applied {stats.applied}, duplicates {stats.duplicates}, "
                   f"dead-lettered {stats.dead_lettered}", err=True)


@click.command()
@bootstrap_option
@click.option("--from-start", is_flag=True,
              help="Publish every stored event again (a broker that lost data, a new topic).")
@click.option("--once", is_flag=True, help="Stop when every stored event is published.")
@click.option("--batch", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Events per batch (sent, acknowledged, then the position is stored).")
@click.option("--poll-interval", type=click.FloatRange(0.01, 3600), default=0.5, show_default=True,
              help="Seconds to wait for new events when caught up.")
@click.option("--log-every", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds between progress lines.")
@pass_ctx
def relay(ctx: Context, bootstrap: str | None, from_start: bool, once: bool, batch: int,
          poll_interval: float, log_every: float) -> None:
    """Publish stored events, in store order, to Kafka (leadledger.lead-events, key = lead id).

    The position is stored in the event store after each acknowledged batch; a restart
    resumes there (at-least-once: consumers de-duplicate by lead id and version)."""
    from kafka.errors import KafkaError

    from consumers.relay import run_relay

    settings = kafka_settings(bootstrap)
    log_to_stderr()
    store = ctx.app.store
    try:
        with stop_on_signals() as should_stop:
            stats = run_relay(store, settings, from_start=from_start, once=once, batch=batch,
                              poll_interval_s=poll_interval, log_every_s=log_every, should_stop=should_stop)
    except KafkaError as exc:
        _kafka_failed(settings, exc)
    except KeyboardInterrupt:
        fail("aborted: the batch in hand was not recorded as published and will be sent again", 130)
    else:
        click.echo(f"published {stats.published} events to {settings.events_topic}; "
                   f"position {stats.position}", err=True)


def register(group: click.Group) -> None:
    """Add the Kafka roles to the `leadledger` group."""
    for command in (consume, relay):
        group.add_command(command)
