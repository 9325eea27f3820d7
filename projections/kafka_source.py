"""The Kafka source of the projection runner: `leadledger.lead-events` read in a consumer group.

`leadledger project --source kafka` runs `project_from_kafka`. Its positions live in the
read-model database (`rm_checkpoints`, source `kafka:<topic>`, one row per partition, the
offset of the last folded record), committed in the same transaction as the rows; the
group's offsets in Kafka are committed after it, for tools, and as a witness (below).

Two Kafka clients, so that both cores work:

* the *group* consumer only takes part in the group (`<group_prefix>.projections`): its
  partitions stay paused, it never fetches; its rebalance listener records what was
  assigned and revoked, and the main loop acts on it between batches (kafka-python calls
  listeners on its IO thread while `poll` blocks the main thread, so no batch is ever
  in flight then);
* the *fetch* consumer (no group, manual assignment) reads from the positions the main
  loop gives it and decodes records into facts, by default in a helper process.

Records are handed to the runner only from an in-memory buffer (`read` never touches the
network), and only when the buffer follows the checkpoint read in the runner's own
transaction: if another process moved a partition's checkpoint (it owned the partition for
a while), the buffer is dropped and the partition re-read after the stored checkpoint.

A partition whose log was replaced (broker restarted empty, topic re-created) is detected
three ways, and is then re-read from its beginning, its checkpoint row deleted: the stored
checkpoint is at or past the end of the log; the fetch position is out of range; or the group
has no committed offset for a partition we hold a checkpoint of (we commit one after every
batch, and a broker that lost its log lost the group's offsets with it). Re-reading is safe:
the runner skips events it has folded (same lead and version).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import marshal
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata

from consumers.kafka_config import KafkaSettings
from lifecycle.settings import Settings, SettingsError
from projections.db import ReadModelDB
from projections.facts import Fact, decode_state
from projections.runner import CHECKPOINTS, BatchResult, Runner
from projections.sources import SourceEvent
from schemas.codec import CorruptEvent

log = logging.getLogger("leadledger.projections.kafka")

SOURCE_PREFIX = "kafka:"
GROUP_SUFFIX = ".projections"
#: A row in rm_checkpoints (own source name) counting partition resets: it makes every reset
#: visible to other runners' cache checks even if positions later climb back to equal values.
RESETS_SUFFIX = "#resets"


def source_name(topic: str) -> str:
    return f"{SOURCE_PREFIX}{topic}"


def group_id(kafka: KafkaSettings) -> str:
    return f"{kafka.group_prefix}{GROUP_SUFFIX}"


@dataclass(frozen=True)
class ConsumerTuning:
    """Consumer-group timing (milliseconds), from the environment.

    Short timeouts keep rebalances fast (a join waits for the rebalance timeout, which is
    `max_poll_interval_ms`); a batch never takes long, so a short poll interval is safe."""

    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 10000
    max_poll_records: int = 5000
    #: helper processes that fetch and decode (0: the default, see `fetch_helpers`)
    fetch_processes: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsumerTuning:
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for name, default in (("session_timeout_ms", cls.session_timeout_ms),
                              ("heartbeat_interval_ms", cls.heartbeat_interval_ms),
                              ("max_poll_interval_ms", cls.max_poll_interval_ms),
                              ("max_poll_records", cls.max_poll_records),
                              ("fetch_processes", cls.fetch_processes)):
            var = f"LEADLEDGER_KAFKA_{name.upper()}"
            text = env.get(var, "").strip()
            try:
                value = int(text) if text else default
            except ValueError:
                raise SettingsError(f"{var} must be a positive integer, got {text!r}") from None
            if value < (0 if name == "fetch_processes" else 1):
                raise SettingsError(f"{var} must be a positive integer, got {value}")
            values[name] = value
        return cls(**values)


# ---------------------------------------------------------------- log ends


class OffsetsUnknown(Exception):
    """The end offsets could not be confirmed (broker unreachable or slow)."""


class LogEnds:
    """Beginning and end offsets of partitions, exact also on the bundled broker.

    Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch + 1,
    so the end is confirmed with the high watermark of a fetch from that batch (one round
    trip, at most one batch of data). On Kafka both agree."""

    def __init__(self, kafka: KafkaSettings, bootstrap_timeout_ms: int | None = None) -> None:
        extra = {} if bootstrap_timeout_ms is None else {"bootstrap_timeout_ms": bootstrap_timeout_ms}
        self.consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                      allow_auto_create_topics=False, max_partition_fetch_bytes=64 * 1024, **extra)

    def partitions(self, topic: str) -> list[int]:
        return sorted(self.consumer.partitions_for_topic(topic) or ())

    def offsets(self, topic: str, partitions: list[int] | None = None,
                timeout: float = 5.0) -> dict[int, tuple[int, int]]:
        """partition -> (beginning, end) of `topic` (all its partitions by default)."""

        parts = self.partitions(topic) if partitions is None else partitions
        if not parts:
            return {}
        tps = {p: TopicPartition(topic, p) for p in parts}
        begins = self.consumer.beginning_offsets(list(tps.values()))
        listed = self.consumer.end_offsets(list(tps.values()))
        out = {p: (int(begins[tp]), int(listed[tp])) for p, tp in tps.items()}
        probe = {p: tp for p, tp in tps.items() if out[p][1] > out[p][0]}
        if probe:
            self.consumer.assign(list(probe.values()))
            for p, tp in probe.items():
                self.consumer.seek(tp, out[p][1] - 1)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.consumer.poll(timeout_ms=100)
                if all(self.consumer.highwater(tp) is not None for tp in probe.values()):
                    break
            marks = {p: self.consumer.highwater(tp) for p, tp in probe.items()}
            self.consumer.assign([])
            missing = [p for p, hw in marks.items() if hw is None]
            for p, hw in marks.items():
                if hw is not None and int(hw) > out[p][1]:
                    out[p] = (out[p][0], int(hw))
            if missing:
                raise OffsetsUnknown(f"{topic}: no high watermark for partitions {missing} within {timeout}s")
        return out

    def close(self) -> None:
        self.consumer.close()


# ---------------------------------------------------------------- fetching


#: what a fetcher hands back, per partition: (epoch, [(offset, lead id hex, *Fact fields), ...])
Batches = dict[int, tuple[int, list[tuple[Any, ...]]]]


class OutOfRange(Exception):
    """The fetch position of these partitions is outside their log."""

    def __init__(self, partitions: dict[int, int]) -> None:
        super().__init__(f"offsets out of range: {partitions}")
        self.partitions = partitions  # partition -> epoch


def _decode(record: Any) -> tuple[str, int, bytes]:
    """(lead id as 32 hex digits, version, stored state) of a lead-events record."""
    value: bytes = record.value
    key = record.key
    version: int | None = None
    for name, raw in record.headers or ():
        if name == "ce_sequence":
            version = int(raw)
            break
    if key is not None and version is not None:
        text = key.decode()
        lead = text.replace("-", "") if len(text) == 36 else text
        if len(lead) == 32:
            return lead.lower(), version, value
    # no usable key/header: read the envelope itself (subject = lead id, sequence = version)
    envelope = orjson.loads(value)
    return str(envelope["subject"]).replace("-", "").lower(), int(envelope["sequence"]), value


class FetchCore:
    """The fetch consumer: manual assignment, positions set by the owner, records decoded."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning) -> None:
        self.topic = kafka.events_topic
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(), group_id=None, enable_auto_commit=False, allow_auto_create_topics=False,
            auto_offset_reset="none",
            max_poll_records=tuning.max_poll_records, max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024)
        self.epochs: dict[int, int] = {}

    def assign(self, positions: Mapping[int, tuple[int, int | None]]) -> None:
        """The full assignment: partition -> (epoch, first offset to read or None = beginning).
        Partitions assigned before and not listed here keep their position if their epoch is
        unchanged (pass them again with the same epoch)."""

        tps = {p: TopicPartition(self.topic, p) for p in positions}
        self.consumer.assign(list(tps.values()))
        for p, (epoch, offset) in positions.items():
            if self.epochs.get(p) == epoch:
                continue
            self.epochs[p] = epoch
            if offset is None:
                self.consumer.seek_to_beginning(tps[p])
            else:
                self.consumer.seek(tps[p], offset)
        for p in list(self.epochs):
            if p not in positions:
                del self.epochs[p]

    def poll(self, timeout_ms: int) -> Batches:
        if not self.epochs:
            time.sleep(timeout_ms / 1000)
            return {}
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except OffsetOutOfRangeError as exc:
            bad = {tp.partition for tp in _partitions_of(exc)} or set(self.epochs)

            self.consumer.pause(*(TopicPartition(self.topic, p) for p in bad))
            raise OutOfRange({p: self.epochs[p] for p in bad if p in self.epochs}) from None
        out: Batches = {}
        for tp, records in batches.items():
            p = tp.partition
            epoch = self.epochs.get(p)
            if epoch is None:
                continue
            rows = []
            for record in records:
                try:
                    lead, version, state = _decode(record)
                    fact = decode_state(version, state)
                except (CorruptEvent, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
                    raise CorruptEvent(f"{self.topic} partition {p} offset {record.offset}: {exc}") from exc
                rows.append((record.offset, lead, *fact))
            out[p] = (epoch, rows)
        return out

    def highwaters(self) -> dict[int, int]:
        """The end offsets the last fetch responses reported (a fetch's high watermark)."""
        out = {}
        for p in self.epochs:
            hw = self.consumer.highwater(TopicPartition(self.topic, p))
            if hw is not None:
                out[p] = int(hw)
        return out

    def close(self) -> None:
        self.consumer.close()


def _partitions_of(exc: Exception) -> list[Any]:
    """The TopicPartitions an OffsetOutOfRangeError names (its first argument, if a mapping)."""
    for arg in exc.args:
        if isinstance(arg, dict):
            return list(arg)
    return []


class InlineFetcher:
    """The fetch consumer in this process."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning) -> None:
        self.core = FetchCore(kafka, tuning)

    def assign(self, positions: Mapping[int, tuple[int, int | None]]) -> None:
        self.core.assign(positions)

    def fetch(self, timeout_ms: int) -> tuple[Batches, dict[int, int]]:
        batches = self.core.poll(timeout_ms)
        return batches, self.core.highwaters()

    def close(self) -> None:
        self.core.close()


def _fetch_main(conn: Connection, kafka: KafkaSettings, tuning: ConsumerTuning, credits: int) -> None:
    """Helper process: fetch and decode ahead, at most `credits` unacknowledged batches.

    A thread writes to the pipe, so fetching goes on while the projector is busy folding
    (a batch is larger than the pipe's buffer: a plain send would wait for the reader)."""
    _die_with_parent()
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def send() -> None:
        with contextlib.suppress(EOFError, OSError):
            while (item := outbox.get()) is not None:
                conn.send_bytes(item)

    sender = threading.Thread(target=send, name="leadledger-fetch-send", daemon=True)
    sender.start()
    core = FetchCore(kafka, tuning)
    try:
        while True:
            while conn.poll(0 if credits > 0 and core.epochs else 0.05):
                message = conn.recv()
                if message is None:
                    return
                if message[0] == "assign":
                    core.assign(message[1])
                elif message[0] == "credit":
                    credits += 1
            if credits <= 0 or not core.epochs:
                continue
            try:
                rows = core.poll(100)
            except OutOfRange as exc:
                outbox.put(marshal.dumps(("out_of_range", exc.partitions)))
                continue
            except CorruptEvent as exc:
                outbox.put(marshal.dumps(("error", str(exc))))
                return
            if rows:
                outbox.put(marshal.dumps(("rows", rows, core.highwaters())))
                credits -= 1
    except (EOFError, OSError, KeyboardInterrupt):
        return
    finally:
        outbox.put(None)
        sender.join(timeout=10)
        core.close()


def _die_with_parent() -> None:
    """Linux: the kernel ends this helper when the projector dies (SIGKILL included)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


class _Helper:
    """One fetch helper process and our end of its pipe."""

    def __init__(self, ctx: Any, kafka: KafkaSettings, tuning: ConsumerTuning, credits: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_fetch_main, args=(child, kafka, tuning, credits), daemon=True)
        self.proc.start()
        child.close()
        self.assigned: dict[int, tuple[int, int | None]] = {}

    def check(self) -> None:
        if not self.proc.is_alive() and not self.conn.poll(0):
            raise RuntimeError(f"a Kafka fetch process exited with {self.proc.exitcode}")

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(None)

    def join(self) -> None:
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def fetch_helpers() -> int:
    """Fetch helper processes by default: fetching and decoding costs about as much CPU per
    record as folding it, and one helper alone kept the folding process waiting half the time."""
    return max(1, min(2, os.cpu_count() or 1))


class ProcessFetcher:
    """The fetch consumer in helper processes: they fetch and decode while the runner folds.

    Partition p is fetched by helper p mod n, always the same one, so each partition's records
    stay in order; the helpers' batches are merged in arrival order."""

    def __init__(self, kafka: KafkaSettings, tuning: ConsumerTuning, credits: int = 24,
                 helpers: int = 0) -> None:
        methods = multiprocessing.get_all_start_methods()
        # fork: started before this process makes any Kafka client (and its IO thread)
        ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._helpers: list[_Helper] = []
        self._inbox: deque[Any] = deque()
        try:
            for _ in range(helpers or fetch_helpers()):
                self._helpers.append(_Helper(ctx, kafka, tuning, credits))
        except BaseException:
            self.close()
            raise

    def assign(self, positions: Mapping[int, tuple[int, int | None]]) -> None:
        n = len(self._helpers)
        for i, helper in enumerate(self._helpers):
            mine = {p: v for p, v in positions.items() if p % n == i}
            if mine or helper.assigned:  # an empty assignment only to take partitions away
                helper.conn.send(("assign", mine))
            helper.assigned = mine

    def fetch(self, timeout_ms: int) -> tuple[Batches, dict[int, int]]:
        """The decoded batches ready now (waiting up to the timeout for the first) and the
        partitions' high watermarks. A helper's report that its partitions are out of range
        (or corrupt) is raised only after the records other helpers sent with it were
        returned: none is ever dropped."""
        if not self._inbox:
            for helper in self._helpers:
                helper.check()
            for conn in mp_connection.wait([h.conn for h in self._helpers], timeout=timeout_ms / 1000):
                assert isinstance(conn, Connection)
                self._inbox.append(marshal.loads(conn.recv_bytes()))  # from our own child: trusted
                conn.send(("credit",))
        batches: Batches = {}
        highwaters: dict[int, int] = {}
        while self._inbox:
            message = self._inbox[0]
            if message[0] in ("out_of_range", "error"):
                if batches:
                    break
                self._inbox.popleft()
                if message[0] == "out_of_range":
                    raise OutOfRange(message[1])
                raise CorruptEvent(message[1])
            self._inbox.popleft()
            for p, (epoch, rows) in message[1].items():
                before = batches.get(p)
                if before is not None and before[0] == epoch:
                    before[1].extend(rows)
                else:
                    batches[p] = (epoch, rows)
            highwaters.update(message[2])
        return batches, highwaters

    def close(self) -> None:
        for helper in self._helpers:
            helper.close()
        for helper in self._helpers:
            helper.join()


# ---------------------------------------------------------------- the source


class _Listener(ConsumerRebalanceListener):
    """Rebalance callbacks (kafka-python's IO thread): note the change, pause, act later."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self.source._lock:
            for tp in revoked:
                self.source._revoked.add(tp.partition)
                self.source._assigned.discard(tp.partition)

    def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.source._group
        if assigned:
            consumer.pause(*assigned)  # the group consumer never fetches
        with self.source._lock:
            for tp in assigned:
                self.source._assigned.add(tp.partition)


@dataclass
class _Partition:
    epoch: int
    cursor: int | None  # the checkpoint the buffered records follow (None: from the beginning)
    buffer: deque[SourceEvent]
    verified_group: bool = False  # the group holds a committed offset for it (see module doc)


class KafkaSource:
    """`Source` over the lead-events topic for one runner (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, db: ReadModelDB, *, tuning: ConsumerTuning | None = None,
                 fetch_process: bool = True) -> None:

        self.kafka = kafka
        self.db = db
        self.tuning = tuning or ConsumerTuning()
        self.topic = kafka.events_topic
        self._name = source_name(self.topic)
        self._lock = threading.Lock()
        self._assigned: set[int] = set()  # newly assigned, to verify
        self._revoked: set[int] = set()
        self._parts: dict[int, _Partition] = {}  # partitions we own and read
        self._epoch = 0
        self._handed: dict[int, int] = {}  # partition -> last offset handed in the current batch
        self.resets = 0
        self.ends: dict[int, int] = {}  # last known end offsets (for lag)
        self._highwaters: dict[int, int] = {}  # as the fetch responses reported them
        self._fetcher: InlineFetcher | ProcessFetcher = (
            ProcessFetcher(kafka, self.tuning, helpers=self.tuning.fetch_processes) if fetch_process
            else InlineFetcher(kafka, self.tuning))
        try:
            self._log_ends = LogEnds(kafka)
            self._group = KafkaConsumer(
                **kafka.client_kwargs(), group_id=group_id(kafka), enable_auto_commit=False,
                allow_auto_create_topics=False,
                auto_offset_reset="earliest", session_timeout_ms=self.tuning.session_timeout_ms,
                heartbeat_interval_ms=self.tuning.heartbeat_interval_ms,
                max_poll_interval_ms=self.tuning.max_poll_interval_ms)
            self._group.subscribe([self.topic], listener=_Listener(self))
        except BaseException:
            self._fetcher.close()
            raise

    @property
    def name(self) -> str:
        return self._name

    @property
    def partitions(self) -> dict[int, int | None]:
        """The partitions this process reads, with their checkpoints."""
        return {p: s.cursor for p, s in sorted(self._parts.items())}

    def buffered(self) -> int:
        return sum(len(s.buffer) for s in self._parts.values())

    def behind(self) -> int:
        """Records after the checkpoints of the owned partitions, as far as the fetches know."""
        total = 0
        for p, state in self._parts.items():
            hw = self._highwaters.get(p)
            if hw is not None:
                total += max(0, hw - (-1 if state.cursor is None else state.cursor) - 1)
        return total

    # ---- between batches (outside the runner's transaction) --------------------

    def fill(self, timeout_ms: int = 200, want: int = 5000, patient: bool = False) -> int:
        """Take part in the group, act on rebalances, and fetch until `want` events are buffered:
        waiting up to `timeout_ms` for the first records, then taking only what is ready — or,
        `patient` (catching up), waiting for more as long as they keep coming. Returns the
        events buffered."""
        # a join waits on the broker: without partitions, wait here; with them, only look in
        # (a join in flight carries on between calls)
        self._group.poll(timeout_ms=1 if self._parts else timeout_ms)
        self._rebalance()
        got: set[int] = set()
        wait = 0 if self.buffered() else timeout_ms
        collecting = gc.isenabled()
        gc.disable()  # many small tuples next to the runner's timeline cache: see Runner.run_batch
        try:
            self._take_rows(want, wait, patient, got)
        finally:
            if collecting:
                gc.enable()
        self._check_group(got)
        return self.buffered()

    def _take_rows(self, want: int, wait: int, patient: bool, got: set[int]) -> None:
        event, fact = SourceEvent._make, Fact._make
        while self._parts and self.buffered() < want:
            try:
                batches, highwaters = self._fetcher.fetch(wait)
            except OutOfRange as exc:
                self._out_of_range(exc.partitions)
                break
            if not batches:
                break
            for p, hw in highwaters.items():
                if p in self._parts:
                    self._highwaters[p] = hw
            for p, (epoch, rows) in batches.items():
                state = self._parts.get(p)
                if state is None or state.epoch != epoch:
                    continue  # from before a seek or a rebalance
                state.buffer.extend([event((p, r[0], r[1], fact(r[2:]))) for r in rows])
                got.add(p)
            wait = PATIENT_GAP_MS if patient else 0

    def _rebalance(self) -> None:
        with self._lock:
            revoked, self._revoked = self._revoked, set()
            assigned, self._assigned = self._assigned, set()
        changed = False
        for p in revoked:
            self._highwaters.pop(p, None)
            if self._parts.pop(p, None) is not None:
                changed = True
                log.info("partition %s revoked: stopped reading it", p)
        if assigned:
            try:
                self._take(sorted(assigned))
            except KafkaError as exc:  # the broker is away: verify them on a later call
                log.warning("partitions %s assigned but not verified yet (%s); retrying", sorted(assigned), exc)
                for p in assigned:
                    self._parts.pop(p, None)
                with self._lock:
                    self._assigned |= assigned - self._revoked
            changed = True
        if changed:
            self._push_assignment()

    def _take(self, partitions: list[int]) -> None:
        """Verify newly assigned partitions against their stored checkpoints (module doc)."""
        tps = {p: TopicPartition(self.topic, p) for p in partitions}
        stored = self._checkpoints()
        offsets: dict[int, tuple[int, int]] = {}
        for attempt in range(3):
            try:
                offsets = self._log_ends.offsets(self.topic, partitions)
                break
            except OffsetsUnknown as exc:
                log.warning("assignment: %s (attempt %s of 3)", exc, attempt + 1)
        commits = {}
        for p, tp in tps.items():
            begin, end = offsets.get(p, (None, None))
            if end is not None:
                self.ends[p] = end
            checkpoint = stored.get(p)
            self._epoch += 1
            state = _Partition(self._epoch, checkpoint, deque())
            self._parts[p] = state
            if checkpoint is None:
                log.info("partition %s assigned: no checkpoint, reading from the beginning", p)
                continue
            if end is not None and checkpoint + 1 > end:
                self._reset(p, f"the checkpoint (offset {checkpoint}) is past the end of the log ({end}): "
                               "the topic was re-created or the broker lost data")
            elif self._committed(tp) is None:
                self._reset(p, f"the group {group_id(self.kafka)} has no offset for it while the read "
                               f"models hold checkpoint {checkpoint}: the broker lost its state, or the group is new")
            elif begin is not None and checkpoint + 1 < begin:
                log.error("partition %s: records after the checkpoint (offset %s) were deleted before they "
                          "were projected (log starts at %s); reading from the beginning. Republish the "
                          "store (`leadledger relay --from-start`) to recover the missing events.",
                          p, checkpoint, begin)
                self._reset(p, "records were deleted before they were projected")
            else:
                state.verified_group = True
                commits[tp] = checkpoint + 1
                log.info("partition %s assigned: resuming after checkpoint %s (end of log %s)", p, checkpoint, end)
        self._commit(commits)

    def _reset(self, p: int, reason: str) -> None:
        """Forget partition p's checkpoint (in the read-model database) and read it from the start."""
        log.warning("partition %s of %s: %s; re-reading it from the beginning (events already "
                    "projected are skipped by lead and version)", p, self.topic, reason)
        with self.db.transaction(lock_key="runner"):
            self.db.execute(f"DELETE FROM {self.db.name(CHECKPOINTS.name)} WHERE source_name = ? AND partition_no = ?",
                            (self._name, p))
            resets_name = self._name + RESETS_SUFFIX
            row = self.db.query(f"SELECT position_no FROM {self.db.name(CHECKPOINTS.name)} "
                                "WHERE source_name = ? AND partition_no = 0", (resets_name,))
            count = int(row[0][0]) + 1 if row else 1
            self.db.execute(self.db.insert_sql(CHECKPOINTS), (resets_name, 0, count))
        self.resets += 1
        self._epoch += 1
        self._highwaters.pop(p, None)
        self._parts[p] = _Partition(self._epoch, None, deque())

    def _out_of_range(self, partitions: Mapping[int, int]) -> None:
        hit = [p for p, epoch in partitions.items() if p in self._parts and self._parts[p].epoch == epoch]
        if not hit:
            self._push_assignment()  # stale report: re-send positions so paused partitions resume
            return
        try:
            offsets = self._log_ends.offsets(self.topic, hit)
        except (KafkaError, OffsetsUnknown) as exc:  # look again on a later fetch
            log.warning("partitions %s: offsets out of range, and the log ends are unknown (%s)", hit, exc)
            for p in hit:
                self._resync(p, self._parts[p].cursor)
            return
        for p, (_, end) in offsets.items():
            self.ends[p] = end
            self._reset(p, f"the next offset is out of range (end of log {end})")
        self._push_assignment()

    def _check_group(self, partitions: set[int]) -> None:
        """After a fetch: a partition whose group offset vanished was fetched from a new log."""
        lost = []
        vouch = [p for p in partitions
                 if (state := self._parts.get(p)) is not None and state.cursor is not None and state.verified_group]
        if not vouch:
            return
        try:
            committed = self._committed_many(vouch)
        except KafkaError as exc:  # coordinator unreachable: cannot vouch for these records
            log.warning("partitions %s: cannot read the group's offsets (%s); fetching again", vouch, exc)
            for p in vouch:
                self._resync(p, self._parts[p].cursor)
            return
        for p in vouch:
            if committed.get(p) is None:
                lost.append(p)
        for p in lost:
            self._reset(p, f"the group {group_id(self.kafka)} lost its offset (the broker restarted empty?)")
        if lost:
            self._push_assignment()

    def _committed(self, tp: Any) -> int | None:
        value = self._group.committed(tp)
        return None if value is None else int(value)

    def _committed_many(self, partitions: list[int]) -> dict[int, int | None]:
        """The group's committed offsets of several partitions in one request."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        coordinator = getattr(self._group, "_coordinator", None)
        fetch = getattr(coordinator, "fetch_committed_offsets", None)
        if fetch is None:  # another kafka-python: one request per partition
            return {tp.partition: self._committed(tp) for tp in tps}
        found = fetch(tps)
        out: dict[int, int | None] = {}
        for tp in tps:
            value = found.get(tp)
            out[tp.partition] = None if value is None or value.offset is None or value.offset < 0 else int(value.offset)
        return out

    def _checkpoints(self) -> dict[int, int]:
        rows = self.db.query(
            f"SELECT partition_no, position_no FROM {self.db.name(CHECKPOINTS.name)} WHERE source_name = ?",
            (self._name,))
        return {int(p): int(pos) for p, pos in rows}

    def _resync(self, p: int, checkpoint: int | None) -> None:
        """Drop what is buffered for p and fetch again after `checkpoint`."""
        self._epoch += 1
        self._parts[p] = _Partition(self._epoch, checkpoint, deque(), self._parts[p].verified_group)
        self._push_assignment()

    def _push_assignment(self) -> None:
        self._fetcher.assign({p: (s.epoch, None if s.cursor is None else s.cursor + 1)
                              for p, s in self._parts.items()})

    def committed_batch(self) -> None:
        """After the runner committed a batch: the group's offsets follow (informational)."""
        offsets = {TopicPartition(self.topic, p): off + 1 for p, off in self._handed.items() if p in self._parts}
        self._handed.clear()
        if self._commit(offsets):
            for tp in offsets:
                self._parts[tp.partition].verified_group = True

    def _commit(self, offsets: Mapping[Any, int]) -> bool:
        if not offsets:
            return True
        try:
            self._group.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            return True
        except Exception as exc:  # a rebalance in progress: the read models hold the truth
            log.debug("group offset commit skipped: %s", exc)
            return False

    def lag(self) -> dict[int, dict[str, int | None]]:
        """Per owned partition: checkpoint, end offset, records behind (queries the broker)."""
        if not self._parts:
            return {}
        try:
            offsets = self._log_ends.offsets(self.topic, sorted(self._parts))
        except (OffsetsUnknown, KafkaError) as exc:
            log.debug("end offsets unavailable: %s", exc)
            offsets = {}
        shrunk = False
        for p, (_, end) in offsets.items():
            self.ends[p] = end
            state = self._parts.get(p)
            if state is not None and state.cursor is not None and state.cursor + 1 > end:
                self._reset(p, f"the checkpoint (offset {state.cursor}) is past the end of the log ({end}): "
                               "the topic was re-created or the broker lost data")
                shrunk = True
        if shrunk:
            self._push_assignment()
        out: dict[int, dict[str, int | None]] = {}
        for p, st in sorted(self._parts.items()):
            known = self.ends.get(p)
            done = 0 if st.cursor is None else st.cursor + 1
            out[p] = {"checkpoint": st.cursor, "end": known, "lag": None if known is None else max(0, known - done)}
        return out

    def caught_up(self) -> bool:
        """Owns partitions, has nothing buffered, and every checkpoint is at its end offset."""
        if not self._parts or self.buffered():
            return False
        return all(v["lag"] == 0 for v in self.lag().values())

    # ---- inside the runner's transaction ---------------------------------------

    def read(self, after: Mapping[int, int], limit: int) -> list[SourceEvent]:
        out: list[SourceEvent] = []
        self._handed.clear()
        for p, state in list(self._parts.items()):
            if after.get(p) != state.cursor:
                # someone else moved this checkpoint (or our last batch rolled back): follow the table
                log.info("partition %s: checkpoint %s in the read models, %s here; re-reading after it",
                         p, after.get(p), state.cursor)
                self._resync(p, after.get(p))
                continue
            buffer = state.buffer
            while buffer and len(out) < limit:
                out.append(buffer.popleft())
            if out and out[-1].partition == p:
                state.cursor = out[-1].position
                self._handed[p] = state.cursor
            if len(out) >= limit:
                break
        return out

    def remaining(self, after: Mapping[int, int]) -> int | None:
        return None

    def close(self) -> None:
        try:
            self._group.close(autocommit=False)
            self._log_ends.close()
        finally:
            self._fetcher.close()


# ---------------------------------------------------------------- the role


@dataclass
class Progress:
    events: int = 0
    duplicates: int = 0
    batches: int = 0
    assigned_at: float | None = None  # monotonic time the first partitions were owned (after the join)
    last_batch_at: float | None = None  # monotonic time the last batch committed


#: While behind, batches grow up to this many times --batch-size (a 1M-event catch-up on SQLite
#: runs 2.4 times as fast with 100,000-event transactions as with 5,000).
CATCH_UP_FACTOR = 20
#: While catching up, wait this long for the fetcher's next records before folding what is there.
PATIENT_GAP_MS = 1000


def project_from_kafka(settings: Settings, kafka: KafkaSettings, *, batch_size: int = 5000,
                       poll_interval: float = 0.2, log_every: float = 10.0, once: bool = False,
                       fetch_process: bool = True, tuning: ConsumerTuning | None = None,
                       should_stop: Callable[[], bool] = lambda: False,
                       echo: Callable[[str], None] = print) -> Progress:
    """The `project --source kafka` loop: fill, fold a batch, commit the group offsets, log.

    `once`: stop when every owned partition is caught up with its end offset."""
    db = ReadModelDB(settings)
    progress = Progress()
    try:
        runner = Runner(db)
        stale = runner.setup()
        if stale:
            echo(f"rebuilt read models whose definition changed: {', '.join(stale)}")
        source = KafkaSource(kafka, db, tuning=tuning or ConsumerTuning.from_env(), fetch_process=fetch_process)
        try:
            echo(f"projecting from {source.name} in group {group_id(kafka)} ({kafka.bootstrap})")
            _loop(runner, source, progress, batch_size=batch_size, poll_ms=int(poll_interval * 1000),
                  log_every=log_every, once=once, should_stop=should_stop, echo=echo)
        finally:
            source.close()
    finally:
        db.close()
    return progress


def _loop(runner: Runner, source: KafkaSource, progress: Progress, *, batch_size: int, poll_ms: int,
          log_every: float, once: bool, should_stop: Callable[[], bool], echo: Callable[[str], None]) -> None:
    started = mark = time.monotonic()
    window = 0
    while not should_stop():
        # catching up: bigger transactions (up to CATCH_UP_FACTOR x --batch-size) cost far less
        # per event; caught up: --batch-size, and only what is there
        behind = source.behind()
        limit = min(behind, batch_size * CATCH_UP_FACTOR) if behind > batch_size else batch_size
        source.fill(timeout_ms=poll_ms, want=limit, patient=limit > batch_size)
        if progress.assigned_at is None and source.partitions:
            progress.assigned_at = mark = time.monotonic()  # rates from here: a join is not projecting
        result: BatchResult = runner.run_batch(source, limit) if source.buffered() else BatchResult(0, 0, 0)
        if result.events:
            source.committed_batch()
            progress.events += result.events
            progress.duplicates += result.duplicates
            progress.batches += 1
            window += result.events
            progress.last_batch_at = time.monotonic()
        now = time.monotonic()
        idle = result.events == 0
        if now - mark >= log_every or (idle and window):
            echo(_progress_line("caught up" if idle else "projecting", progress, window, now - mark, source))
            window, mark = 0, now
        if once and idle and source.caught_up():
            break
    elapsed = time.monotonic() - started
    echo(f"stopped: {progress.events} events ({progress.duplicates} duplicates skipped) in {elapsed:.1f}s, "
         f"partitions {source.partitions}")


def _progress_line(state: str, progress: Progress, window: int, seconds: float, source: KafkaSource) -> str:
    lag = source.lag()
    parts = ", ".join(f"p{p} at {v['checkpoint']} lag {v['lag']}" for p, v in lag.items()) or "none assigned"
    return (f"{state}: {progress.events} events ({window / max(seconds, 1e-6):,.0f} events/s), "
            f"{progress.duplicates} duplicates skipped; partitions: {parts}")


def project_command(settings: Settings, *, batch_size: int, poll_interval: float, log_every: float,
                    once: bool) -> None:
    """`leadledger project --source kafka`: settings from the environment, progress on stderr,
    SIGTERM / Ctrl-C stop after the batch in hand."""
    import click
    from kafka.errors import KafkaError

    from consumers.cli import log_to_stderr, stop_on_signals
    from lifecycle.cli import fail

    try:
        kafka = KafkaSettings.from_env(bootstrap=settings.kafka_bootstrap)
        tuning = ConsumerTuning.from_env()
    except SettingsError as exc:
        fail(str(exc), 2)
        raise
    log_to_stderr()
    try:
        with stop_on_signals() as should_stop:
            progress = project_from_kafka(settings, kafka, batch_size=batch_size, poll_interval=min(poll_interval, 1.0),
                                          log_every=log_every, once=once, tuning=tuning, should_stop=should_stop,
                                          echo=log.info)
    except KafkaError as exc:
        fail(f"Kafka at {kafka.bootstrap}: {exc}")
    except KeyboardInterrupt:
        fail("aborted: the batch in hand was rolled back and will be read again", 130)
    else:
        click.echo(f"projected {progress.events} events from {kafka.events_topic}", err=True)
