"""Read models are tied to their store: the hash of the event at the checkpoint is kept with it,
so read models whose store went backwards (an older backup restored) or was replaced (a new,
empty store) refuse to answer, naming `leadledger replay`, instead of never projecting the new
events numbered below their checkpoint; `replay` rebuilds them from the store they now face."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.bootstrap import bootstrap, open_analytics
from leadledger.cli import cli
from lifecycle.domain import commands as cmd
from lifecycle.settings import Settings
from projections.engine.sources import StoreMismatch
from projections.query import Query
from tests.support.cli import T0, runner_env
from tests.support.env import sqlite_settings


def capture(s: Settings, prefix: str, n: int) -> None:
    app = bootstrap(s)
    try:
        for i in range(n):
            outcome = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=f"{prefix}{i}@id.test",
                                              channel="ads"))
            assert outcome.status == "applied", outcome.error
    finally:
        app.store.close()


def run_cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=runner_env(home))


def said(result: Any) -> str:
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += f"\n{type(result.exception).__name__}: {result.exception}"
    return text


def captured(home: Path) -> int:
    result = run_cli(home, "funnel", "--json")
    assert result.exit_code == 0, said(result)
    return int(orjson.loads(result.stdout)["groups"][0]["stages"]["captured"])


def store_files(home: Path) -> list[Path]:
    return [home / name for name in ("events.sqlite", "events.sqlite-wal", "events.sqlite-shm")]


def backup(home: Path, to: Path) -> None:
    to.mkdir()
    for path in store_files(home):
        if path.exists():
            shutil.copy2(path, to / path.name)


def restore(home: Path, source: Path | None) -> None:
    """Put a backup (or, None, nothing: a new store) in place of the store."""
    for path in store_files(home):
        path.unlink(missing_ok=True)
    if source is not None:
        for path in source.iterdir():
            shutil.copy2(path, home / path.name)


def assert_refused(result: Any) -> None:
    assert result.exit_code != 0, result.output
    message = said(result)
    assert "leadledger replay" in message and "read models" in message, message


@pytest.mark.parametrize(("then", "expected"), [(60, 210), (200, 350)], ids=["store-behind", "store-past"])
def test_an_older_backup_of_the_store_is_refused_until_a_replay(tmp_path: Path, then: int, expected: int) -> None:
    home = tmp_path / "home"
    s = sqlite_settings(home)
    capture(s, "a", 150)
    backup(home, tmp_path / "backup")
    capture(s, "b", 150)
    assert captured(home) == 300  # the read models follow the store, checkpoint at 300
    restore(home, tmp_path / "backup")
    capture(s, "c", then)  # notification ids 151.. again: below the checkpoint (or past it, other events)
    for args in (("funnel",), ("attribution", "--json"), ("leads",), ("project", "--once")):
        assert_refused(run_cli(home, *args))
    replayed = run_cli(home, "replay")
    assert replayed.exit_code == 0, said(replayed)
    assert captured(home) == expected
    capture(s, "d", 5)
    assert captured(home) == expected + 5  # and it follows the store again


def test_a_new_empty_store_is_refused_until_a_replay(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = sqlite_settings(home)
    capture(s, "a", 40)
    assert captured(home) == 40
    restore(home, None)
    capture(s, "n", 10)
    result = run_cli(home, "funnel")
    assert_refused(result)
    assert "ahead of the event store" in said(result)
    assert run_cli(home, "replay").exit_code == 0
    assert captured(home) == 10


def test_the_same_store_carries_on(tmp_path: Path) -> None:
    """A backup restored that holds everything the read models saw is the same store for them."""
    home = tmp_path / "home"
    s = sqlite_settings(home)
    capture(s, "a", 30)
    assert captured(home) == 30
    backup(home, tmp_path / "backup")
    restore(home, tmp_path / "backup")
    capture(s, "b", 5)
    assert captured(home) == 35
    assert run_cli(home, "replay").exit_code == 0
    assert captured(home) == 35


def test_a_replaced_store_is_refused_on_each_backend(backend_settings: Settings, tmp_path: Path) -> None:
    """The library's answer, SQLite and PostgreSQL: every table of the store emptied (a new store),
    new events stored."""
    s = backend_settings
    capture(s, "a", 30)
    analytics = open_analytics(s)
    try:
        assert analytics.funnel(Query())["groups"][0]["stages"]["captured"] == 30
    finally:
        analytics.close()
    _empty_the_store(s)
    capture(s, "b", 12)
    analytics = open_analytics(s)
    try:
        with pytest.raises(StoreMismatch, match="leadledger replay"):
            analytics.funnel(Query())
        source = analytics.source
        assert source is not None
        analytics.runner.replay(source)
        assert analytics.funnel(Query())["groups"][0]["stages"]["captured"] == 12
    finally:
        analytics.close()


def _empty_the_store(s: Settings) -> None:
    if not s.postgres_dsn:
        restore(Path(s.home), None)
        return
    import psycopg

    with psycopg.connect(s.postgres_dsn, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name NOT LIKE 'rm\\_%%'",
            (s.postgres_schema,))]
        assert "stored_events" in tables
        names = ", ".join(f'"{s.postgres_schema}"."{t}"' for t in tables)
        conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
