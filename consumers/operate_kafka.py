"""`leadledger operate --source kafka`: the operator fed from `leadledger.lead-events` instead of the
store's notification log, deciding exactly what the embedded operator decides.

The router's state (round-robin currents, rep capacity, queues) spans leads, so the operator must
see the events in store order, while Kafka splits them over partitions by lead. `KafkaRows` puts
the order back together:

* it assigns ALL partitions of the topic manually (no consumer group: no rebalance waits, no
  partition ownership) and reads them into per-partition buffers;
* every record carries its notification id in the `ll_position` header (added by the relay,
  consumers/relay.py); the buffers are merged by it, smallest first;
* each round first reads the relay's stored position R (`leadledger_relay`), and only THEN the end
  offsets of the partitions: the relay stores R after every event up to R was acknowledged, so each
  id <= R is in its partition before those ends. A round reads every partition up to its end and
  hands ids <= R only, so the merge never hands an id while a smaller one is still in flight;
* ids at or below the operator's position are repeats (delivery is at-least-once; a re-sent batch
  or `relay --from-start`) and are skipped. Within a partition the ids rise, except that a re-sent
  run starts again at or below ids already there (the relay's idempotent producer leaves no gap
  inside a partition), so a partition's next new id is never below its buffered head.

The rows handed are the stored rows themselves (lead from the key, version from `ce_sequence`,
the value unchanged) and are decoded, hash checked, by the same `lifecycle.operate.decode` as the
embedded runner's. A record without the `ll_position` header (published by an older relay) stops
the operator with `MissingPosition`.

The checkpoint: next to its position the operator stores, in the same compare-and-set transaction
as its decisions (`leadledger_operator`), `{"source": "kafka", "topic": ..., "offsets": {"0": 123,
...}}`, the offset of the last record it took from each partition (handled or skipped); a restart
seeks each partition to its offset + 1 (a partition without one, or whose offset is past the end of
its log — the topic was re-created — is read from its beginning: repeats are skipped by id). The
state itself is always rebuilt from the store (the store is the record: decisions not yet relayed
are folded too), so it equals the embedded operator's.

Several `operate` processes, over Kafka or the store, are kept apart by the store, not by
partition ownership: each reads every partition, and the compare-and-set on the operator's row
makes the second to commit at a position store nothing; it rebuilds from the winner's state
(position and offsets) and goes on. No lead is decided twice.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple
from uuid import UUID

from kafka import KafkaConsumer, TopicPartition

from consumers.kafka.log_ends import LogEnds
from consumers.kafka.settings import KafkaSettings
from lifecycle.operate import Row
from lifecycle.store.repository import LeadStore
from schemas.codec import POSITION_HEADER, CorruptEvent, subject_and_sequence

log = logging.getLogger("leadledger.operate.kafka")

SOURCE = "kafka"


class KafkaOperateError(Exception):
    """The lead-events topic cannot feed the operator (see the message)."""


class MissingPosition(KafkaOperateError):
    """A record without the `ll_position` header: it cannot be put in store order."""


class _Record(NamedTuple):
    offset: int
    position: int
    row: Row


class KafkaRows:
    """A `lifecycle.operate.RowSource` over the lead-events topic (see the module docstring)."""

    def __init__(self, store: LeadStore, kafka: KafkaSettings, *, relay_name: str | None = None,
                 buffer_limit: int = 20_000, poll_ms: int = 200, stall_timeout_s: float = 60.0) -> None:
        self.store = store
        self.topic = kafka.events_topic
        self.relay_name = relay_name or self.topic  # the relay stores its position under the topic's name
        self.buffer_limit = buffer_limit
        self.poll_ms = poll_ms
        self.stall_timeout_s = stall_timeout_s
        self.consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                      allow_auto_create_topics=False, auto_offset_reset="earliest",
                                      max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
        try:
            self.log_ends = LogEnds(kafka)
        except BaseException:
            self.consumer.close()
            raise
        self._tps: dict[int, TopicPartition] = {}
        self._buffers: dict[int, deque[_Record]] = {}
        self._next: dict[int, int] = {}  # the next offset to fetch
        self._taken: dict[int, int] = {}  # the offset of the last record handed or skipped (the checkpoint)
        self._paused: set[int] = set()
        self._saved: dict[int, int] = {}  # offsets restored, applied when the partitions are (re)assigned
        self._seek = True
        #: the round in progress: (the relay's position, the end offsets read after it) or None
        self._round: tuple[int, dict[int, int]] | None = None
        self.bound = 0  # the relay's position of the last round
        self.fetched = 0  # records read from the topic (repeats included)

    # ---------------------------------------------------------------- the RowSource

    def restore(self, state: Mapping[str, Any]) -> None:
        offsets = state.get("offsets") if state.get("source") == SOURCE and state.get("topic") == self.topic else None
        self._saved = {int(p): int(o) for p, o in (offsets or {}).items()}
        self._taken = dict(self._saved)
        self._seek = True
        self._round = None

    def checkpoint(self) -> dict[str, Any]:
        return {"source": SOURCE, "topic": self.topic,
                "offsets": {str(p): o for p, o in sorted(self._taken.items())}}

    def rows(self, position: int, limit: int) -> list[Row]:
        """Up to `limit` rows after `position`, in notification-id order, up to the relay's position as
        read at the start of the round; [] when the round is done (the next call starts another)."""
        if self._round is None:
            self._begin_round()
        assert self._round is not None
        bound, ends = self._round
        out: list[Row] = []
        last = position
        stalled_since: float | None = None
        while len(out) < limit:
            for p, buffer in self._buffers.items():
                while buffer and buffer[0].position <= last:  # a repeat
                    self._taken[p] = buffer.popleft().offset
            if any(not self._buffers[p] and self._next[p] < end for p, end in ends.items()):
                before = sum(self._next.values())
                self._fetch()
                if sum(self._next.values()) != before:
                    stalled_since = None
                elif stalled_since is None:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > self.stall_timeout_s:
                    behind = {p: (self._next[p], end) for p, end in ends.items() if self._next[p] < end}
                    raise KafkaOperateError(f"{self.topic}: no records for {self.stall_timeout_s:.0f}s from "
                                            f"partitions below their end offsets (partition: (next, end)) {behind}")
                continue
            heads = [(buffer[0].position, p) for p, buffer in self._buffers.items() if buffer]
            if not heads:
                break
            head, p = min(heads)
            if head > bound:
                break
            record = self._buffers[p].popleft()
            self._taken[p] = record.offset
            out.append(record.row)
            last = head
        if not out:
            self._round = None
        return out

    def close(self) -> None:
        try:
            self.log_ends.close()
        finally:
            self.consumer.close()

    # ---------------------------------------------------------------- reading

    def _begin_round(self) -> None:
        bound = self.store.recorder.relay_position(self.relay_name)  # BEFORE the end offsets (module doc)
        partitions = self.log_ends.partitions(self.topic)
        if not partitions:
            raise KafkaOperateError(f"topic {self.topic} has no partitions (does it exist? start `leadledger relay`)")
        offsets = self.log_ends.offsets(self.topic, partitions)
        if self._seek or set(partitions) != set(self._tps):
            self._assign(offsets)
        self._round = (bound, {p: end for p, (_, end) in offsets.items()})
        self.bound = bound

    def _assign(self, offsets: Mapping[int, tuple[int, int]]) -> None:
        """(Re)assign every partition; seek the new ones (all of them after a restore) to their checkpoints."""
        fresh = self._seek
        self._tps = {p: TopicPartition(self.topic, p) for p in sorted(offsets)}
        self.consumer.assign(list(self._tps.values()))
        self._paused.clear()
        self.consumer.resume(*self._tps.values())
        for p, (begin, end) in offsets.items():
            if not fresh and p in self._buffers:
                continue
            saved = self._saved.get(p)
            start = begin if saved is None else saved + 1
            if saved is not None and saved + 1 > end:
                log.warning("partition %s of %s: the checkpoint (offset %s) is past the end of the log (%s): the "
                            "topic was re-created or the broker lost data; reading it from the beginning (events "
                            "already handled are skipped by notification id)", p, self.topic, saved, end)
                start = begin
                self._taken.pop(p, None)
            elif start < begin:
                log.error("partition %s of %s: records after the checkpoint (offset %s) were deleted before the "
                          "operator read them (log starts at %s); reading from the beginning. Republish the store "
                          "(`leadledger relay --from-start`) if events are missing.", p, self.topic, saved, begin)
                start = begin
            self.consumer.seek(self._tps[p], start)
            self._next[p] = start
            self._buffers[p] = deque()
        for p in list(self._buffers):
            if p not in self._tps:
                del self._buffers[p]
                self._next.pop(p, None)
        self._seek = False

    def _fetch(self) -> None:
        full = {p for p, buffer in self._buffers.items() if len(buffer) >= self.buffer_limit}
        if full != self._paused:
            if full - self._paused:
                self.consumer.pause(*(self._tps[p] for p in full - self._paused))
            if self._paused - full:
                self.consumer.resume(*(self._tps[p] for p in self._paused - full))
            self._paused = full
        batches = self.consumer.poll(timeout_ms=self.poll_ms)
        for tp, records in batches.items():
            p = tp.partition
            buffer = self._buffers.get(p)
            if buffer is None:
                continue
            for record in records:
                buffer.append(_record(self.topic, p, record))
                self._next[p] = record.offset + 1
                self.fetched += 1
        for p, tp in self._tps.items():
            if p not in self._paused:
                self._next[p] = max(self._next[p], int(self.consumer.position(tp)))


def _record(topic: str, partition: int, record: Any) -> _Record:
    """A lead-events record as the stored row it carries (checked later, by `decode`)."""
    where = f"{topic} partition {partition} offset {record.offset}"
    position: int | None = None
    version: int | None = None
    for name, raw in record.headers or ():
        if name == POSITION_HEADER:
            position = int(raw)
        elif name == "ce_sequence":
            version = int(raw)
    if position is None:
        raise MissingPosition(
            f"{where} has no {POSITION_HEADER} header (its notification id): it was published by an older "
            f"relay, and without it the operator cannot put the partitions back into store order. Republish the "
            f"store with `leadledger relay --from-start` to a topic that holds no such records "
            f"(LEADLEDGER_KAFKA_TOPIC_EVENTS), or run `leadledger operate --source store`.")
    value: bytes = record.value
    try:
        lead = UUID(record.key.decode()) if record.key is not None and version is not None else None
    except ValueError:
        lead = None
    if lead is None or version is None:
        hexed, version = subject_and_sequence(value)
        try:
            lead = UUID(hex=hexed)
        except ValueError:
            raise CorruptEvent(f"{where}: the event names no lead ({hexed!r})") from None
    return _Record(record.offset, position, (position, lead, version, value))
