"""Hostile inbound records on a real broker: every bad one lands in the DLQ, intact, with a reason.

Thousands of records from hypothesis strategies (random bytes, non-UTF-8, JSON that is not
an object, wrong types, strings beyond 64 KiB, unknown kinds, missing fields, unknown
leads, refused transitions, null keys and values, forged headers) are produced between
valid captures; the consumer must carry on, and accepted + duplicates + dead-lettered
must equal what was produced.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from consumers.inbound import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC, run_consumer
from consumers.kafka.settings import KafkaSettings
from consumers.kafka.topics import ensure_topics
from leadledger.bootstrap import bootstrap
from lifecycle.inbound import InboundHandler
from lifecycle.settings import Settings
from schemas.inbound import KINDS, MAX_MESSAGE_BYTES
from tests.support.kafka_inbound import FAST_GROUP, header, read_topic

T = TypeVar("T")
SOURCE = "fuzz"
CAPTURED = [f"known-{i}@example.com" for i in range(40)]
#: triggers refused from `captured` (wrong stage, failed guard, or no such trigger)
REFUSED_FROM_CAPTURED = ["accept", "reject", "qualify_sql", "win", "lose", "recycle", "qualify_mql", "teleport"]

_ids = iter(range(10**9))


def next_id() -> str:
    return f"m-{next(_ids)}"


def message(kind: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": next_id(), "source": SOURCE, "type": f"leadledger.inbound.{kind}.v1",
            "time": "2026-03-02T09:00:00Z", "data": data, **envelope}


def capture(email: str) -> dict[str, Any]:
    return message("capture", {"email": email, "channel": "webinar", "campaign": "q1"})


# ---------------------------------------------------------------- strategies
# Each yields (category, key, value, headers): a record the consumer must dead-letter.

Bad = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
Produced = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers

int64 = st.integers(-(2**63), 2**63 - 1)
keys = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([e.encode() for e in CAPTURED]))
not_a_string = st.one_of(st.none(), int64, st.floats(allow_nan=False, allow_infinity=False),
                         st.booleans(), st.lists(int64, max_size=3),
                         st.dictionaries(st.text(max_size=4), int64, max_size=2))
json_scalars = st.one_of(st.none(), st.booleans(), int64,
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
not_objects = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=10)


def encoded(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return strategy.map(orjson.dumps)  # each draw built its message afresh: ids never repeat


@st.composite
def wrong_types(draw: st.DrawFn) -> dict[str, Any]:
    m = capture(draw(st.sampled_from(CAPTURED)))
    where = draw(st.sampled_from(["id", "source", "type", "time", "specversion", "subject", "data",
                                  "data.email", "data.channel", "data.campaign", "data.consent"]))
    if where == "data":
        m["data"] = draw(not_objects)
    elif where == "data.consent":
        m["data"]["consent"] = draw(st.one_of(int64, st.text(max_size=5), st.lists(st.booleans())))
    elif where.startswith("data."):
        value = draw(not_a_string)
        m["data"][where[5:]] = 0 if value is None and where == "data.campaign" else value  # campaign may be null
    else:
        m[where] = draw(not_a_string)
    return m


@st.composite
def missing_fields(draw: st.DrawFn) -> dict[str, Any]:
    m = capture(draw(st.sampled_from(CAPTURED)))
    where = draw(st.sampled_from(["id", "source", "type", "data", "specversion", "data.email", "data.channel"]))
    if where.startswith("data."):
        del m["data"][where[5:]]
    else:
        del m[where]
    return m


@st.composite
def unknown_kinds(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.from_regex(r"[a-z_]{1,14}", fullmatch=True).filter(lambda k: k not in KINDS))
    m = message("touch", {"email": draw(st.sampled_from(CAPTURED)), "channel": "web"})
    if draw(st.booleans()):
        m["type"] = f"leadledger.inbound.{kind}.v1"
    else:
        m["type"] = f"leadledger.inbound.{draw(st.sampled_from(KINDS))}.v{draw(st.integers(2, 99))}"
    return m


@st.composite
def unknown_leads(draw: st.DrawFn) -> dict[str, Any]:
    choices: list[tuple[str, dict[str, Any]]] = [("touch", {"channel": "web"}), ("score", {"total": 50}),
                                                 ("assign", {"owner": "ann"}), ("transition", {"trigger": "nurture"})]
    kind, data = draw(st.sampled_from(choices))
    if draw(st.booleans()):
        return message(kind, dict(data), subject=str(draw(st.uuids())))
    return message(kind, {**data, "email": f"ghost-{draw(st.integers(0, 10**6))}@nowhere.example"})


@st.composite
def refused_transitions(draw: st.DrawFn) -> dict[str, Any]:
    return message("transition", {"email": draw(st.sampled_from(CAPTURED)),
                                  "trigger": draw(st.sampled_from(REFUSED_FROM_CAPTURED))})


@st.composite
def huge(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(MAX_MESSAGE_BYTES + 1, 4 * MAX_MESSAGE_BYTES))
    return capture(draw(st.sampled_from(CAPTURED))) | {"padding": "x" * size}


def non_utf8(raw: bytes) -> bytes:
    return b'{"specversion": "1.0", "id": "' + raw + b'\xff\xfe\x80", "source": "fuzz"}'


forged = st.lists(st.tuples(st.sampled_from([HEADER_REASON, HEADER_OFFSET, "x-trace"]), st.binary(max_size=8)),
                  max_size=2)


def bad(category: str, values: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[Bad]:
    return st.tuples(st.just(category), keys, values, forged)


BAD_RECORDS: st.SearchStrategy[Bad] = st.one_of(
    bad("random bytes", st.binary(max_size=300)),
    bad("non-UTF-8", st.binary(max_size=20).map(non_utf8)),
    bad("JSON non-object", not_objects.map(orjson.dumps)),
    bad("wrong types", encoded(wrong_types())),
    bad("missing fields", encoded(missing_fields())),
    bad("unknown kind", encoded(unknown_kinds())),
    bad("unknown lead", encoded(unknown_leads())),
    bad("refused transition", encoded(refused_transitions())),
    bad("oversized", encoded(huge())),
    bad("null value", st.none()),
    bad("deep nesting", st.integers(600, 5000).map(lambda n: b"[" * n + b"]" * n)),
    bad("hostile time", st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]).map(
        lambda t: orjson.dumps(capture(f"t-{next_id()}@example.com") | {"time": t}))),
)

#: what the reason must say, per category (random bytes may fail in several ways)
REASONS: dict[str, tuple[str, ...]] = {
    "non-UTF-8": ("not JSON",),
    "JSON non-object": ("not a JSON object",),
    "wrong types": ("violates",),
    "missing fields": ("violates",),
    "unknown kind": ("unknown kind", "unsupported version"),
    "unknown lead": ("unknown lead",),
    "refused transition": ("captured", "trigger must be one of"),
    "oversized": ("oversized",),
    "null value": ("no value",),
    "deep nesting": ("not JSON", "not a JSON object"),  # past orjson's depth limit, or a list
    "hostile time": ("time", "internal error"),
}


def collect(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """`n` examples drawn by hypothesis (fixed seed), without a broker round trip each."""
    out: list[T] = []

    @settings(max_examples=n, database=None, derandomize=True, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(example: T) -> None:
        out.append(example)

    gather()
    return out


def produce_all(bootstrap_servers: str, topic: str, records: list[Produced]) -> list[tuple[int, int]]:
    """Produce in order and return each record's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5,
                             max_request_size=4 * 1024 * 1024)
    try:
        futures = [producer.send(topic, key=k, value=v, headers=h) for k, v, h in records]
        producer.flush(timeout=60)
        metadata = [f.get(timeout=10) for f in futures]
        return [(m.partition, m.offset) for m in metadata]
    finally:
        producer.close(timeout=10)


def consume_all(kafka_settings: KafkaSettings, settings_: Settings, stop_after: float = 90.0) -> Any:
    app = bootstrap(settings_)
    try:
        deadline = time.monotonic() + stop_after
        return run_consumer(InboundHandler(app), kafka_settings, FAST_GROUP,
                            should_stop=lambda: time.monotonic() > deadline)
    finally:
        app.store.close()


def test_every_hostile_record_is_dead_lettered_intact_and_the_consumer_carries_on(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    hostile = collect(BAD_RECORDS, 2500)
    categories = Counter(category for category, *_ in hostile)
    assert len(categories) == 12, categories  # every kind of bad input is in the mix
    valid: list[Produced] = [(e.encode(), orjson.dumps(capture(e)), []) for e in CAPTURED]
    repeats = [valid[i] for i in range(0, len(valid), 4)]  # same id + source again: duplicates
    records: list[Produced] = [*valid, *repeats]
    records += [(key if key is not None or value is not None else b"k", value, list(headers))
                for _, key, value, headers in hostile]
    ensure_topics(kafka_settings)
    positions = produce_all(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)
    where = dict(zip(positions, range(len(records)), strict=True))

    stats = consume_all(kafka_settings, Settings(home=tmp_path, secret=b"leadledger-test-secret"))

    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (len(valid), len(repeats), len(hostile))
    assert stats.applied + stats.duplicates + stats.dead_lettered == len(records)

    letters = read_topic(kafka_settings.bootstrap, kafka_settings.dlq_topic, at_least=len(hostile))
    by_source: dict[tuple[int, int], Any] = {}
    for letter in letters:
        assert header(letter, HEADER_TOPIC) == kafka_settings.inbound_topic.encode()
        source = (int(header(letter, HEADER_PARTITION) or b"-1"), int(header(letter, HEADER_OFFSET) or b"-1"))
        by_source.setdefault(source, letter)
    assert len(by_source) == len(hostile)  # one dead letter per bad record, none for the good ones
    bad_by_reason: Counter[str] = Counter()
    for source, letter in by_source.items():
        index = where[source]
        assert index >= len(valid) + len(repeats), f"a good record was dead-lettered: {letter}"
        category, *_ = hostile[index - len(valid) - len(repeats)]
        key, original, _ = records[index]
        assert letter.key == key and letter.value == original, category  # the original bytes
        reasons = [v for k, v in letter.headers if k == HEADER_REASON]
        assert len(reasons) == 1 and reasons[0], "exactly one reason: ours, forged ones dropped"
        reason = reasons[0].decode()
        expected = REASONS.get(category)
        assert expected is None or any(word in reason for word in expected), (category, reason)
        bad_by_reason[category] += 1
    assert bad_by_reason == categories


@pytest.mark.usefixtures("kafka_bootstrap")
def test_a_record_the_handler_cannot_judge_is_isolated_not_fatal(
    kafka_settings: KafkaSettings, backend_settings: Settings
) -> None:
    """Whatever makes the handler raise (an out-of-range time; NUL in a PostgreSQL text key)
    is dead-lettered alone; the records around it in the same batch are applied."""
    good = [capture(f"fine-{i}@example.com") for i in range(6)]
    nul_id = capture("nul@example.com") | {"id": "nul\u0000id"}
    bad_time = capture("old@example.com") | {"time": "0001-01-01T00:00:00+01:00"}
    stream = [good[0], good[1], bad_time, good[2], nul_id, good[3], good[4], good[5]]
    records: list[Produced] = [(m["data"]["email"].encode(), orjson.dumps(m), []) for m in stream]
    ensure_topics(kafka_settings)
    produce_all(kafka_settings.bootstrap, kafka_settings.inbound_topic, records)

    stats = consume_all(kafka_settings, backend_settings)

    assert stats.records == len(stream)
    assert stats.applied >= len(good)  # all good ones; NUL is fine on SQLite, refused by PostgreSQL
    letters = read_topic(kafka_settings.bootstrap, kafka_settings.dlq_topic, at_least=stats.dead_lettered)
    assert len(letters) == stats.dead_lettered >= 1
    dead = {letter.value for letter in letters}
    assert orjson.dumps(bad_time) in dead
    assert dead <= {orjson.dumps(bad_time), orjson.dumps(nul_id)}
    if backend_settings.postgres_dsn:  # PostgreSQL text cannot hold NUL: the store refuses it
        assert orjson.dumps(nul_id) in dead
    app = bootstrap(backend_settings)
    try:
        emails = {f"fine-{i}@example.com" for i in range(6)}
        lead_ids = {app.lead_id_for(_ref(e)) for e in emails}
        assert lead_ids <= set(app.store.lead_ids())
    finally:
        app.store.close()


def _ref(email: str) -> Any:
    from lifecycle.domain.commands import LeadRef

    return LeadRef(email=email)
