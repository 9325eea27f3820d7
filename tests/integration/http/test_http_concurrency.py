"""`serve` answers requests in parallel, and each request reads one consistent snapshot."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from leadledger.bootstrap import open_analytics, open_read_models
from leadledger.http.app import create_app
from lifecycle.settings import Settings
from projections.engine.checkpoints import CHECKPOINTS
from projections.engine.runner import Runner
from projections.query import Query
from projections.service import Analytics
from tests.support.reference import simulated_app

TestClient = pytest.importorskip("fastapi.testclient").TestClient


@pytest.fixture
def filled(backend_settings: Settings) -> Iterator[Settings]:
    simulated_app(backend_settings, leads=30, seed=6).store.close()
    yield backend_settings


def test_two_requests_are_answered_at_the_same_time(filled: Settings, monkeypatch: Any) -> None:
    """Each funnel query waits at a barrier for a second one: with one query thread the
    barrier breaks (BrokenBarrierError → 500); with several both pass it together."""
    barrier = threading.Barrier(2, timeout=60)
    real = Analytics.funnel
    threads: set[str] = set()

    def funnel(self: Analytics, q: Any) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        barrier.wait()
        return real(self, q)

    monkeypatch.setattr(Analytics, "funnel", funnel)
    with TestClient(create_app(filled, None, query_threads=3)) as client, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda by: client.get("/funnel", params={"by": by}), ["channel", "campaign"]))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["by"] == "channel" and answers[1].json()["by"] == "campaign"
    assert len(threads) == 2


def test_one_query_thread_answers_one_request_at_a_time(filled: Settings, monkeypatch: Any) -> None:
    """The negative control of the test above: the barrier cannot be passed with one thread."""
    barrier = threading.Barrier(2, timeout=3)
    real = Analytics.funnel

    def funnel(self: Analytics, q: Any) -> dict[str, Any]:
        barrier.wait()
        return real(self, q)

    monkeypatch.setattr(Analytics, "funnel", funnel)
    with TestClient(create_app(filled, None, query_threads=1), raise_server_exceptions=False) as client, \
            ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: client.get("/funnel"), range(2)))
    assert sorted(a.status_code for a in answers) == [500, 500]


@pytest.mark.parametrize("exists", [False, True], ids=["new-schema", "existing-tables"])
def test_query_threads_and_processes_opening_at_once_all_succeed(backend_settings: Settings, exists: bool) -> None:
    """Every query thread, role and process opens the store and the read models when it starts,
    which runs their DDL (on PostgreSQL partly CREATE OR REPLACE, and CREATE SCHEMA: two sessions
    at once fail with "tuple concurrently updated" or a duplicate key). Eight at once must all open."""
    settings = backend_settings
    if backend_settings.postgres_dsn and not exists:
        settings = backend_settings.with_overrides(postgres_schema=f"{backend_settings.postgres_schema}_new")
    elif exists:
        open_analytics(settings).close()
    start = threading.Barrier(8, timeout=60)

    def open_one(_: int) -> int:
        start.wait()
        analytics = open_analytics(settings)
        try:
            return len(analytics.leads(Query(limit=5))["leads"])
        finally:
            analytics.close()

    try:
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(open_one, range(8))) == [0] * 8
    finally:
        if settings is not backend_settings:
            import psycopg

            with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{settings.postgres_schema}" CASCADE')


def test_a_snapshot_does_not_see_what_commits_during_it(backend_settings: Settings) -> None:
    reader, writer = open_read_models(backend_settings), open_read_models(backend_settings)
    try:
        Runner(writer).setup()
        count = f"SELECT COUNT(*) FROM {reader.name(CHECKPOINTS.name)}"
        with reader.snapshot():
            before = reader.query(count)
            with writer.transaction():
                writer.executemany(writer.insert_sql(CHECKPOINTS), [("elsewhere", 0, 41)])
            assert reader.query(count) == before
        assert reader.query(count) == [(before[0][0] + 1,)]
    finally:
        reader.close()
        writer.close()
