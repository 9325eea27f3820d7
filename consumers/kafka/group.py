"""The projector's group consumer (`GroupMember`): takes part in the consumer group, never
fetches; notes what the rebalances assign and revoke, and reads and commits the group's offsets."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.kafka.topics import group_id

log = logging.getLogger("leadledger.projections.kafka")


class _Listener(ConsumerRebalanceListener):
    """Rebalance callbacks (kafka-python's IO thread): note the change, pause, act later."""

    def __init__(self, member: GroupMember) -> None:
        self.member = member

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self.member._lock:
            for tp in revoked:
                self.member._revoked.add(tp.partition)
                self.member._assigned.discard(tp.partition)

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.member.consumer.pause(*assigned)  # the group consumer never fetches
        with self.member._lock:
            for tp in assigned:
                self.member._assigned.add(tp.partition)


class GroupMember:
    """The group consumer of one topic: its partitions stay paused, it never fetches.

    kafka-python calls the rebalance listener on its IO thread while `poll` blocks the
    caller's thread; the changes wait here until the caller takes them (`changes`)."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning) -> None:
        self.topic = kafka.events_topic
        self.group_id = group_id(kafka)
        self._lock = threading.Lock()
        self._assigned: set[int] = set()  # newly assigned, not taken yet
        self._revoked: set[int] = set()
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(), group_id=self.group_id, enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="earliest", session_timeout_ms=tuning.session_timeout_ms,
            heartbeat_interval_ms=tuning.heartbeat_interval_ms,
            max_poll_interval_ms=tuning.max_poll_interval_ms)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def poll(self, timeout_ms: int) -> None:
        """Take part in the group (join, heartbeat) for up to `timeout_ms`."""
        self.consumer.poll(timeout_ms=timeout_ms)

    def changes(self) -> tuple[set[int], set[int]]:
        """(revoked, assigned) partitions since the last call."""
        with self._lock:
            revoked, self._revoked = self._revoked, set()
            assigned, self._assigned = self._assigned, set()
        return revoked, assigned

    def again(self, assigned: set[int]) -> None:
        """Report these assigned partitions again by the next `changes` (unless revoked meanwhile)."""
        with self._lock:
            self._assigned |= assigned - self._revoked

    def committed(self, partition: int) -> int | None:
        """The group's committed offset of a partition (None: it has none); asks the coordinator.

        One request per partition: no public kafka-python call asks for several through the
        group consumer, and `KafkaAdminClient.list_group_offsets` caches the group's coordinator
        for good (kafka-python 3.0.12), so after a coordinator move every later check would fail."""
        value = self.consumer.committed(TopicPartition(self.topic, partition))
        return None if value is None else int(value)

    def commit(self, offsets: Mapping[int, int]) -> bool:
        """Commit partition -> next offset; False if the group refused (a rebalance in progress)."""
        if not offsets:
            return True
        try:
            self.consumer.commit({TopicPartition(self.topic, p): OffsetAndMetadata(off, "", -1)
                                  for p, off in offsets.items()})
            return True
        except Exception as exc:  # a rebalance in progress: the read models hold the truth
            log.debug("group offset commit skipped: %s", exc)
            return False

    def close(self) -> None:
        self.consumer.close(autocommit=False)
