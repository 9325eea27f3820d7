"""Kafka settings from the environment, and the kafka-python clients built from them.

Every setting a deployment needs is an environment variable; security options are
passed through to kafka-python unchanged. Clients are made by the functions here,
called from a role's main(), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lifecycle.settings import SettingsError

#: environment variable -> kafka-python client option (passed through when set)
_PASSTHROUGH = {
    "LEADLEDGER_KAFKA_SECURITY_PROTOCOL": "security_protocol",  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    "LEADLEDGER_KAFKA_SASL_MECHANISM": "sasl_mechanism",  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    "LEADLEDGER_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "LEADLEDGER_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "LEADLEDGER_KAFKA_SSL_CAFILE": "ssl_cafile",
    "LEADLEDGER_KAFKA_SSL_CERTFILE": "ssl_certfile",
    "LEADLEDGER_KAFKA_SSL_KEYFILE": "ssl_keyfile",
    "LEADLEDGER_KAFKA_SSL_PASSWORD": "ssl_password",
    "LEADLEDGER_KAFKA_CLIENT_ID": "client_id",
}


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    inbound_topic: str = "leadledger.inbound"
    dlq_topic: str = "leadledger.inbound.dlq"
    events_topic: str = "leadledger.lead-events"
    partitions: int = 3
    replication: int = 1
    group_prefix: str = "leadledger"
    security: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, bootstrap: str | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        servers = bootstrap or env.get("LEADLEDGER_KAFKA_BOOTSTRAP")
        if not servers:
            raise SettingsError(
                "LEADLEDGER_KAFKA_BOOTSTRAP is not set: the Kafka roles need the bootstrap servers "
                "(host:port[,host:port]) of the cluster"
            )

        def positive(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            try:
                value = int(text) if text else default
            except ValueError:
                raise SettingsError(f"{name} must be a positive integer, got {text!r}") from None
            if value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value}")
            return value

        return cls(
            bootstrap=servers,
            inbound_topic=env.get("LEADLEDGER_KAFKA_TOPIC_INBOUND") or "leadledger.inbound",
            dlq_topic=env.get("LEADLEDGER_KAFKA_TOPIC_DLQ") or "leadledger.inbound.dlq",
            events_topic=env.get("LEADLEDGER_KAFKA_TOPIC_EVENTS") or "leadledger.lead-events",
            partitions=positive("LEADLEDGER_KAFKA_PARTITIONS", 3),
            replication=positive("LEADLEDGER_KAFKA_REPLICATION", 1),
            group_prefix=env.get("LEADLEDGER_KAFKA_GROUP_PREFIX") or "leadledger",
            security={opt: env[var] for var, opt in _PASSTHROUGH.items() if env.get(var)},
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Options shared by every kafka-python client of leadledger."""
        return {"bootstrap_servers": self.bootstrap.split(","), **self.security}
