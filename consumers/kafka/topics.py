"""What leadledger's topics, consumer groups and Kafka read-model sources are called, and
`ensure_topics`, which creates the topics a deployment needs."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from consumers.kafka.settings import KafkaSettings

#: a read-model source fed from a topic is named `kafka:<topic>` (rows of rm_checkpoints)
SOURCE_PREFIX = "kafka:"
#: the projectors' consumer group is `<group_prefix>.projections`
GROUP_SUFFIX = ".projections"


def source_name(topic: str) -> str:
    return f"{SOURCE_PREFIX}{topic}"


def group_id(kafka: KafkaSettings) -> str:
    return f"{kafka.group_prefix}{GROUP_SUFFIX}"


def ensure_topics(settings: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the inbound, dead-letter and lead-events topics if missing; returns those created.

    Existing topics are left alone (whatever their partition count: the relay reads the
    real count from the cluster's metadata)."""
    admin = KafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        wanted = [settings.inbound_topic, settings.dlq_topic, settings.events_topic]
        created: list[str] = []
        for topic in wanted:
            if topic in existing:
                continue
            try:
                admin.create_topics(
                    [NewTopic(topic, num_partitions=settings.partitions, replication_factor=settings.replication)]
                )
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another process created it between our listing and our request
        return created
    finally:
        admin.close()
