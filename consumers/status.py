"""`leadledger status`: how far each role has got — relay, inbound consumer, projectors, operator, DLQ.

Positions come from where each role keeps them: the relay's in the event store
(`relay_position`), the projectors' in the read-model database (`rm_checkpoints`), the inbound
consumer's in its Kafka group. End offsets are confirmed with a fetch (`LogEnds`). Without
LEADLEDGER_KAFKA_BOOTSTRAP only the embedded positions are reported.
"""

from __future__ import annotations

from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from consumers.kafka.log_ends import LogEnds, OffsetsUnknown
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import group_id, source_name
from lifecycle.operate import OPERATOR
from lifecycle.store.repository import LeadStore
from projections.engine.checkpoints import CHECKPOINTS
from projections.engine.db import ReadModelDB

EMBEDDED_SOURCE = "store"


def _read_checkpoints(read_models: ReadModelDB | None) -> dict[str, dict[int, int]]:
    """Every rm_checkpoints row, by source name (empty if the read models were never built)."""
    if read_models is None or not read_models.exists(CHECKPOINTS.name):
        return {}
    out: dict[str, dict[int, int]] = {}
    for name, part, pos in read_models.query(
            f"SELECT source_name, partition_no, position_no FROM {read_models.name(CHECKPOINTS.name)}"):
        out.setdefault(str(name), {})[int(part)] = int(pos)
    return out


def collect(store: LeadStore, read_models: ReadModelDB | None, kafka: KafkaSettings | None,
            backend: str) -> dict[str, Any]:
    """The status report as a dict (the `--json` output); `read_models` None: never built.

    Positions are read in the order the data flows — inbound committed offsets, store head,
    relay position, lead-events end offsets, projector checkpoints — so a later one never
    lags behind what an earlier one already counted: when the report says every role is
    caught up, every message counted as consumed is stored, relayed and projected. (Read the
    other way round, a store head read just before the consumer committed could pair with
    the committed offsets read just after, and an empty pipeline would look caught up.)"""
    probe = _KafkaProbe(kafka) if kafka is not None else None
    try:
        if probe is not None:
            probe.inbound()
        head = store.head_position()
        relay_position = store.recorder.relay_position(kafka.events_topic) if kafka is not None else 0
        if probe is not None:
            probe.events()
        checkpoints = _read_checkpoints(read_models)
        embedded = checkpoints.get(EMBEDDED_SOURCE, {}).get(0)
        report: dict[str, Any] = {
            "store": {"head": head, "backend": backend},
            "embedded_projector": {"source": EMBEDDED_SOURCE, "checkpoint": embedded,
                                   "lag": head - (embedded or 0)},
            "operator": _operator(store, head),
        }
        if probe is None:
            report["kafka"] = {"configured": False,
                               "note": "Kafka is not configured (LEADLEDGER_KAFKA_BOOTSTRAP is not set): "
                                       "embedded positions only"}
        else:
            report["kafka"] = probe.report(head, relay_position, checkpoints)
        return report
    finally:
        if probe is not None:
            probe.close()


def _operator(store: LeadStore, head: int) -> dict[str, Any]:
    """`operate`'s position (kept in the store with its decisions) and how far behind the store it is."""
    found = store.operator_state(OPERATOR)
    if found is None:
        return {"name": OPERATOR, "position": None, "lag": head, "commits": 0}
    seq, state = found
    saved = orjson.loads(state)
    out = {"name": OPERATOR, "position": int(saved["position"]), "lag": max(0, head - int(saved["position"])),
           "commits": seq}
    if "offsets" in saved:  # following Kafka: its per-partition checkpoints
        out["source"] = saved.get("source", "kafka")
        out["offsets"] = saved["offsets"]
    return out


class _KafkaProbe:
    """What the broker says, read in two steps (see `collect`); an unreachable broker is reported."""

    def __init__(self, kafka: Any) -> None:
        self.kafka = kafka
        self.error: str | None = None
        self.ends: Any = None
        self.consumer: dict[str, Any] = {}
        self.dlq: dict[str, Any] = {}
        self.event_offsets: dict[int, tuple[int, int]] = {}
        try:
            self.ends = LogEnds(kafka, bootstrap_timeout_ms=5000)  # a status answers quickly, also without a broker
        except KafkaError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _guarded(self, step: Any) -> None:
        if self.error is not None:
            return
        try:
            step()
        except (KafkaError, OffsetsUnknown) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def inbound(self) -> None:
        def step() -> None:
            kafka = self.kafka
            inbound = _offsets(self.ends, kafka.inbound_topic)
            group = f"{kafka.group_prefix}.inbound"
            committed = _group_offsets(kafka, group, kafka.inbound_topic, list(inbound)) if inbound else {}
            parts = []
            for p, (begin, end) in sorted(inbound.items()):
                offset = committed.get(p)
                parts.append({"partition": p, "committed": offset, "end_offset": end,
                              "lag": max(0, end - (begin if offset is None else offset))})
            self.consumer = {"topic": kafka.inbound_topic, "group": group, "topic_exists": bool(inbound),
                             "partitions": parts, "lag": sum(p["lag"] for p in parts)}
            dlq = _offsets(self.ends, kafka.dlq_topic)
            self.dlq = {"topic": kafka.dlq_topic, "topic_exists": bool(dlq),
                        "records": sum(end - begin for begin, end in dlq.values())}

        self._guarded(step)

    def events(self) -> None:
        def step() -> None:
            self.event_offsets = _offsets(self.ends, self.kafka.events_topic)

        self._guarded(step)

    def report(self, head: int, relay_position: int, checkpoints: dict[str, dict[int, int]]) -> dict[str, Any]:
        kafka = self.kafka
        out: dict[str, Any] = {
            "configured": True,
            "bootstrap": kafka.bootstrap,
            "relay": {"topic": kafka.events_topic, "position": relay_position, "store_head": head,
                      "behind": max(0, head - relay_position)},
        }
        if self.error is not None:
            out["reachable"] = False
            out["error"] = self.error
            return out
        out["reachable"] = True
        marks = checkpoints.get(source_name(kafka.events_topic), {})
        partitions = []
        for p, (begin, end) in sorted(self.event_offsets.items()):
            checkpoint = marks.get(p)
            done = begin if checkpoint is None else checkpoint + 1
            partitions.append({"partition": p, "checkpoint": checkpoint, "end_offset": end,
                               "lag": max(0, end - done)})
        out["projector"] = {"source": source_name(kafka.events_topic), "group": group_id(kafka),
                            "topic_exists": bool(self.event_offsets), "partitions": partitions,
                            "lag": sum(p["lag"] for p in partitions)}
        out["consumer"] = self.consumer
        out["dlq"] = self.dlq
        return out

    def close(self) -> None:
        if self.ends is not None:
            self.ends.close()


def _offsets(ends: Any, topic: str) -> dict[int, tuple[int, int]]:
    offsets: dict[int, tuple[int, int]] = ends.offsets(topic)
    return offsets


def _group_offsets(kafka: Any, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The committed offsets of a consumer group (read only: this client never joins it)."""
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
