"""The Kafka source of the projection runner: `leadledger.lead-events` read in a consumer group.

`leadledger project --source kafka` runs `project_from_kafka`. Its positions live in the
read-model database (`rm_checkpoints`, source `kafka:<topic>`, one row per partition, the
offset of the last folded record), committed in the same transaction as the rows; the
group's offsets in Kafka are committed after it, for tools, and as a witness (below).

Two Kafka clients, so that both cores work:

* the *group* consumer (`consumers.kafka.group`) only takes part in the group
  (`<group_prefix>.projections`): its partitions stay paused, it never fetches; its rebalance
  listener records what was assigned and revoked, and the main loop acts on it between
  batches (kafka-python calls listeners on its IO thread while `poll` blocks the main
  thread, so no batch is ever in flight then);
* the *fetch* consumer (`consumers.kafka.fetchers`: no group, manual assignment) reads from
  the positions the main loop gives it and decodes records into facts, by default in a
  helper process.

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

Every record is checked as it is decoded (in the fetch helper): its hash against its content,
its key and headers against the lead and version it states; the runner then checks its link to
the lead's previous event (`projections.engine.chains`). A bad record stops the projector with
CorruptEvent naming the lead, the version and the partition and offset.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from kafka.errors import KafkaError

from consumers.kafka.fetchers import InlineFetcher, OutOfRange, ProcessFetcher
from consumers.kafka.group import GroupMember
from consumers.kafka.log_ends import LogEnds, OffsetsUnknown
from consumers.kafka.settings import ConsumerTuning, KafkaSettings
from consumers.kafka.topics import source_name
from projections.engine.checkpoints import Checkpoints
from projections.engine.db import ReadModelDB
from projections.engine.sources import SourceEvent
from schemas.facts import Fact

log = logging.getLogger("leadledger.projections.kafka")

#: While catching up, wait this long for the fetcher's next records before folding what is there.
PATIENT_GAP_MS = 1000

#: A row in rm_checkpoints (own source name) counting partition resets: it makes every reset
#: visible to other runners' cache checks even if positions later climb back to equal values.
RESETS_SUFFIX = "#resets"


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
        self._checkpoints = Checkpoints(db)
        self._parts: dict[int, _Partition] = {}  # partitions we own and read
        self._epoch = 0
        self._handed: dict[int, int] = {}  # partition -> last offset handed in the current batch
        self.resets = 0
        self.ends: dict[int, int] = {}  # last known end offsets (for lag)
        self._highwaters: dict[int, int] = {}  # as the fetch responses reported them
        # the helper processes are forked before this process makes any Kafka client
        self._fetcher: InlineFetcher | ProcessFetcher = (
            ProcessFetcher(kafka, self.tuning, helpers=self.tuning.fetch_processes) if fetch_process
            else InlineFetcher(kafka, self.tuning))
        try:
            self._log_ends = LogEnds(kafka)
            self._group = GroupMember(kafka, self.tuning)
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
        self._group.poll(1 if self._parts else timeout_ms)
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
                state.buffer.extend([event((p, r[0], r[1], fact(r[2:-2]), r[-2], r[-1])) for r in rows])
                got.add(p)
            wait = PATIENT_GAP_MS if patient else 0

    def _rebalance(self) -> None:
        revoked, assigned = self._group.changes()
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
                self._group.again(assigned)
            changed = True
        if changed:
            self._push_assignment()

    def _take(self, partitions: list[int]) -> None:
        """Verify newly assigned partitions against their stored checkpoints (module doc)."""
        stored = self._checkpoints.read(self._name)
        offsets: dict[int, tuple[int, int]] = {}
        for attempt in range(3):
            try:
                offsets = self._log_ends.offsets(self.topic, partitions)
                break
            except OffsetsUnknown as exc:
                log.warning("assignment: %s (attempt %s of 3)", exc, attempt + 1)
        commits = {}
        for p in partitions:
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
            elif self._group.committed(p) is None:
                self._reset(p, f"the group {self._group.group_id} has no offset for it while the read "
                               f"models hold checkpoint {checkpoint}: the broker lost its state, or the group is new")
            elif begin is not None and checkpoint + 1 < begin:
                log.error("partition %s: records after the checkpoint (offset %s) were deleted before they "
                          "were projected (log starts at %s); reading from the beginning. Republish the "
                          "store (`leadledger relay --from-start`) to recover the missing events.",
                          p, checkpoint, begin)
                self._reset(p, "records were deleted before they were projected")
            else:
                state.verified_group = True
                commits[p] = checkpoint + 1
                log.info("partition %s assigned: resuming after checkpoint %s (end of log %s)", p, checkpoint, end)
        self._group.commit(commits)

    def _reset(self, p: int, reason: str) -> None:
        """Forget partition p's checkpoint (in the read-model database) and read it from the start."""
        log.warning("partition %s of %s: %s; re-reading it from the beginning (events already "
                    "projected are skipped by lead and version)", p, self.topic, reason)
        with self.db.transaction(lock_key="runner"):
            self._checkpoints.delete(self._name, p)
            resets = self._name + RESETS_SUFFIX
            self._checkpoints.set(resets, 0, self._checkpoints.read(resets).get(0, 0) + 1)
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
        vouch = [p for p in partitions
                 if (state := self._parts.get(p)) is not None and state.cursor is not None and state.verified_group]
        if not vouch:
            return
        try:
            committed = {p: self._group.committed(p) for p in vouch}
        except KafkaError as exc:  # coordinator unreachable: cannot vouch for these records
            log.warning("partitions %s: cannot read the group's offsets (%s); fetching again", vouch, exc)
            for p in vouch:
                self._resync(p, self._parts[p].cursor)
            return
        lost = [p for p in vouch if committed[p] is None]
        for p in lost:
            self._reset(p, f"the group {self._group.group_id} lost its offset (the broker restarted empty?)")
        if lost:
            self._push_assignment()

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
        offsets = {p: off + 1 for p, off in self._handed.items() if p in self._parts}
        self._handed.clear()
        if self._group.commit(offsets):
            for p in offsets:
                self._parts[p].verified_group = True

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

    @property
    def gapless(self) -> bool:
        # partitions added to the topic move a lead's later events to another partition, which
        # may be read first: the runner joins the links when the earlier events arrive
        return False

    def where(self, partition: int, position: int) -> str:
        return f"{self.topic} partition {partition} offset {position}"

    def check_mark(self, partition: int, position: int, digest: str) -> None:
        """Nothing: a replaced log is detected by its offsets and the group's (module doc)."""

    def close(self) -> None:
        try:
            self._group.close()
            self._log_ends.close()
        finally:
            self._fetcher.close()


# ---------------------------------------------------------------- the role
