"""The query-thread pool: each thread owns one `Analytics` and answers a request from one read
snapshot, after catching the read models up."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from leadledger.bootstrap import open_analytics
from lifecycle.settings import Settings
from projections.engine.sources import StoreMismatch
from projections.query import QueryError
from projections.service import Analytics

T = TypeVar("T")
log = logging.getLogger("leadledger.http")


#: Query threads of `serve` by default: one per core, at most 4. SQLite (WAL) and PostgreSQL
#: answer readers in parallel, but the rest of a request holds the GIL: more threads than cores
#: only add contention (bench/http_bench.py, 2 cores, 303k events: 2 threads 2.09x the
#: requests/s of one, 4 threads 1.73x; on 20k events, where Python dominates, 0.92x / 0.83x).
DEFAULT_QUERY_THREADS = max(1, min(4, os.cpu_count() or 1))


class AnalyticsWorker:
    """A few threads, each owning one `Analytics` (its own database connections): opened,
    refreshed, queried and closed on that thread. A request catches the read models up, then
    runs all its queries (the report runs six) in one read snapshot."""

    def __init__(self, settings: Settings, threads: int = DEFAULT_QUERY_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"query threads must be at least 1, got {threads}")
        self.settings = settings
        self.threads = threads
        self._jobs: queue.SimpleQueue[tuple[Callable[[Analytics], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._pool: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _serve(self) -> None:  # one worker thread
        analytics: Analytics | None = None
        try:
            while (job := self._jobs.get()) is not None:
                work, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if analytics is None:
                        analytics = open_analytics(self.settings, auto_refresh=False)
                    result = work(analytics)
                except (QueryError, StoreMismatch) as exc:  # the answer is an error; the connections are fine
                    future.set_exception(exc)
                except BaseException as exc:
                    # a broken connection or transaction must not poison later requests: reopen
                    log.exception("analytics failed; reopening for the next request")
                    _close(analytics)
                    analytics = None
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            _close(analytics)

    def _submit(self, work: Callable[[Analytics], T]) -> Future[T]:
        with self._lock:
            while len(self._pool) < self.threads:
                thread = threading.Thread(target=self._serve, name=f"leadledger-query-{len(self._pool) + 1}",
                                          daemon=True)
                thread.start()
                self._pool.append(thread)
        future: Future[T] = Future()
        self._jobs.put((work, future))
        return future

    @staticmethod
    def _fresh(work: Callable[[Analytics], T]) -> Callable[[Analytics], T]:
        def run(analytics: Analytics) -> T:
            analytics.refresh()
            with analytics.db.snapshot():
                return work(analytics)

        return run

    async def run(self, work: Callable[[Analytics], T]) -> T:
        """Catch up the read models, then run `work` on a worker thread in one read snapshot."""
        return await asyncio.wrap_future(self._submit(self._fresh(work)))

    def start(self) -> None:
        """Open (and catch up) now, so a bad configuration fails at startup, not at the first request."""
        self._submit(lambda analytics: analytics.refresh()).result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for _ in pool:
            self._jobs.put(None)
        for thread in pool:
            thread.join()


def _close(analytics: Analytics | None) -> None:
    if analytics is None:
        return
    try:
        analytics.close()
    except Exception:  # closing a broken connection may fail too; it is gone either way
        log.warning("closing the analytics failed", exc_info=True)
