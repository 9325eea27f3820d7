"""`leadledger alerts`: deliver SLA breach alerts to Kafka and to the webhook (consumers/alerts.py)."""

from __future__ import annotations

import click

from consumers.alerts import AlertDispatcher, AlertSettings, PollingStop, SinkCounts, make_sinks
from consumers.kafka.settings import KafkaSettings
from leadledger.cli.common import (
    Context,
    emit_json,
    fail,
    json_option,
    log_to_stderr,
    pass_ctx,
    stop_on_signals,
)
from lifecycle.settings import SettingsError


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers host:port[,...] [env LEADLEDGER_KAFKA_BOOTSTRAP]; "
                                  "without Kafka the alerts go to the webhook only.")
@click.option("--once", is_flag=True,
              help="Deliver the pending alerts (with one run's retries), then stop; exit 1 if any is left.")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True,
              help="Seconds between runs when caught up (or after a failed delivery).")
@json_option
@pass_ctx
def alerts(ctx: Context, bootstrap: str | None, once: bool, interval: float, as_json: bool) -> None:
    """Deliver SLA breach alerts (rules with on_breach = ["alert"]) to Kafka leadledger.alerts and
    POST them to LEADLEDGER_ALERT_WEBHOOK.

    At least once: each sink's position is stored in the event store after the alerts before it
    were acknowledged, so a restart re-sends what was not (receivers de-duplicate by the CloudEvent
    id, also the Idempotency-Key header). A failing sink keeps its position and is tried again;
    alerts the webhook refuses for good (4xx) are appended to HOME/alerts.dead.jsonl."""
    try:
        alert_settings = AlertSettings.from_env()
        configured = bootstrap or ctx.settings.kafka_bootstrap
        kafka = KafkaSettings.from_env(bootstrap=bootstrap) if configured else None
    except SettingsError as exc:
        fail(str(exc), 2)
    sinks = make_sinks(alert_settings, ctx.settings.home, kafka)
    if not sinks:
        fail("nowhere to deliver alerts: set LEADLEDGER_ALERT_WEBHOOK and/or LEADLEDGER_KAFKA_BOOTSTRAP "
             "(or --bootstrap)", 2)
    log_to_stderr()
    dispatcher = AlertDispatcher(ctx.app.store, sinks)
    try:
        if once:
            counts = dispatcher.run_once()
        else:
            with stop_on_signals() as should_stop:
                counts = dispatcher.run_forever(PollingStop(should_stop), interval)
    except KeyboardInterrupt:
        fail("aborted: alerts not yet recorded as delivered will be sent again", 130)
    finally:
        dispatcher.close()
    _report(counts, as_json)
    if once and any(c.pending for c in counts.values()):
        fail(f"{sum(c.pending for c in counts.values())} alerts are not delivered yet; run again later")


def _report(counts: dict[str, SinkCounts], as_json: bool) -> None:
    if as_json:
        emit_json({"sinks": {name: c.as_json() for name, c in counts.items()}})
        return
    for name, c in counts.items():
        line = (f"alerts -> {name}: sent {c.sent}, dead-lettered {c.dead_lettered}, failed {c.failed}, "
                f"pending {c.pending}, position {c.position}")
        click.echo(line + (f" ({c.error})" if c.error else ""), err=True)
