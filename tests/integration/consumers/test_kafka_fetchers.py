"""The projector's fetch helpers on a real broker: several helper processes split the
partitions, every record arrives exactly once and in order within its partition, and a
helper's out-of-range report never drops the records another helper sent with it."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import pytest

from consumers.kafka.fetchers import OutOfRange, ProcessFetcher
from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from lifecycle.settings import Settings
from tests.support.env import TEST_SECRET
from tests.support.kafka_projection import all_rows, create_topic, publish_events
from tests.support.reference import simulated_app

TUNING = ConsumerTuning(max_poll_records=50)  # many small batches: lots of interleaving


@pytest.mark.parametrize("helpers", [1, 2, 3])
def test_helpers_split_the_partitions_and_keep_each_in_order(kafka_settings: KafkaSettings, tmp_path: Path,
                                                              helpers: int) -> None:
    kafka = kafka_settings.model_copy(update={"partitions": 4})
    create_topic(kafka)
    app = simulated_app(Settings(home=tmp_path, secret=TEST_SECRET), leads=60, seed=5)
    rows = all_rows(app.store)
    app.store.close()
    publish_events(kafka, rows)
    fetcher = ProcessFetcher(kafka, TUNING, helpers=helpers)
    try:
        fetcher.assign({p: (1, None) for p in range(4)})
        seen: dict[int, list[tuple[int, str, int]]] = {p: [] for p in range(4)}
        deadline = time.monotonic() + 60
        while sum(map(len, seen.values())) < len(rows):
            assert time.monotonic() < deadline, f"fetched {sum(map(len, seen.values()))} of {len(rows)}"
            batches, _ = fetcher.fetch(500)
            for p, (epoch, records) in batches.items():
                assert epoch == 1
                seen[p].extend((r[0], r[1], r[3]) for r in records)  # offset, lead, Fact.version
        extra, _ = fetcher.fetch(300)
        assert extra == {}, "a record arrived twice"
    finally:
        fetcher.close()
    for p, records in seen.items():
        assert [offset for offset, _, _ in records] == list(range(len(records))), f"partition {p}"
    fetched = sorted((lead, version) for records in seen.values() for _, lead, version in records)
    assert fetched == sorted((row[1].hex, row[2]) for row in rows)


def test_an_out_of_range_report_is_raised_after_the_records_that_came_with_it(
        kafka_settings: KafkaSettings) -> None:
    fetcher = ProcessFetcher(kafka_settings, TUNING, helpers=2)
    try:
        row = (7, "ab" * 16, 1_700_000_000_000_000, 1, "LeadTouched", 1_700_000_000_000_000)
        fetcher._inbox = deque([  # what two helpers sent in one round, then a third message
            ("rows", {0: (1, [row])}, {0: 8}),
            ("out_of_range", {1: 1}),
            ("rows", {2: (1, [row, row])}, {2: 9}),
        ])
        assert fetcher.fetch(0) == ({0: (1, [row])}, {0: 8})
        with pytest.raises(OutOfRange) as raised:
            fetcher.fetch(0)
        assert raised.value.partitions == {1: 1}
        assert fetcher.fetch(0) == ({2: (1, [row, row])}, {2: 9})
    finally:
        fetcher.close()
