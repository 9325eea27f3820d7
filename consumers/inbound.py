"""The inbound consumer: `leadledger.inbound` records through the shared InboundHandler.

One poll is one batch. For each batch, in this order:

1. the handler validates (schemas/), de-duplicates (`id` + `source`) and applies the
   records, storing their events in one transaction;
2. malformed or refused records are produced to `leadledger.inbound.dlq` with their
   ORIGINAL key and value plus headers (`leadledger.reason`, `leadledger.source.topic`,
   `.partition`, `.offset`, `.timestamp`), and the producer is flushed: every dead
   letter is acknowledged (acks=all);
3. only then are the batch's offsets committed.

A crash anywhere before 3 redelivers the batch: applied records come back as
duplicates (nothing changes), dead letters are sent again (at-least-once; readers of
the DLQ de-duplicate by source partition and offset). Nothing is lost.

Order: records are applied in partition order, so one lead's messages keep their order
only if upstream keys them by the lead (its e-mail or lead id): Kafka orders a
partition, not a topic. The consumer group is `<group prefix>.inbound`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.kafka.settings import KafkaSettings
from lifecycle.inbound import InboundHandler, Result, Tally

log = logging.getLogger("leadledger.consume")

HEADER_REASON = "leadledger.reason"
HEADER_TOPIC = "leadledger.source.topic"
HEADER_PARTITION = "leadledger.source.partition"
HEADER_OFFSET = "leadledger.source.offset"
HEADER_TIMESTAMP = "leadledger.source.timestamp"
HEADER_PREFIX = "leadledger."
MAX_REASON_BYTES = 4096
NULL_VALUE = "no value (a null record): send one CloudEvent as JSON per record"
BLANK_VALUE = "not JSON: the record is empty or only white space; send one CloudEvents 1.0 JSON object (UTF-8) per record"

#: (partition, offset) of a record: the position the handler reports back
Position = tuple[int, int]


@dataclass(frozen=True)
class ConsumeOptions:
    batch: int = 1000
    poll_timeout_ms: int = 500
    log_every_s: float = 10.0
    once: bool = False  # stop when every assigned partition is consumed to its end
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 60_000
    dlq_timeout_s: float = 120.0


@dataclass
class ConsumeStats(Tally):
    records: int = 0
    batches: int = 0
    commit_failures: int = 0
    lag: dict[int, int] = field(default_factory=dict)

    def add(self, result: Result[Any]) -> None:
        self.records += 1
        super().add(result)


class DeadLetterError(Exception):
    """A dead letter was not acknowledged; the batch's offsets were not committed."""


def dead_letter_headers(record: ConsumerRecord, reason: str) -> list[tuple[str, bytes]]:
    """The record's own headers (minus any `leadledger.*`) and where and why it died."""
    own = [(k, v or b"") for k, v in (record.headers or []) if not k.startswith(HEADER_PREFIX)]
    return [
        *own,
        (HEADER_REASON, reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
        (HEADER_TOPIC, record.topic.encode()),
        (HEADER_PARTITION, str(record.partition).encode()),
        (HEADER_OFFSET, str(record.offset).encode()),
        (HEADER_TIMESTAMP, str(record.timestamp).encode()),
    ]


def make_consumer(settings: KafkaSettings, options: ConsumeOptions) -> KafkaConsumer:
    consumer = KafkaConsumer(
        **settings.client_kwargs(),
        group_id=f"{settings.group_prefix}.inbound",
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a new group starts at the beginning: no message is skipped
        max_poll_records=options.batch,
        session_timeout_ms=options.session_timeout_ms,
        heartbeat_interval_ms=options.heartbeat_interval_ms,
        max_poll_interval_ms=options.max_poll_interval_ms,
    )
    consumer.subscribe([settings.inbound_topic])
    return consumer


def make_dlq_producer(settings: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(**settings.client_kwargs(), acks="all", enable_idempotence=True, linger_ms=5,
                         max_request_size=4 * 1024 * 1024)


class InboundConsumer:
    """Poll → handle → dead-letter (acknowledged) → commit, one batch at a time."""

    def __init__(self, handler: InboundHandler, consumer: KafkaConsumer, dlq: KafkaProducer,
                 settings: KafkaSettings, options: ConsumeOptions = ConsumeOptions()) -> None:
        self.handler = handler
        self.consumer = consumer
        self.dlq = dlq
        self.settings = settings
        self.options = options
        self.stats = ConsumeStats()

    # ---- one batch ------------------------------------------------------------

    def run_batch(self) -> int:
        """Poll once and process what came; returns the number of records."""
        polled = self.consumer.poll(timeout_ms=self.options.poll_timeout_ms, max_records=self.options.batch)
        records = [record for batch in polled.values() for record in batch]
        if records:
            self.process(records)
        return len(records)

    def process(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply one poll's records, dead-letter the bad ones (acknowledged), then commit."""
        results: list[Result[Position]] = []
        # null and blank records never reach the handler (which skips blank lines of a file): on a
        # topic, an empty record is a bad message, dead-lettered like any other
        messages = [((r.partition, r.offset), r.value) for r in records if r.value is not None and r.value.strip()]
        applied = iter(self._apply(messages) if messages else [])
        for r in records:  # the handler's results are in order
            if r.value is None:
                results.append(Result((r.partition, r.offset), "dead", NULL_VALUE))
            elif not r.value.strip():
                results.append(Result((r.partition, r.offset), "dead", BLANK_VALUE, r.value))
            else:
                results.append(next(applied))
        # a repeat of a message refused before is dead-lettered again: its first dead letter may have
        # been lost with a crash between the store commit and the dead letter's acknowledgement
        dead = [(record, reason) for record, result in zip(records, results, strict=True)
                if (reason := result.dead_letter_reason) is not None]
        if dead:
            self._dead_letter(dead)
        self._commit(records)
        for result in results:
            self.stats.add(result)
        self.stats.batches += 1

    def _apply(self, messages: list[tuple[Position, bytes]]) -> list[Result[Position]]:
        """The handler's results; a record it cannot judge at all is isolated and dead-lettered.

        The handler turns every bad message into a result. Should a record still make it
        raise (a bug), halving the batch finds that record and it is dead-lettered with the
        error as its reason. Before each split the store must answer a probe, so an outage
        is never mistaken for bad input: then the error propagates and nothing is committed."""
        try:
            return self.handler.handle(messages)
        except Exception as exc:
            self.handler.app.store.head_position()  # raises if the store itself is failing
            if len(messages) > 1:
                half = len(messages) // 2
                return self._apply(messages[:half]) + self._apply(messages[half:])
            try:
                return self.handler.handle(messages)  # once more: a passing hiccup is not bad input
            except Exception:
                position, raw = messages[0]
                log.error("record %s raised %r in the handler; dead-lettering it", position, exc)
                reason = f"internal error while applying (please report): {type(exc).__name__}: {exc}"
                return [Result(position, "dead", reason, raw)]

    def _dead_letter(self, dead: Sequence[tuple[ConsumerRecord, str]]) -> None:
        futures = []
        for record, reason in dead:
            value = record.value
            if value is None and record.key is None:
                value = b""  # Kafka needs a key or a value; the null value is in the reason
            futures.append(self.dlq.send(self.settings.dlq_topic, value=value, key=record.key,
                                         headers=dead_letter_headers(record, reason)))
        self.dlq.flush(timeout=self.options.dlq_timeout_s)
        failed = [f for f in futures if not f.succeeded()]
        if failed:
            raise DeadLetterError(
                f"{len(failed)} of {len(futures)} dead letters were not acknowledged by "
                f"{self.settings.dlq_topic} (first: {failed[0].exception!r}); offsets not committed"
            )

    def _commit(self, records: Sequence[ConsumerRecord]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "", -1)
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced under us: another member re-reads these records and finds
            # them stored (duplicates) or dead-lettered again. Nothing is lost.
            self.stats.commit_failures += 1
            log.warning("offset commit refused after a rebalance (%s); the batch will be redelivered", exc)

    # ---- the loop -------------------------------------------------------------

    def lag(self) -> dict[int, int] | None:
        """Records behind the end of each assigned partition (None until known for all)."""
        lags: dict[int, int] = {}
        assignment = self.consumer.assignment()
        if not assignment:
            return None
        for tp in assignment:
            end = self.consumer.highwater(tp)  # from fetch responses: no extra request
            if end is None:
                return None
            lags[tp.partition] = max(0, end - self.consumer.position(tp))
        return lags

    def caught_up(self) -> bool:
        lags = self.lag()
        return lags is not None and not any(lags.values())

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> ConsumeStats:
        """Consume until `should_stop()` (checked between batches) or, with `once`, until caught up."""
        started = mark = time.monotonic()
        last_records = 0
        log.info("consuming %s as group %s.inbound", self.settings.inbound_topic, self.settings.group_prefix)
        while not should_stop():
            got = self.run_batch()
            now = time.monotonic()
            idle = got == 0
            if now - mark >= self.options.log_every_s or (idle and self.stats.records > last_records):
                self._log_progress(now - mark, self.stats.records - last_records, idle)
                mark, last_records = now, self.stats.records
            if idle and self.options.once and self.caught_up():
                break
        log.info("consumer stopped after %.1fs: %d records, applied %d, duplicates %d, dead-lettered %d",
                 time.monotonic() - started, self.stats.records, self.stats.applied, self.stats.duplicates,
                 self.stats.dead_lettered)
        return self.stats

    def _log_progress(self, seconds: float, records: int, idle: bool) -> None:
        lags = self.lag() or {}
        self.stats.lag = lags
        lag_text = " ".join(f"p{p}={n}" for p, n in sorted(lags.items())) or "unknown"
        log.info("%s: %d records (%.0f/s); applied %d, duplicates %d, dead-lettered %d; lag %s",
                 "caught up" if idle else "consuming", self.stats.records, records / max(seconds, 1e-6),
                 self.stats.applied, self.stats.duplicates, self.stats.dead_lettered, lag_text)


def run_consumer(handler: InboundHandler, settings: KafkaSettings, options: ConsumeOptions = ConsumeOptions(),
                 should_stop: Callable[[], bool] = lambda: False) -> ConsumeStats:
    """The consume role: make the clients, run until told to stop, close them (leaving the group)."""
    consumer = make_consumer(settings, options)
    dlq: KafkaProducer | None = None
    try:
        dlq = make_dlq_producer(settings)
        return InboundConsumer(handler, consumer, dlq, settings, options).run(should_stop)
    finally:
        if dlq is not None:
            try:
                dlq.close(timeout=10)
            except KafkaError as exc:  # closing must not hide the error that got us here
                log.warning("closing the dead-letter producer: %s", exc)
        consumer.close(autocommit=False)
