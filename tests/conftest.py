"""Shared fixtures: settings for each store backend (SQLite file, real PostgreSQL) and a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.kafka.settings import KafkaSettings
from leadledger.bootstrap import bootstrap
from lifecycle.application import LeadLedger
from lifecycle.settings import Settings
from tests.support.env import KAFKA_BOOTSTRAP, POSTGRES_DSN, SKIP_NO_POSTGRES, TEST_SECRET, sqlite_settings
from tests.support.kafka_broker import TansuBroker


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards (runs never share rows)."""
    if not POSTGRES_DSN:
        pytest.skip(SKIP_NO_POSTGRES.kwargs["reason"])
    import psycopg

    schema = f"ll_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, SKIP_NO_POSTGRES])])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for one store backend; tests using it run once per backend."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    schema = request.getfixturevalue("postgres_schema")
    return Settings(home=tmp_path, postgres_dsn=POSTGRES_DSN, postgres_schema=schema, secret=TEST_SECRET)


@pytest.fixture
def app(backend_settings: Settings) -> Iterator[LeadLedger]:
    """The application over one store backend (every test using it runs once per backend)."""
    ledger = bootstrap(backend_settings)
    yield ledger
    ledger.store.close()


# ---------------------------------------------------------------- Kafka

@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker: LEADLEDGER_KAFKA_BOOTSTRAP, or the bundled one."""
    if KAFKA_BOOTSTRAP:
        yield KAFKA_BOOTSTRAP
        return
    broker = TansuBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[object]:
    """A broker of this test's own (it may stop and restart it); needs the bundled binary."""
    if KAFKA_BOOTSTRAP:
        pytest.skip("uses a broker it can restart empty; LEADLEDGER_KAFKA_BOOTSTRAP points elsewhere")
    broker = TansuBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """KafkaSettings with topic names of this test's own, so tests never see each other's records."""
    tag = uuid.uuid4().hex[:10]
    return KafkaSettings(
        bootstrap=kafka_bootstrap,
        inbound_topic=f"t{tag}.inbound",
        dlq_topic=f"t{tag}.inbound.dlq",
        events_topic=f"t{tag}.lead-events",
        partitions=3,
        group_prefix=f"g{tag}",
    )
