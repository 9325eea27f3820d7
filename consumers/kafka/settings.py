"""Kafka settings from the environment: the cluster and its topics (`KafkaSettings`), and the
projector's consumer tuning (`ConsumerTuning`).

Both are typed pydantic-settings models on the same base as `lifecycle.settings.Settings`
(`LEADLEDGER_KAFKA_*` variables; constructing one directly reads no environment). Security
options are passed through to kafka-python; passwords never show in `repr`. Clients are
made from `client_kwargs()` in a role's main(), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from lifecycle.settings import EnvSettings, SettingsError

_PREFIX = "LEADLEDGER_KAFKA_"


def _named(field: str, variable: str) -> Any:
    """A field read from an environment variable whose name is not prefix + field name."""
    return AliasChoices(field, _PREFIX + variable)


class KafkaSettings(EnvSettings):
    """The cluster, the topic names and the client security options."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, env_ignore_empty=True, frozen=True, extra="ignore",
                                      populate_by_name=True)

    bootstrap: str = Field(description="Bootstrap servers host:port[,host:port].")
    inbound_topic: str = Field(default="leadledger.inbound", validation_alias=_named("inbound_topic", "TOPIC_INBOUND"))
    dlq_topic: str = Field(default="leadledger.inbound.dlq", validation_alias=_named("dlq_topic", "TOPIC_DLQ"))
    events_topic: str = Field(default="leadledger.lead-events", validation_alias=_named("events_topic", "TOPIC_EVENTS"))
    partitions: int = Field(default=3, ge=1, description="Partitions of the topics leadledger creates.")
    replication: int = Field(default=1, ge=1, description="Replication factor of the topics leadledger creates.")
    group_prefix: str = Field(default="leadledger", description="Prefix of the consumer group ids.")
    # passed through to kafka-python when set
    security_protocol: str | None = None  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    client_id: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, bootstrap: str | None = None) -> KafkaSettings:
        given = {"bootstrap": bootstrap} if bootstrap else {}
        if not bootstrap and not (os.environ if env is None else env).get(_PREFIX + "BOOTSTRAP"):
            raise SettingsError(
                "LEADLEDGER_KAFKA_BOOTSTRAP is not set: the Kafka roles need the bootstrap servers "
                "(host:port[,host:port]) of the cluster"
            )
        settings: KafkaSettings = cls.read_env(env, **given)
        return settings

    def client_kwargs(self) -> dict[str, Any]:
        """Options shared by every kafka-python client of leadledger."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap.split(",")}
        for option, value in (("security_protocol", self.security_protocol), ("sasl_mechanism", self.sasl_mechanism),
                              ("sasl_plain_username", self.sasl_username), ("sasl_plain_password", self.sasl_password),
                              ("ssl_cafile", self.ssl_cafile), ("ssl_certfile", self.ssl_certfile),
                              ("ssl_keyfile", self.ssl_keyfile), ("ssl_password", self.ssl_password),
                              ("client_id", self.client_id)):
            if value is not None:
                options[option] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return options


class ConsumerTuning(EnvSettings):
    """Consumer-group timing (milliseconds) of the projector, from `LEADLEDGER_KAFKA_*`.

    Short timeouts keep rebalances fast (a join waits for the rebalance timeout, which is
    `max_poll_interval_ms`); a batch never takes long, so a short poll interval is safe."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, env_ignore_empty=True, frozen=True, extra="ignore")

    session_timeout_ms: int = Field(default=6000, ge=1)
    heartbeat_interval_ms: int = Field(default=1000, ge=1)
    max_poll_interval_ms: int = Field(default=10000, ge=1)
    max_poll_records: int = Field(default=5000, ge=1)
    #: helper processes that fetch and decode (0: the default, see `consumers.kafka.fetchers.fetch_helpers`)
    fetch_processes: int = Field(default=0, ge=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsumerTuning:
        tuning: ConsumerTuning = cls.read_env(env)
        return tuning
