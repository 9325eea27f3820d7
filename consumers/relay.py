"""The outbox relay: every stored event, in notification order, onto `leadledger.lead-events`.

Each record: key = the lead id (its canonical text, UTF-8), value = the stored state
bytes unchanged (the canonical CloudEvents envelope, personal data still sealed),
headers `ce_type`, `ce_sequence` (the lead's version), `ce_id` and `ll_position` (the
event's notification id, decimal ASCII: `leadledger operate --source kafka` merges the
partitions back into store order by it; other consumers ignore it). The producer is
idempotent with acks=all, and partitions are chosen with kafka-python's default
murmur2 semantics (cached per lead), so every producer keyed by lead id agrees.

Delivery is at-least-once: a batch is sent, flushed (every record acknowledged), and
only THEN is the relay's position stored in the event store's own database
(`leadledger_relay`). A crash in between re-sends that batch on restart; within a
partition each lead's events stay in version order, so consumers de-duplicate by
(lead id, version) — or by notification id. Within a partition the notification ids rise,
except where a batch is re-sent (or `--from-start` republishes): the repeat starts at or
below ids already there (the idempotent producer leaves no gap inside a partition). Reading "after the position" never skips an event: SQLite has one
writer, and the PostgreSQL recorder locks the table on insert, so notification ids
become visible in order. Run one relay per store and topic.

Each event is checked before it is published: its hash against its content and row, and its
link to the lead's previous event (remembered from earlier batches, or read from the store for
a lead the relay meets for the first time past its first event). At a bad event the relay
publishes the events before it, stores that position, and stops with CorruptEvent naming the
lead and version: a broken chain never reaches the topic as if it were whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import RawRow
from schemas.codec import GENESIS, POSITION_HEADER, CorruptEvent, check_link, checked_envelope, kafka_headers

log = logging.getLogger("leadledger.relay")

#: a lead's partition is cached; the cache is dropped whenever it grows past this
PARTITION_CACHE_LIMIT = 1_000_000

Headers = list[tuple[str, bytes]]


class RelayError(Exception):
    """A batch could not be delivered; its position was not stored (it will be sent again)."""


# ---------------------------------------------------------------- partitions


def partition_for(key: bytes, partitions: int) -> int:
    """kafka-python's (and the Java client's) default partition for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class PartitionCache:
    """murmur2 partitions of lead ids, computed once per lead (pure-Python murmur2 is slow)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def resize(self, partitions: int) -> None:
        if partitions != self.partitions:
            self.partitions = partitions
            self._cache.clear()

    def __call__(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= PARTITION_CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[key] = partition_for(key, self.partitions)
        return found


# ---------------------------------------------------------------- records


def record_for(row: RawRow) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one stored event; the value is the stored bytes as they are.

    (The relay inlines this, caching each lead's key and partition.)"""
    position, lead_id, version, state = row
    return str(lead_id).encode(), state, kafka_headers(state, version, position)


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """The relay's producer: idempotent, acks=all, batching for throughput."""
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,  # idempotence keeps order with up to 5
        **overrides,
    }
    return KafkaProducer(**settings.client_kwargs(), **options)


# ---------------------------------------------------------------- the relay


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    position: int = 0


class Relay:
    """Publishes the store's notification log to one topic, remembering how far it got."""

    def __init__(self, store: LeadStore, producer: KafkaProducer, topic: str, *,
                 name: str | None = None, flush_timeout_s: float = 120.0) -> None:
        self.store = store
        self.producer = producer
        self.topic = topic
        self.name = name or topic  # one position per (store, topic)
        self.flush_timeout_s = flush_timeout_s
        self._partitions = PartitionCache(self._partition_count())
        self._keys: dict[UUID, tuple[bytes, int]] = {}  # lead -> (key, partition)
        self._last: dict[UUID, tuple[int, str]] = {}  # lead -> (version, hash) of its last event seen
        self._pending: list[RawRow] | None = None  # the next batch, read while the last one flushes
        self.stats = RelayStats(position=self.position())

    def _partition_count(self) -> int:
        partitions = self.producer.partitions_for(self.topic)  # waits for metadata
        if not partitions:
            raise RelayError(f"topic {self.topic} has no partitions (does it exist?)")
        return len(partitions)

    def position(self) -> int:
        return self.store.recorder.relay_position(self.name)

    def rewind(self, position: int = 0) -> None:
        """Publish again from after `position` (0: everything; a broker that lost data, a new topic)."""
        self.store.recorder.set_relay_position(self.name, position)
        self.stats.position = position
        self._pending = None
        self._last.clear()

    def behind(self) -> int:
        """Stored events not yet published (approximate: a rolled-back PostgreSQL insert leaves a gap)."""
        return max(0, self.store.head_position() - self.stats.position)

    def publish_batch(self, limit: int) -> int:
        """Publish up to `limit` events after the position, wait for every ack, store the position."""
        rows = self._pending if self._pending is not None else self.store.raw(self.stats.position, limit)
        self._pending = None
        if not rows:
            return 0
        rows, headers, problem = self._check(rows)
        if not rows:
            assert problem is not None
            raise problem
        count = len(self.producer.partitions_for(self.topic) or ())
        if count and count != self._partitions.partitions:
            # The topic was given more partitions: like every keyed producer, ours now maps some
            # leads elsewhere, so their next events start a new order in another partition.
            self._partitions.resize(count)
            self._keys.clear()
        futures = self._send(rows, headers)
        # Read the next batch while the producer's thread delivers this one.
        self._pending = None if problem else self.store.raw(rows[-1][0], limit) or None
        self.producer.flush(timeout=self.flush_timeout_s)
        failed = [f for f in futures if not f.succeeded()]
        if failed:
            self._pending = None
            self._last.clear()  # these events go out again: their links are checked again
            raise RelayError(
                f"{len(failed)} of {len(futures)} events were not acknowledged by the broker "
                f"(first: {failed[0].exception!r}); position stays at {self.stats.position}"
            )
        self.store.recorder.set_relay_position(self.name, rows[-1][0])
        self.stats.position = rows[-1][0]
        self.stats.published += len(rows)
        self.stats.batches += 1
        if problem is not None:
            raise problem
        return len(rows)

    def _check(self, rows: list[RawRow]) -> tuple[list[RawRow], list[Headers], CorruptEvent | None]:
        """The rows up to the first bad one, their headers, and the error of the bad one (if any):
        each event's hash and row, and its link to the lead's previous event."""
        last = self._last
        if len(last) >= PARTITION_CACHE_LIMIT:
            last.clear()
        unknown = {lead for _, lead, version, _ in rows if version > 1 and lead not in last}
        headers: list[Headers] = []
        try:
            if unknown:
                self._load_last(unknown, rows)
            for position, lead, version, state in rows:
                where = f"notification {position}"
                envelope = checked_envelope(lead, version, state, where)
                seen_version, seen_hash = last.get(lead, (0, GENESIS))
                check_link(lead, version, envelope["prevhash"], seen_version, seen_hash, where)
                last[lead] = (version, envelope["hash"])
                headers.append([("ce_type", str(envelope["type"]).encode()), ("ce_sequence", str(version).encode()),
                                ("ce_id", str(envelope["id"]).encode()), (POSITION_HEADER, str(position).encode())])
        except CorruptEvent as exc:
            return rows[:len(headers)], headers, exc
        return rows, headers, None

    def _load_last(self, leads: set[UUID], rows: list[RawRow]) -> None:
        """The version and hash of the event before each lead's first one in `rows` (published
        earlier), read from the store (and checked)."""
        first: dict[UUID, int] = {}
        for _, lead, version, _ in rows:
            if lead in leads and lead not in first:
                first[lead] = version
        for lead, stream in self.store.recorder.select_streams(leads).items():
            before = [(version, state) for version, state in stream if version < first[lead]]
            if before:
                version, state = before[-1]
                self._last[lead] = (version, checked_envelope(lead, version, state)["hash"])

    def _send(self, rows: Sequence[RawRow], headers: Sequence[Headers]) -> list[Any]:
        send, topic, keys, partition_of = self.producer.send, self.topic, self._keys, self._partitions
        futures = []
        for (_, lead_id, _, state), record_headers in zip(rows, headers, strict=True):
            found = keys.get(lead_id)
            if found is None:
                if len(keys) >= PARTITION_CACHE_LIMIT:
                    keys.clear()
                key = str(lead_id).encode()
                found = keys[lead_id] = (key, partition_of(key))
            futures.append(send(topic, value=state, key=found[0], headers=record_headers, partition=found[1]))
        return futures

    def run(self, *, batch: int = 5000, once: bool = False, poll_interval_s: float = 0.5,
            log_every_s: float = 10.0, should_stop: Callable[[], bool] = lambda: False) -> RelayStats:
        """Publish until caught up (`once`) or until `should_stop()`; follow new events meanwhile."""
        started = mark = time.monotonic()
        window = 0
        log.info("relaying to %s from notification %d (%d stored events behind)",
                 self.topic, self.stats.position, self.behind())
        while not should_stop():
            sent = self.publish_batch(batch)
            window += sent
            now = time.monotonic()
            if now - mark >= log_every_s or (sent == 0 and window):
                log.info("%s: %d events published (%.0f/s), position %d, %d behind",
                         "caught up" if sent == 0 else "relaying", self.stats.published,
                         window / max(now - mark, 1e-6), self.stats.position, self.behind())
                window, mark = 0, now
            if sent == 0:
                if once:
                    break
                time.sleep(poll_interval_s)
        elapsed = time.monotonic() - started
        log.info("relay stopped: %d events in %.1fs, position %d", self.stats.published, elapsed,
                 self.stats.position)
        return self.stats


def run_relay(store: LeadStore, settings: KafkaSettings, *, from_start: bool = False, once: bool = False,
              batch: int = 5000, poll_interval_s: float = 0.5, log_every_s: float = 10.0,
              should_stop: Callable[[], bool] = lambda: False, retry_backoff_s: float = 1.0) -> RelayStats:
    """The relay role: make the topics, then publish (retrying a failed batch with a fresh producer)."""
    total = RelayStats()
    rewind = from_start
    failures = 0
    while True:
        created = ensure_topics(settings)  # again after a failure: the broker may have lost them
        if created:
            log.info("created topics %s with %d partitions", ", ".join(created), settings.partitions)
        producer = make_producer(settings)
        relay: Relay | None = None
        try:
            relay = Relay(store, producer, settings.events_topic)
            if rewind:
                relay.rewind(0)
                rewind = False
                log.info("publishing every stored event again (--from-start)")
            relay.run(batch=batch, once=once, poll_interval_s=poll_interval_s,
                      log_every_s=log_every_s, should_stop=should_stop)
            return total
        except (RelayError, KafkaError) as exc:
            failures += 1
            if (once and failures > 3) or should_stop():
                raise
            delay = min(30.0, retry_backoff_s * 2 ** min(failures, 5))
            log.warning("relay batch failed (%s); retrying from the stored position in %.0fs", exc, delay)
            time.sleep(delay)
        finally:
            if relay is not None:
                total.published += relay.stats.published
                total.batches += relay.stats.batches
                total.position = relay.stats.position
            producer.close(timeout=10)
