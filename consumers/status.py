"""`leadledger status`: how far each role has got — relay, inbound consumer, projectors, DLQ.

Positions come from where each role keeps them: the relay's in the event store
(`relay_position`), the projectors' in the read-model database (`rm_checkpoints`), the inbound
consumer's in its Kafka group. End offsets are confirmed with a fetch (`LogEnds`). Without
LEADLEDGER_KAFKA_BOOTSTRAP only the embedded positions are reported.
"""

from __future__ import annotations

import os
from typing import Any

import click

from lifecycle.cli import Context, emit_json, fail, json_option, pass_ctx
from lifecycle.settings import Settings, SettingsError

EMBEDDED_SOURCE = "store"


def _read_checkpoints(settings: Settings) -> dict[str, dict[int, int]]:
    """Every rm_checkpoints row, by source name (empty if the read models were never built)."""
    from projections.db import READMODELS_DB, ReadModelDB
    from projections.runner import CHECKPOINTS

    if not settings.postgres_dsn and not (settings.home / READMODELS_DB).exists():
        return {}
    db = ReadModelDB(settings)
    try:
        if not db.exists(CHECKPOINTS.name):
            return {}
        out: dict[str, dict[int, int]] = {}
        for name, part, pos in db.query(
                f"SELECT source_name, partition_no, position_no FROM {db.name(CHECKPOINTS.name)}"):
            out.setdefault(str(name), {})[int(part)] = int(pos)
        return out
    finally:
        db.close()


def collect(settings: Settings, kafka_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The status report as a dict (the `--json` output)."""
    from lifecycle.bootstrap import bootstrap

    store = bootstrap(settings).store
    try:
        head = store.head_position()
        checkpoints = _read_checkpoints(settings)
        embedded = checkpoints.get(EMBEDDED_SOURCE, {}).get(0)
        report: dict[str, Any] = {
            "store": {"head": head, "backend": "postgres" if settings.postgres_dsn else "sqlite"},
            "embedded_projector": {"source": EMBEDDED_SOURCE, "checkpoint": embedded,
                                   "lag": head - (embedded or 0)},
        }
        from consumers.kafka_config import KafkaSettings

        env = dict(os.environ) if kafka_env is None else kafka_env
        if settings.kafka_bootstrap:
            env["LEADLEDGER_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
        if not env.get("LEADLEDGER_KAFKA_BOOTSTRAP"):
            report["kafka"] = {"configured": False,
                               "note": "Kafka is not configured (LEADLEDGER_KAFKA_BOOTSTRAP is not set): "
                                       "embedded positions only"}
            return report
        kafka = KafkaSettings.from_env(env)
        relay_position = store.recorder.relay_position(kafka.events_topic)
        report["kafka"] = _kafka_status(kafka, head, relay_position, checkpoints)
        return report
    finally:
        store.close()


def _kafka_status(kafka: Any, head: int, relay_position: int,
                  checkpoints: dict[str, dict[int, int]]) -> dict[str, Any]:
    from kafka.errors import KafkaError

    from projections.kafka_source import LogEnds, OffsetsUnknown, group_id, source_name

    out: dict[str, Any] = {
        "configured": True,
        "bootstrap": kafka.bootstrap,
        "relay": {"topic": kafka.events_topic, "position": relay_position, "store_head": head,
                  "behind": max(0, head - relay_position)},
    }
    try:
        ends = LogEnds(kafka, bootstrap_timeout_ms=5000)  # a status answers quickly, also without a broker
    except KafkaError as exc:
        out["reachable"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    try:
        out["reachable"] = True
        events = _offsets(ends, kafka.events_topic)
        marks = checkpoints.get(source_name(kafka.events_topic), {})
        partitions = []
        for p, (begin, end) in sorted(events.items()):
            checkpoint = marks.get(p)
            done = begin if checkpoint is None else checkpoint + 1
            partitions.append({"partition": p, "checkpoint": checkpoint, "end_offset": end,
                               "lag": max(0, end - done)})
        out["projector"] = {"source": source_name(kafka.events_topic), "group": group_id(kafka),
                            "topic_exists": bool(events), "partitions": partitions,
                            "lag": sum(p["lag"] for p in partitions)}
        inbound = _offsets(ends, kafka.inbound_topic)
        group = f"{kafka.group_prefix}.inbound"
        committed = _group_offsets(kafka, group, kafka.inbound_topic, list(inbound)) if inbound else {}
        parts = []
        for p, (begin, end) in sorted(inbound.items()):
            offset = committed.get(p)
            parts.append({"partition": p, "committed": offset, "end_offset": end,
                          "lag": max(0, end - (begin if offset is None else offset))})
        out["consumer"] = {"topic": kafka.inbound_topic, "group": group, "topic_exists": bool(inbound),
                           "partitions": parts, "lag": sum(p["lag"] for p in parts)}
        dlq = _offsets(ends, kafka.dlq_topic)
        out["dlq"] = {"topic": kafka.dlq_topic, "topic_exists": bool(dlq),
                      "records": sum(end - begin for begin, end in dlq.values())}
    except (KafkaError, OffsetsUnknown) as exc:
        out["reachable"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        ends.close()
    return out


def _offsets(ends: Any, topic: str) -> dict[int, tuple[int, int]]:
    offsets: dict[int, tuple[int, int]] = ends.offsets(topic)
    return offsets


def _group_offsets(kafka: Any, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The committed offsets of a consumer group (read only: this client never joins it)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=group, enable_auto_commit=False,
                             allow_auto_create_topics=False)
    try:
        out = {}
        for p in partitions:
            value = consumer.committed(TopicPartition(topic, p))
            if value is not None:
                out[p] = int(value)
        return out
    finally:
        consumer.close(autocommit=False)


# ---------------------------------------------------------------- rendering


def render(report: dict[str, Any]) -> None:
    store = report["store"]
    emb = report["embedded_projector"]
    click.echo(f"event store ({store['backend']}): head at notification {store['head']}")
    checkpoint = "none" if emb["checkpoint"] is None else emb["checkpoint"]
    click.echo(f"embedded projector: checkpoint {checkpoint}, {emb['lag']} behind the store")
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


@click.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Where every role stands: relay vs store head, projector checkpoints vs end offsets (lag),
    embedded projector vs store head, inbound consumer lag, dead-letter count."""
    try:
        report = collect(ctx.settings)
    except SettingsError as exc:
        fail(str(exc), 2)
        return
    if as_json:
        emit_json(report)
    else:
        render(report)


def register(group: click.Group) -> None:
    """Add `status` to the `leadledger` group."""
    group.add_command(status)
