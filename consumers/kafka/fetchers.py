"""The projector's fetch consumer: lead-events records read from given positions and decoded
into facts, in this process (`InlineFetcher`) or in forked helper processes (`ProcessFetcher`).

The fetch consumer is in no group (manual assignment); its owner, the Kafka source, tells it
each partition's epoch and where to read, and drops whatever comes back for an older epoch.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from lifecycle.forked import (
    Child,
    close_all,
    encode_message,
    recv_in_child,
    send_encoded_from_child,
    wait,
)
from schemas.codec import CorruptEvent, subject_and_sequence
from schemas.facts import decode_checked

#: what a fetcher hands back, per partition: (epoch, [(offset, lead id hex, *Fact fields, hash, prevhash), ...])
Batches = dict[int, tuple[int, list[tuple[Any, ...]]]]
#: partition -> (epoch, first offset to read or None = the beginning)
Positions = Mapping[int, tuple[int, int | None]]


class OutOfRange(Exception):
    """The fetch position of these partitions is outside their log."""

    def __init__(self, partitions: dict[int, int]) -> None:
        super().__init__(f"offsets out of range: {partitions}")
        self.partitions = partitions  # partition -> epoch


def _decode(record: Any) -> tuple[str, int, bytes]:
    """(lead id as 32 hex digits, version, stored state) of a lead-events record."""
    value: bytes = record.value
    key = record.key
    version: int | None = None
    for name, raw in record.headers or ():
        if name == "ce_sequence":
            version = int(raw)
            break
    if key is not None and version is not None:
        text = key.decode()
        lead = text.replace("-", "") if len(text) == 36 else text
        if len(lead) == 32:
            return lead.lower(), version, value
    # no usable key/header: what the envelope itself states
    lead, version = subject_and_sequence(value)
    return lead, version, value


class FetchCore:
    """The fetch consumer: manual assignment, positions set by the owner, records decoded."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning) -> None:
        self.topic = kafka.events_topic
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(), group_id=None, enable_auto_commit=False, allow_auto_create_topics=False,
            auto_offset_reset="none",
            max_poll_records=tuning.max_poll_records, max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024)
        self.epochs: dict[int, int] = {}

    def assign(self, positions: Positions) -> None:
        """The full assignment: partition -> (epoch, first offset to read or None = beginning).
        Partitions assigned before and not listed here keep their position if their epoch is
        unchanged (pass them again with the same epoch)."""

        tps = {p: TopicPartition(self.topic, p) for p in positions}
        self.consumer.assign(list(tps.values()))
        for p, (epoch, offset) in positions.items():
            if self.epochs.get(p) == epoch:
                continue
            self.epochs[p] = epoch
            if offset is None:
                self.consumer.seek_to_beginning(tps[p])
            else:
                self.consumer.seek(tps[p], offset)
        for p in list(self.epochs):
            if p not in positions:
                del self.epochs[p]

    def poll(self, timeout_ms: int) -> Batches:
        if not self.epochs:
            time.sleep(timeout_ms / 1000)
            return {}
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except OffsetOutOfRangeError as exc:
            bad = {tp.partition for tp in _partitions_of(exc)} or set(self.epochs)

            self.consumer.pause(*(TopicPartition(self.topic, p) for p in bad))
            raise OutOfRange({p: self.epochs[p] for p in bad if p in self.epochs}) from None
        out: Batches = {}
        for tp, records in batches.items():
            p = tp.partition
            epoch = self.epochs.get(p)
            if epoch is None:
                continue
            rows = []
            for record in records:
                where = f"{self.topic} partition {p} offset {record.offset}"
                try:
                    lead, version, state = _decode(record)
                except (CorruptEvent, ValueError, KeyError, TypeError) as exc:
                    raise CorruptEvent(f"{where}: {exc}") from exc
                # its hash and row checked here; its link to the lead's previous event by the runner
                fact, digest, prev = decode_checked(lead, version, state, where)
                rows.append((record.offset, lead, *fact, digest, prev))
            out[p] = (epoch, rows)
        return out

    def highwaters(self) -> dict[int, int]:
        """The end offsets the last fetch responses reported (a fetch's high watermark)."""
        out = {}
        for p in self.epochs:
            hw = self.consumer.highwater(TopicPartition(self.topic, p))
            if hw is not None:
                out[p] = int(hw)
        return out

    def close(self) -> None:
        self.consumer.close()


def _partitions_of(exc: Exception) -> list[Any]:
    """The TopicPartitions an OffsetOutOfRangeError names (its first argument, if a mapping)."""
    for arg in exc.args:
        if isinstance(arg, dict):
            return list(arg)
    return []


class InlineFetcher:
    """The fetch consumer in this process."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning) -> None:
        self.core = FetchCore(kafka, tuning)

    def assign(self, positions: Positions) -> None:
        self.core.assign(positions)

    def fetch(self, timeout_ms: int) -> tuple[Batches, dict[int, int]]:
        batches = self.core.poll(timeout_ms)
        return batches, self.core.highwaters()

    def close(self) -> None:
        self.core.close()


# ---------------------------------------------------------------- helper processes
#
# Parent -> helper: ("assign", positions), ("credit",) after each message taken, None = stop.
# Helper -> parent: ("rows", batches, highwaters), ("out_of_range", {partition: epoch}),
# ("error", text) for a corrupt record (the helper stops after it).


def _fetch_main(conn: Connection, kafka: KafkaSettings, tuning: ConsumerTuning, credits: int) -> None:
    """Helper process: fetch and decode ahead, at most `credits` unacknowledged batches.

    A thread writes to the pipe, so fetching goes on while the projector is busy folding
    (a batch is larger than the pipe's buffer: a plain send would wait for the reader).
    Messages are encoded here, so that only bytes wait for that thread."""
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def send() -> None:
        with contextlib.suppress(EOFError, OSError):
            while (item := outbox.get()) is not None:
                send_encoded_from_child(conn, item)

    core = FetchCore(kafka, tuning)
    sender = threading.Thread(target=send, name="leadledger-fetch-send", daemon=True)
    sender.start()
    try:
        while True:
            while conn.poll(0 if credits > 0 and core.epochs else 0.05):
                message = recv_in_child(conn)
                if message is None:
                    return
                if message[0] == "assign":
                    core.assign(message[1])
                elif message[0] == "credit":
                    credits += 1
            if credits <= 0 or not core.epochs:
                continue
            try:
                rows = core.poll(100)
            except OutOfRange as exc:
                outbox.put(encode_message(("out_of_range", exc.partitions)))
                continue
            except CorruptEvent as exc:
                outbox.put(encode_message(("error", str(exc))))
                return
            if rows:
                outbox.put(encode_message(("rows", rows, core.highwaters())))
                credits -= 1
    finally:
        outbox.put(None)
        sender.join(timeout=10)
        core.close()


def fetch_helpers() -> int:
    """Fetch helper processes by default: fetching and decoding costs about as much CPU per
    record as folding it, and one helper alone kept the folding process waiting half the time."""
    return max(1, min(2, os.cpu_count() or 1))


class ProcessFetcher:
    """The fetch consumer in helper processes: they fetch and decode while the runner folds.

    Partition p is fetched by helper p mod n, always the same one, so each partition's records
    stay in order; the helpers' batches are merged in arrival order."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning, credits: int = 24,
                 helpers: int = 0) -> None:
        self._helpers: list[Child] = []
        self._assigned: list[Positions] = []  # per helper, what it was last told
        self._inbox: deque[Any] = deque()
        try:
            for i in range(helpers or fetch_helpers()):
                # forked before this process makes any Kafka client (and its IO thread)
                self._helpers.append(Child(_fetch_main, kafka, tuning, credits, name=f"Kafka fetch helper {i}"))
                self._assigned.append({})
        except BaseException:
            self.close()
            raise

    def assign(self, positions: Positions) -> None:
        n = len(self._helpers)
        for i, helper in enumerate(self._helpers):
            mine = {p: v for p, v in positions.items() if p % n == i}
            if mine or self._assigned[i]:  # an empty assignment only to take partitions away
                helper.send(("assign", mine))
            self._assigned[i] = mine

    def fetch(self, timeout_ms: int) -> tuple[Batches, dict[int, int]]:
        """The decoded batches ready now (waiting up to the timeout for the first) and the
        partitions' high watermarks. A helper's report that its partitions are out of range
        (or corrupt) is raised only after the records other helpers sent with it were
        returned: none is ever dropped."""
        if not self._inbox:
            for helper in self._helpers:
                helper.check()
            for helper in wait(self._helpers, timeout=timeout_ms / 1000):
                message = helper.recv()
                self._inbox.append(message)
                if message[0] != "error":  # after an error the helper has stopped: nobody to credit
                    helper.send(("credit",))
        batches: Batches = {}
        highwaters: dict[int, int] = {}
        while self._inbox:
            message = self._inbox[0]
            if message[0] in ("out_of_range", "error"):
                if batches:
                    break
                self._inbox.popleft()
                if message[0] == "out_of_range":
                    raise OutOfRange(message[1])
                raise CorruptEvent(message[1])
            self._inbox.popleft()
            for p, (epoch, rows) in message[1].items():
                before = batches.get(p)
                if before is not None and before[0] == epoch:
                    before[1].extend(rows)
                else:
                    batches[p] = (epoch, rows)
            highwaters.update(message[2])
        return batches, highwaters

    def close(self) -> None:
        close_all(self._helpers)
