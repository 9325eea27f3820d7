"""The read-model roles: `project` (follow the store, or lead-events on Kafka) and `replay`.

SIGTERM or Ctrl-C stops `project` cleanly after the batch in hand.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

import click
from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.projector import project_from_kafka
from leadledger.bootstrap import open_read_models, open_store
from leadledger.cli.common import (
    Context,
    emit_json,
    fail,
    json_option,
    log_to_stderr,
    pass_ctx,
    stop_on_signals,
)
from lifecycle.settings import Settings, SettingsError
from projections.engine.registry import BY_NAME
from projections.engine.replay import REPLAY_WORKERS
from projections.engine.runner import Runner
from projections.engine.sources import EmbeddedSource

log = logging.getLogger("leadledger.project")


def _runner(ctx: Context) -> tuple[Any, Any, Any]:
    try:
        store = open_store(ctx.check_store())
        db = open_read_models(ctx.settings)
    except SettingsError as exc:
        fail(str(exc), 2)
        raise
    runner = Runner(db)

    def close() -> None:
        db.close()
        store.close()

    click.get_current_context().call_on_close(close)
    return runner, EmbeddedSource(store), store


@click.command()
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Events folded per transaction.")
@click.option("--poll-interval", type=click.FloatRange(0.01, 3600), default=1.0, show_default=True,
              help="Seconds to wait when caught up.")
@click.option("--log-every", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds between progress lines.")
@click.option("--once", is_flag=True, help="Catch up and exit instead of following.")
@click.option("--source", "source_kind", type=click.Choice(["store", "kafka"]), default="store", show_default=True,
              help="store: the event store's notification log; kafka: the lead-events topic in a consumer "
                   "group (LEADLEDGER_KAFKA_*; see docs/kafka.md).")
@pass_ctx
def project(ctx: Context, batch_size: int, poll_interval: float, log_every: float, once: bool,
            source_kind: str) -> None:
    """Keep the read models up to date: follow the event store, or with --source kafka the
    lead-events topic in a consumer group (Ctrl-C / SIGTERM stop cleanly).

    Every batch's rows and checkpoint commit in one transaction, so a crash neither
    loses nor double-counts an event; a restart resumes after the checkpoint."""
    if source_kind == "kafka":
        _project_from_kafka(ctx.settings, batch_size=batch_size, poll_interval=poll_interval, log_every=log_every,
                        once=once)
        return
    runner, source, _ = _runner(ctx)
    stale = runner.setup()
    if stale:
        click.echo(f"rebuilt read models whose definition changed: {', '.join(stale)}", err=True)
    stop = {"now": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    total = window = 0
    started = mark = time.monotonic()
    click.echo(f"projecting from {source.name} after {runner.checkpoints(source.name) or {0: 0}}", err=True)
    try:
        while not stop["now"]:
            result = runner.run_batch(source, batch_size)
            total += result.events
            window += result.events
            now = time.monotonic()
            if window and (now - mark >= log_every or result.events == 0):
                state = "caught up" if result.events == 0 else "projecting"
                click.echo(f"{state}: {total} events ({window / max(now - mark, 1e-6):,.0f} events/s), "
                           f"position {runner.checkpoints(source.name)}", err=True)
                window, mark = 0, now
            if result.events == 0:
                if once:
                    break
                time.sleep(poll_interval)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    elapsed = time.monotonic() - started
    click.echo(f"stopped: {total} events in {elapsed:.1f}s, position {runner.checkpoints(source.name)}",
               err=True)


@click.command()
@click.option("--projection", "names", multiple=True,
              help=f"Rebuild only this read model (repeatable): {', '.join(BY_NAME)}.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes that read, decode and fold the store (default 2; 1: none, this process reads and folds too).")
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=None, hidden=True,
              help="Ignored: a full replay folds each lead once (kept for old scripts).")
@json_option
@pass_ctx
def replay(ctx: Context, names: tuple[str, ...], workers: int | None, batch_size: int | None,
           as_json: bool) -> None:
    """Drop and rebuild read models from zero (all, or --projection NAME), with a progress bar.

    A full replay reads the store up to its head when the replay starts, builds every read
    model anew beside the live ones (which `project` and queries go on using), then swaps them
    in at once with that position as the checkpoint: interrupted, it leaves the read models as
    they were; events stored meanwhile are picked up by the next catch-up."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        fail(f"unknown projection {', '.join(unknown)}; known: {', '.join(BY_NAME)}", 2)
    runner, source, _ = _runner(ctx)
    runner.setup()
    started = time.monotonic()
    if names:
        # one read model: re-derived from the stored timelines, no need to read the store
        runner.reset(list(names))
        events = sum(len(facts) for _, facts in runner.timelines())
        elapsed = time.monotonic() - started
        if as_json:
            emit_json({"events": events, "projections": list(names), "seconds": round(elapsed, 3)})
        else:
            click.echo(f"replayed {events:,} events into {', '.join(names)} in {elapsed:.1f}s")
        return
    expected = source.remaining({}) or 0
    # refreshed from the progress callback (no refresh thread: the replay forks its workers)
    with Progress(TextColumn("replay {task.description:5}"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,} events"), TimeRemainingColumn(),
                  auto_refresh=False, disable=as_json or not sys.stderr.isatty(),
                  console=_stderr_console()) as bar:
        tasks = {phase: bar.add_task(phase, total=expected) for phase in ("read", "write")}
        shown = {"at": 0.0}

        def advance(phase: str, events: int) -> None:
            bar.update(tasks[phase], completed=events)
            now = time.monotonic()
            if now - shown["at"] >= 0.1:
                bar.refresh()
                shown["at"] = now

        result = runner.replay(source, progress=advance, workers=workers or REPLAY_WORKERS)
        for task in tasks.values():
            bar.update(task, total=result.events, completed=result.events)
        bar.refresh()
    elapsed = time.monotonic() - started
    rebuilt = list(BY_NAME)
    if as_json:
        emit_json({"events": result.events, "projections": rebuilt, "seconds": round(elapsed, 3),
                   "position": result.head})
    else:
        rate = result.events / elapsed if elapsed > 0 else 0.0
        click.echo(f"replayed {result.events:,} events of {result.leads:,} leads into {', '.join(rebuilt)} "
                   f"in {elapsed:.1f}s ({rate:,.0f} events/s), position {result.head}")


def _project_from_kafka(settings: Settings, *, batch_size: int, poll_interval: float, log_every: float,
                        once: bool) -> None:
    """`leadledger project --source kafka`: settings from the environment, progress on stderr,
    SIGTERM / Ctrl-C stop after the batch in hand."""
    try:
        kafka = KafkaSettings.from_env(bootstrap=settings.kafka_bootstrap)
        tuning = ConsumerTuning.from_env()
    except SettingsError as exc:
        fail(str(exc), 2)
        raise
    log_to_stderr()
    db = open_read_models(settings)
    try:
        with stop_on_signals() as should_stop:
            progress = project_from_kafka(db, kafka, batch_size=batch_size, poll_interval=min(poll_interval, 1.0),
                                          log_every=log_every, once=once, tuning=tuning, should_stop=should_stop,
                                          echo=log.info)
    except KafkaError as exc:
        fail(f"Kafka at {kafka.bootstrap}: {exc}")
    except KeyboardInterrupt:
        fail("aborted: the batch in hand was rolled back and will be read again", 130)
    else:
        click.echo(f"projected {progress.events} events from {kafka.events_topic}", err=True)
    finally:
        db.close()


def _stderr_console() -> Console:
    return Console(stderr=True)


