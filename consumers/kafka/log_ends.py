"""Beginning and end offsets of a topic's partitions (`LogEnds`), exact also on the bundled
broker, whose ListOffsets answer is confirmed with a fetch's high watermark."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from consumers.kafka.settings import KafkaSettings


class OffsetsUnknown(Exception):
    """The end offsets could not be confirmed (broker unreachable or slow)."""


class LogEnds:
    """Beginning and end offsets of partitions, exact also on the bundled broker.

    Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch + 1,
    so the end is confirmed with the high watermark of a fetch from that batch (one round
    trip, at most one batch of data). On Kafka both agree."""

    def __init__(self, kafka: KafkaSettings, bootstrap_timeout_ms: int | None = None) -> None:
        extra = {} if bootstrap_timeout_ms is None else {"bootstrap_timeout_ms": bootstrap_timeout_ms}
        self.consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                      allow_auto_create_topics=False, max_partition_fetch_bytes=64 * 1024, **extra)

    def partitions(self, topic: str) -> list[int]:
        return sorted(self.consumer.partitions_for_topic(topic) or ())

    def offsets(self, topic: str, partitions: list[int] | None = None,
                timeout: float = 5.0) -> dict[int, tuple[int, int]]:
        """partition -> (beginning, end) of `topic` (all its partitions by default)."""

        parts = self.partitions(topic) if partitions is None else partitions
        if not parts:
            return {}
        tps = {p: TopicPartition(topic, p) for p in parts}
        begins = self.consumer.beginning_offsets(list(tps.values()))
        listed = self.consumer.end_offsets(list(tps.values()))
        out = {p: (int(begins[tp]), int(listed[tp])) for p, tp in tps.items()}
        probe = {p: tp for p, tp in tps.items() if out[p][1] > out[p][0]}
        if probe:
            self.consumer.assign(list(probe.values()))
            for p, tp in probe.items():
                self.consumer.seek(tp, out[p][1] - 1)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.consumer.poll(timeout_ms=100)
                if all(self.consumer.highwater(tp) is not None for tp in probe.values()):
                    break
            marks = {p: self.consumer.highwater(tp) for p, tp in probe.items()}
            self.consumer.assign([])
            missing = [p for p, hw in marks.items() if hw is None]
            for p, hw in marks.items():
                if hw is not None and int(hw) > out[p][1]:
                    out[p] = (out[p][0], int(hw))
            if missing:
                raise OffsetsUnknown(f"{topic}: no high watermark for partitions {missing} within {timeout}s")
        return out

    def close(self) -> None:
        self.consumer.close()
