"""Small helpers shared by the integration and end-to-end tests (real files, real databases)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifecycle.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET_TEXT = "leadledger-test-secret"  # tests/support/env.py TEST_SECRET, as text for env vars


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a `leadledger` subprocess: embedded SQLite under `home`, test secret.

    The test run itself may point LEADLEDGER_POSTGRES_DSN at the test server; the CLI
    runs here must not inherit it (they would write to its public schema).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update({"LEADLEDGER_HOME": str(home), "LEADLEDGER_SECRET": SECRET_TEXT, **extra})
    return env


def runner_env(home: Path) -> Mapping[str, str | None]:
    """The same for click's CliRunner (None removes a variable)."""
    return {
        "LEADLEDGER_HOME": str(home),
        "LEADLEDGER_SECRET": SECRET_TEXT,
        "LEADLEDGER_POSTGRES_DSN": None,
        "LEADLEDGER_MQL_THRESHOLD": None,
        "LEADLEDGER_KAFKA_BOOTSTRAP": None,
    }


def sqlite_files(home: Path) -> list[Path]:
    """Every SQLite file leadledger keeps under `home` (database, -wal, -shm), recursively."""
    return sorted(p for p in home.rglob("*") if p.is_file() and ".sqlite" in p.name)


def raw_bytes_of_files(home: Path) -> Iterator[tuple[Path, bytes]]:
    """The raw bytes of every file under `home` (not only SQLite ones)."""
    for path in sorted(home.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def postgres_rows(settings: Settings) -> list[tuple[str, Any]]:
    """Every value of every row of every table in the test schema: (table, value)."""
    import psycopg
    from psycopg import sql

    assert settings.postgres_dsn
    found: list[tuple[str, Any]] = []
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (settings.postgres_schema,),
            )
        ]
        assert tables, f"no tables in schema {settings.postgres_schema}"
        for table in tables:
            ident = sql.Identifier(settings.postgres_schema, table)
            for (as_text,) in conn.execute(sql.SQL("SELECT t::text FROM {} AS t").format(ident)):
                found.append((table, as_text))
            for row in conn.execute(sql.SQL("SELECT * FROM {}").format(ident)):
                found.extend((table, value) for value in row)
    return found


def contains(haystack: Any, needle: str) -> bool:
    """Whether a raw value holds `needle` as text, UTF-8 bytes, or hex-escaped bytes."""
    if isinstance(haystack, bytes | bytearray | memoryview):
        data = bytes(haystack)
        return needle.encode() in data or needle.encode().hex() in data.hex()
    text = str(haystack)
    return needle in text or needle.encode().hex() in text
