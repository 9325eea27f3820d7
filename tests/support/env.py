"""The test run's settings: the test secret, the PostgreSQL server (when configured), the broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifecycle.settings import Settings

POSTGRES_DSN = os.environ.get("LEADLEDGER_POSTGRES_DSN")
SKIP_NO_POSTGRES = pytest.mark.skipif(
    not POSTGRES_DSN,
    reason="LEADLEDGER_POSTGRES_DSN is not set: PostgreSQL backend tests need a real server "
    "(.ci/run sets it to postgresql://postgres@127.0.0.1:5432/test)",
)
TEST_SECRET = b"leadledger-test-secret"
KAFKA_BOOTSTRAP = os.environ.get("LEADLEDGER_KAFKA_BOOTSTRAP")


def sqlite_settings(home: Path) -> Settings:
    return Settings(home=home, secret=TEST_SECRET)
