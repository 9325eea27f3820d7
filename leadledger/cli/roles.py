"""The Kafka roles and the operator's views: `consume`, `relay`, `status` and `serve`.

SIGTERM or Ctrl-C stops a role cleanly after the batch in hand; a second one aborts it
(nothing of an aborted batch is committed, so it is redelivered or republished on restart).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
import uvicorn
from kafka.errors import KafkaError

from consumers.inbound import ConsumeOptions, run_consumer
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from consumers.relay import run_relay
from consumers.status import collect
from leadledger.bootstrap import open_read_models, open_store, read_models_exist
from leadledger.cli.common import (
    Context,
    emit_json,
    fail,
    json_option,
    log_to_stderr,
    pass_ctx,
    stop_on_signals,
)
from leadledger.http.app import create_app
from leadledger.http.worker import DEFAULT_QUERY_THREADS
from lifecycle.inbound import InboundHandler
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


# ---------------------------------------------------------------- status and serve


@click.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Where every role stands: relay vs store head, projector checkpoints vs end offsets (lag),
    embedded projector vs store head, inbound consumer lag, dead-letter count."""
    settings = ctx.check_store()
    try:
        kafka = KafkaSettings.from_env(bootstrap=settings.kafka_bootstrap) if settings.kafka_bootstrap else None
        store = open_store(settings)
    except SettingsError as exc:
        fail(str(exc), 2)
        return
    read_models = open_read_models(settings) if read_models_exist(settings) else None
    try:
        report = collect(store, read_models, kafka, "postgres" if settings.postgres_dsn else "sqlite")
    finally:
        store.close()
        if read_models is not None:
            read_models.close()
    if as_json:
        emit_json(report)
    else:
        _render_status(report)


def _render_status(report: dict[str, Any]) -> None:
    store = report["store"]
    emb = report["embedded_projector"]
    click.echo(f"event store ({store['backend']}): head at notification {store['head']}")
    checkpoint = "none" if emb["checkpoint"] is None else emb["checkpoint"]
    click.echo(f"embedded projector: checkpoint {checkpoint}, {emb['lag']} behind the store")
    op = report["operator"]
    if op["position"] is None:
        click.echo("operator: has not run (leadledger operate)")
    else:
        where = f", Kafka offsets {op['offsets']}" if "offsets" in op else ""
        click.echo(f"operator: position {op['position']}, {op['lag']} behind the store ({op['commits']} commits){where}")
    kafka = report["kafka"]
    if not kafka["configured"]:
        click.echo(kafka["note"])
        return
    relay = kafka["relay"]
    click.echo(f"Kafka {kafka['bootstrap']}")
    click.echo(f"  relay -> {relay['topic']}: position {relay['position']} of store head {relay['store_head']}, "
               f"{relay['behind']} behind")
    if not kafka.get("reachable"):
        click.echo(f"  broker unreachable: {kafka.get('error')}")
        return
    consumer = kafka["consumer"]
    click.echo(f"  consume {consumer['topic']} (group {consumer['group']}): lag {consumer['lag']}")
    for p in consumer["partitions"]:
        committed = "none" if p["committed"] is None else p["committed"]
        click.echo(f"    partition {p['partition']}: committed {committed}, end {p['end_offset']}, lag {p['lag']}")
    projector = kafka["projector"]
    click.echo(f"  project {projector['source']} (group {projector['group']}): lag {projector['lag']}")
    if not projector["topic_exists"]:
        click.echo("    (the topic does not exist yet)")
    for p in projector["partitions"]:
        checkpoint = "none" if p["checkpoint"] is None else p["checkpoint"]
        click.echo(f"    partition {p['partition']}: checkpoint {checkpoint}, end {p['end_offset']}, lag {p['lag']}")
    dlq = kafka["dlq"]
    click.echo(f"  dead letters in {dlq['topic']}: {dlq['records']}")



TOKEN_ENV = "LEADLEDGER_API_TOKEN"
PERSONAL_DATA_ENV = "LEADLEDGER_API_PERSONAL_DATA"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the API to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="Server log detail (on stderr).")
@click.option("--query-threads", type=click.IntRange(1, 64), default=None,
              help="Requests answered in parallel, each thread with its own database connections "
                   "[default: one per CPU core, at most 4].")
@click.option("--personal-data", is_flag=True, default=None,
              help=f"Include e-mail, name and phone in /leads/{{id}}/history (default: they read [sealed]); "
                   f"needs {TOKEN_ENV} [env {PERSONAL_DATA_ENV}=1].")
@pass_ctx
def serve(ctx: Context, host: str, port: int, log_level: str, query_threads: int | None,
          personal_data: bool | None) -> None:
    """Read-only HTTP JSON API (and the HTML report at /report).

    \b
    GET /funnel /velocity /attribution /speed /leads /leads/{id}/history /report
    with the query flags in snake_case (by, from, to, mode, model, conversion, as_of,
    known_at; stage, channel, owner, limit for /leads); bodies are the --json output.
    A parameter an endpoint does not take is a 400, like a bad value.
    GET /openapi.json describes it all; GET /healthz answers {"status": "ok"}.

    With LEADLEDGER_API_TOKEN set, every endpoint but /healthz and /openapi.json needs
    "Authorization: Bearer <token>" (401 otherwise). Every request sees the events stored
    up to that moment. Personal data leaves the API only with --personal-data, and
    only behind a token.
    """
    token = os.environ.get(TOKEN_ENV) or None
    if personal_data is None:
        personal_data = os.environ.get(PERSONAL_DATA_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if personal_data and token is None:
        fail(f"--personal-data ({PERSONAL_DATA_ENV}) needs a bearer token: set {TOKEN_ENV} to a long random "
             "string, or serve without personal data", 2)
    if not _is_loopback(host) and token is None:
        click.echo(f"warning: serving on {host} without authentication; set {TOKEN_ENV} to require a "
                   "bearer token", err=True)
    app = create_app(ctx.check_store(), token, query_threads=query_threads or DEFAULT_QUERY_THREADS,
                     personal_data=personal_data)
    app.state.worker.start()  # open and catch up now: a bad store is an error here, not a traceback in uvicorn
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"leadledger API on http://{shown}:{port}/ (OpenAPI: /openapi.json, report: /report, "
               f"auth: {'bearer token' if token else 'none'}, personal data: "
               f"{'in clear' if personal_data else 'sealed'})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, server_header=False)
