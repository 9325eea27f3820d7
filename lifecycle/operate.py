"""`leadledger operate` over the store's notification log: run the router, the SLA clocks and the scorer and
append their decisions with the operator's position in ONE transaction.

The position is the notification id of the last lead event the operator handled; it is stored in
`leadledger_operator` under a sequence number that each commit increments, so a second operator that
read the same position fails its whole transaction (nothing of it is stored) and rebuilds. State is
derived: on start the operator folds the whole log — the events up to its position and every decision
ever recorded (its own decisions are appended after the events they answer) — then handles the events
after its position, skipping its own decisions as they come back.

A crash anywhere therefore loses nothing and repeats nothing: a decision is stored exactly when its
position is, and a restart decides again, identically, whatever had not been stored.

Where the events come from is a `RowSource`: the store's notification log (`StoreRows`, the default)
or the lead-events topic (`consumers.operate_kafka.KafkaRows`, `operate --source kafka`), which hands
the same rows in the same order and stores its per-partition offsets in the operator's state, in the
same compare-and-set transaction. Either way the state is rebuilt from the store, so both decide the
same. Several operators over one store (whatever their sources) are kept apart by that
compare-and-set: the one that commits second at a position stores nothing, rebuilds and goes on.

Catching up is kept cheap several ways. A rebuild decodes only what it folds: the rows after the position
are parsed for their actor alone (`maybe_decided`), and the lead events among them are decoded — hash
checked — when they are handled. A long catch-up or rebuild from a SQLite file store (at least
DECODER_BACKLOG rows to read) reads and decodes in a forked helper (`_Decoder`), one batch ahead of the batch being decided, so the
runner's process only decides and commits; a row the helper cannot decode is decoded again here, which
raises what `decode` raises. The leads decided on are kept as the last commit left them: a later
decision on one of them folds its history again only if the store holds another version meanwhile; in
such a catch-up, a second forked helper (`_Loader`) loads the leads a batch decided on first while the
runner decides the next batch, and the batch is committed after that (unless a policy's scorer
qualifies leads itself, which reads the stored lead while deciding). And the collector leaves the
operator's long-lived state alone while a long catch-up runs (`_Frozen`).
"""

from __future__ import annotations

import gc
import logging
import marshal
import multiprocessing
import pickle
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol
from uuid import UUID

import orjson

from lifecycle.domain.errors import LifecycleError
from lifecycle.domain.events import OPERATOR_ACTORS
from lifecycle.operations.operator import Decision, Operator, Seen, to_us
from lifecycle.policies import PolicyStream, PolicyTimeline
from lifecycle.settings import DEFAULT_MQL_THRESHOLD
from lifecycle.store.repository import Changes, LeadStore, Loaded, StoreConflict
from lifecycle.store.sqlite import LogFile, LogReader
from schemas import codec

log = logging.getLogger("leadledger.operate")

OPERATOR = "operator"
_RETRIES = 5
#: decided leads kept as committed (their next decisions skip re-folding their history, unless the store
#: moved on meanwhile): about the leads a few batches decide on
LOADED_CACHE = 20_000
#: a catch-up of at least this many rows (on a SQLite file store) reads and decodes them in a helper process
DECODER_BACKLOG = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # occurred µs → datetime as operator.from_us, inlined
_US = timedelta(microseconds=1)


@dataclass
class OperateReport:
    """What one catch-up did."""

    handled: int = 0  # lead events handled after the position
    folded: int = 0  # events folded to rebuild the state
    decisions: Counter[str] = field(default_factory=Counter)  # by kind: assign, queue, warn, breach, score, qualify
    position: int = 0
    head: int = 0
    rebuilds: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "handled": self.handled, "folded": self.folded, "position": self.position, "head": self.head,
            "lag": max(0, self.head - self.position), "decisions": dict(sorted(self.decisions.items())),
            "decided": sum(self.decisions.values()), "rebuilds": self.rebuilds, "seconds": round(self.seconds, 3),
        }


def decode(row: tuple[int, UUID, int, bytes]) -> Seen:
    """A stored row as the operator reads it (hash and row checked; old versions upcast)."""
    position, lead, version, state = row
    envelope, _ = codec.checked_body(lead, version, state, where="(operate)")
    name, _, data = codec.read_data(envelope)
    return Seen(position, lead, version, name, codec.parse_time(envelope["time"]), str(envelope["actor"]),
                str(envelope["id"]), data)


Row = tuple[int, UUID, int, bytes]  # (notification id, lead, version, stored state)


_ACTOR = b'{"actor":"'  # how a stored envelope begins (canonical JSON: sorted keys, "actor" the first)
_ACTOR_KEY = b'"actor"'
_QUOTE = ord('"')
_OPERATOR_ACTORS = frozenset(actor.encode() for actor in OPERATOR_ACTORS)


def maybe_decided(row: tuple[int, object, int, bytes]) -> bool:
    """Whether a row may be one of leadledger's own decisions; see `_maybe_decided`."""
    return _maybe_decided(row[3])


def _maybe_decided(state: bytes) -> bool:
    """Whether a row may be one of leadledger's own decisions (no hash check: the rebuild decodes — and
    checks — every row it folds, and the catch-up every row it handles, so a corrupt row is refused
    either way). False for an envelope whose actor is a string outside OPERATOR_ACTORS, which `decode`
    would read as not decided: read off its first key when the row begins as the store writes envelopes
    and names no other "actor" (no JSON parse: a rebuild looks at every row after its position), else
    from the parsed JSON; anything else is decoded in full (and refused there if it is corrupt)."""
    if state.startswith(_ACTOR):
        end = state.find(_QUOTE, 10)
        if end > 10 and b"\\" not in state[10:end] and state.find(_ACTOR_KEY, end) < 0:
            return state[10:end] in _OPERATOR_ACTORS
    try:
        envelope = orjson.loads(state)
    except orjson.JSONDecodeError:
        return True
    actor = envelope.get("actor") if isinstance(envelope, dict) else None
    return not isinstance(actor, str) or actor in OPERATOR_ACTORS


class RowSource(Protocol):
    """Where the operator reads lead events: rows in notification-id order, each once."""

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from the operator's stored state (after a rebuild; also after losing to another operator)."""

    def rows(self, position: int, limit: int) -> list[Row]:
        """Up to `limit` rows after notification id `position`, ascending; [] when caught up."""

    def checkpoint(self) -> dict[str, Any]:
        """What to store next to the position, after the rows handed so far (JSON)."""

    def close(self) -> None: ...


class StoreRows:
    """The store's notification log (`operate`, the default source)."""

    def __init__(self, store: LeadStore) -> None:
        self.store = store

    def restore(self, state: Mapping[str, Any]) -> None:
        pass

    def rows(self, position: int, limit: int) -> list[Row]:
        return self.store.raw(position, limit)

    def checkpoint(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- decoding in a helper process

#: a decoded row as the decoder process hands it over: (notification id, lead id as stored, version, event
#: name, occurred µs, actor, event id, data)
_Decoded = tuple[int, str, int, str, int, str, str, dict[str, Any]]


_FOLD_CHUNK = 20_000  # rows a rebuild reads at a time
_HEX32 = re.compile("[0-9a-f]{32}")  # a lead id as the store keeps it (UUID.hex)


def _decoded(row: tuple[int, str, int, bytes]) -> _Decoded:
    """`decode` in the decoder process, as handed over (no UUID made when the id is already its hex: the
    checks compare the same digits)."""
    position, lead, version, state = row
    envelope, _ = codec.checked_body(lead if _HEX32.fullmatch(lead) else UUID(lead), version, state,
                                     where="(operate)")
    name, _, data = codec.read_data(envelope)
    return (position, lead, version, name, to_us(codec.parse_time(envelope["time"])), str(envelope["actor"]),
            str(envelope["id"]), data)


def _decode_all(rows: list[tuple[int, str, int, bytes]], keep: Callable[[tuple[int, str, int, bytes]], bool],
                ) -> tuple[list[_Decoded], tuple[int, str, int, bytes] | None]:
    """The rows `keep` wants, decoded in order, up to the first that does not decode (handed over raw: the
    runner decodes it again itself, and so raises exactly what `decode` raises there)."""
    out: list[_Decoded] = []
    for row in rows:
        if keep(row):
            try:
                out.append(_decoded(row))
            except Exception:
                return out, row
    return out, None


def _folded_by_rebuild(position: int, row: tuple[int, str, int, bytes]) -> bool:
    return row[0] <= position or maybe_decided(row)


def _fold_chunks(log: LogReader, position: int) -> Iterator[list[tuple[int, str, int, bytes]]]:
    """The log in chunks for a rebuild: every row up to `position` (and the rest of its chunk); after it
    only the rows that may be decisions are read whole, the others by their state alone (a chunk may
    then be empty)."""
    after = 0
    while after < position:
        rows = log.after(after, _FOLD_CHUNK)
        if not rows:
            return
        after = rows[-1][0]
        yield rows
    while states := log.states_after(after, _FOLD_CHUNK):
        after = states[-1][0]
        yield log.rows_at([i for i, state in states if _maybe_decided(state)])


def _decoder_main(conn: Any, log_file: LogFile) -> None:
    """The decoder process: answer ("rows", after, limit) with the rows after `after`, decoded; and
    ("fold", position) with the rows a rebuild folds (every row up to `position`, and the decisions after
    it), in chunks, the last one flagged."""
    try:
        with log_file.open() as log:
            while (request := marshal.loads(conn.recv_bytes())) is not None:
                if request[0] == "rows":
                    decoded, failed = _decode_all(log.after(request[1], request[2]), lambda _: True)
                    conn.send_bytes(marshal.dumps(("ok", decoded, failed, True)))
                    continue
                position = request[1]
                for rows in _fold_chunks(log, position):
                    decoded, failed = _decode_all(rows, partial(_folded_by_rebuild, position))
                    conn.send_bytes(marshal.dumps(("ok", decoded, failed, failed is not None)))
                    if failed is not None:
                        break
                else:
                    conn.send_bytes(marshal.dumps(("ok", [], None, True)))
    except (EOFError, BrokenPipeError):
        pass
    except BaseException as exc:  # reported by the runner
        conn.send_bytes(marshal.dumps(("failed", f"{type(exc).__name__}: {exc}", None, True)))
    finally:
        conn.close()


class _Forked:
    """A forked helper process reading the store's log file, and our end of its pipe: the decoder's
    and the loader's common part (start, a message in, the goodbye)."""

    def __init__(self, main: Callable[[Any, LogFile], None], log_file: LogFile, name: str) -> None:
        ctx = multiprocessing.get_context("fork")
        self._name = name
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=main, args=(theirs, log_file), daemon=True, name=name)
        self._proc.start()
        theirs.close()

    def _message(self, load: Callable[[bytes], Any]) -> Any:
        """The helper's next message, decoded by `load`; its death is an error naming it."""
        try:
            return load(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the {self._name} (pid {self._proc.pid}) died") from exc

    def _finish(self) -> None:
        """Collect what is still owed, say goodbye, wait for the exit (kill it after 5 s)."""
        try:
            self._settle()
            self._conn.send_bytes(marshal.dumps(None))
        except (OSError, RuntimeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()

    def _settle(self) -> None:
        """Read the answer to a request still outstanding (none by default)."""


class _Decoder(_Forked):
    """A forked process that reads the store's log file on a connection of its own and decodes it (hash
    checked, upcast, times parsed), so the runner's process only decides: while one batch is handled,
    the next is read and decoded (one batch ahead, so memory stays bounded)."""

    def __init__(self, log_file: LogFile) -> None:
        super().__init__(_decoder_main, log_file, "operate decoder")
        self._pending: tuple[int, int] | None = None
        self._ids: dict[str, UUID] = {}

    @staticmethod
    def usable(store: LeadStore) -> LogFile | None:
        """The store's log file when a forked decoder can read it (SQLite file, fork available)."""
        if "fork" not in multiprocessing.get_all_start_methods():
            return None
        return store.log_file()

    def _recv(self) -> tuple[list[Seen], bool]:
        status, decoded, failed, last = self._message(marshal.loads)
        if status != "ok":
            raise RuntimeError(f"the operate decoder failed: {decoded}")
        ids, known, epoch, us, new = self._id, self._ids.get, _EPOCH, _US, tuple.__new__
        # tuple.__new__: the Seen as its own constructor makes it, without that Python-level call per row
        out = [new(Seen, (position, known(lead) or ids(lead), version, name, epoch + us * occurred, actor, event_id,
                          data))
               for position, lead, version, name, occurred, actor, event_id, data in decoded]
        if failed is not None:
            decode((failed[0], UUID(failed[1]), failed[2], failed[3]))  # raises what decode raises
            raise RuntimeError(f"the operate decoder refused row {failed[0]}, which decodes here")
        return out, last

    def _id(self, lead: str) -> UUID:
        found = self._ids.get(lead)
        if found is None:
            if len(self._ids) > 500_000:
                self._ids.clear()
            found = self._ids[lead] = UUID(lead)
        return found

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending = None
            self._recv()  # a speculation that was not needed

    def rows(self, after: int, limit: int) -> list[Seen]:
        """The rows after `after`, decoded; the next batch is asked for at once when this one is full."""
        if self._pending != (after, limit):
            self._drop_pending()
            self._conn.send_bytes(marshal.dumps(("rows", after, limit)))
        self._pending = None
        out, _ = self._recv()
        if len(out) == limit:
            self._conn.send_bytes(marshal.dumps(("rows", out[-1].position, limit)))
            self._pending = (out[-1].position, limit)
        return out

    def fold(self, position: int) -> Iterator[Seen]:
        """What a rebuild folds: every row up to `position`, and the rows after it that may be decisions."""
        self._drop_pending()
        self._conn.send_bytes(marshal.dumps(("fold", position)))
        while True:
            out, last = self._recv()
            yield from out
            if last:
                return

    def _settle(self) -> None:
        self._drop_pending()

    def close(self) -> None:
        self._finish()


def _loader_main(conn: Any, log_file: LogFile) -> None:
    """The loader process: answer a list of lead ids (32 hex digits) with those leads as stored now,
    folded (`LeadStore.load_many`'s fold), pickled."""
    try:
        with log_file.open() as log:
            while (request := marshal.loads(conn.recv_bytes())) is not None:
                streams = log.streams(request)
                loaded = {lead: LeadStore.fold(UUID(lead), rows) for lead, rows in streams.items()}
                conn.send_bytes(pickle.dumps(("ok", [v for v in loaded.values() if v is not None]),
                                             protocol=pickle.HIGHEST_PROTOCOL))
    except (EOFError, BrokenPipeError):
        pass
    except BaseException as exc:  # reported by the runner
        conn.send_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


class _Loader(_Forked):
    """A forked process that loads the leads a batch decided on while the runner decides the next batch
    (a first decision on a lead folds its whole history: a fifth of a catch-up's work). What it loads is
    only a head start: the commit checks every lead's version as ever, and a lead written meanwhile
    conflicts and is loaded again here."""

    def __init__(self, log_file: LogFile) -> None:
        super().__init__(_loader_main, log_file, "operate loader")
        self._asked = False

    def ask(self, lead_ids: set[UUID]) -> None:
        self.collect()
        self._conn.send_bytes(marshal.dumps([lead.hex for lead in lead_ids]))
        self._asked = True

    def collect(self) -> dict[UUID, Loaded]:
        """What the last `ask` loaded ({} when nothing was asked since)."""
        if not self._asked:
            return {}
        self._asked = False
        status, found = self._message(pickle.loads)
        if status != "ok":
            raise RuntimeError(f"the operate loader failed: {found}")
        return {loaded.lead.id: loaded for loaded in found}

    def _settle(self) -> None:
        self.collect()

    def close(self) -> None:
        self._finish()


@dataclass
class _Decided:
    """A batch handled and not yet committed."""

    rows: list[Seen]
    decisions: list[Decision]
    position: int
    handled: int


class _Frozen:
    """The cyclic collector over a long catch-up: the operator's state grows to millions of long-lived
    objects that every full collection would traverse again (a fifth of the catch-up's CPU), so what is
    alive after each batch is frozen (young objects are still collected) and thawed at the end. A
    collection first frees what a previous runner left (its queue lanes are cycles); nothing is done
    while someone else holds objects frozen."""

    def __init__(self) -> None:
        self.active = gc.isenabled() and gc.get_freeze_count() == 0
        if self.active:
            gc.collect()

    def batch(self) -> None:
        if self.active:
            gc.freeze()

    def close(self) -> None:
        if self.active:
            gc.unfreeze()
            self.active = False


class OperatorRunner:
    """One operator over one store, reading its events from `source` (default: the store's log)."""

    def __init__(self, store: LeadStore, name: str = OPERATOR, batch: int = 5000,
                 on_progress: Callable[[OperateReport], None] | None = None, *,
                 source: RowSource | None = None, mql_threshold: int = DEFAULT_MQL_THRESHOLD) -> None:
        self.store = store
        self.mql_threshold = mql_threshold  # the scorer's, when the policy's [scoring] names no threshold
        self.name = name
        self.batch = batch
        self.on_progress = on_progress
        self.source: RowSource = source or StoreRows(store)
        self.operator: Operator | None = None
        self.seq = 0
        self.position = 0
        self._policy_count = -1
        #: the leads as the runner's last commits left them (a fresh load folds the same, slower)
        self._loaded: OrderedDict[UUID, Loaded] = OrderedDict()
        self._decoder: _Decoder | None = None  # during a long catch-up from the store (run_once)
        self._frozen: _Frozen | None = None  # likewise
        self._loader: _Loader | None = None  # likewise
        #: the scorer's automatic MQL reads the lead as stored (`_head`): deciding a batch then needs the
        #: batch before it stored, so the catch-up commits each batch before it decides the next
        self._reads_store = True
        self._own_source = source is None

    def close(self) -> None:
        self._stop_decoder()
        self.source.close()

    # ---------------------------------------------------------------------------- state

    def _stored(self) -> tuple[int, dict[str, Any]]:
        found = self.store.operator_state(self.name)
        if found is None:
            return 0, {"position": 0}
        seq, state = found
        loaded: dict[str, Any] = orjson.loads(state)
        return seq, loaded

    def _saved(self) -> tuple[int, int]:
        seq, state = self._stored()
        return seq, int(state["position"])

    def rebuild(self, report: OperateReport) -> None:
        """Fold the log: every event up to the saved position, and every decision recorded."""
        self.seq, state = self._stored()
        self.position = int(state["position"])
        self._loaded.clear()
        self.source.restore(state)
        policies = PolicyStream(self.store).versions()
        self._policy_count = len(policies)
        operator = Operator(PolicyTimeline(policies), mql_threshold=self.mql_threshold, head=self._head)
        for seen in self._to_fold():
            if seen.decided or seen.position <= self.position:
                operator.fold(seen)
                report.folded += 1
                if self._frozen is not None and not report.folded % 20_000:
                    self._frozen.batch()
        operator.position = self.position
        self.operator = operator
        report.rebuilds += 1

    def _to_fold(self) -> Iterator[Seen]:
        """The rows a rebuild folds, decoded: every row up to the position, and the decisions after it (a
        row after it that is no decision is decoded, and checked, when it is handled)."""
        if self._decoder is not None:
            yield from self._decoder.fold(self.position)
            return
        for row in self.store.iter_raw(0, batch=20_000):
            if row[0] <= self.position or maybe_decided(row):
                yield decode(row)

    def _rows(self, after: int) -> list[Seen]:
        """The next batch after notification id `after` (the position, or a batch decided ahead), decoded."""
        if self._decoder is not None:
            return self._decoder.rows(after, self.batch)
        return [decode(row) for row in self.source.rows(after, self.batch)]

    def _start_decoder(self) -> None:
        """A helper process to read and decode a long catch-up (or rebuild) from the store's log file."""
        if not self._own_source or self._decoder is not None:
            return
        log_file = _Decoder.usable(self.store)
        position = self.position if self.operator is not None else 0  # a rebuild reads the whole log
        if log_file is not None and self.store.head_position() - position >= DECODER_BACKLOG:
            self._decoder = _Decoder(log_file)
            self._loader = _Loader(log_file)
            self._frozen = _Frozen()

    def _stop_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        if self._loader is not None:
            self._loader.close()
            self._loader = None
        if self._frozen is not None:
            self._frozen.close()
            self._frozen = None

    def _head(self, lead_id: UUID) -> tuple[str, int]:
        """The lead's stored stage and latest stage change (the scorer's automatic MQL asks)."""
        loaded = self.store.load(lead_id)
        if loaded is None:  # cannot be: the operator saw its capture in the store
            raise StoreConflict(f"lead {lead_id} is not in the store any more")
        return loaded.lead.stage.value, to_us(loaded.lead.last_change_at)

    def _refresh_policies(self) -> None:
        """Versions published since the last look come into force at their positions."""
        assert self.operator is not None
        policies = PolicyStream(self.store).versions()
        if len(policies) != self._policy_count:
            self.operator.policies = PolicyTimeline(policies)
            self._policy_count = len(policies)
        self._reads_store = any(_auto_qualifies(version) for version in policies)

    # ---------------------------------------------------------------------------- running

    def run_once(self, now: datetime, *, stop: Callable[[], bool] = lambda: False,
                 report: OperateReport | None = None) -> OperateReport:
        """Catch up with the log, then fire what is due before `now`."""
        started = time.perf_counter()
        report = report or OperateReport()
        self._start_decoder()
        try:
            if self.operator is None:
                self.rebuild(report)
            self._refresh_policies()
            self._catch_up(report, started, stop)
            if not stop():
                self._step([], now, report)
                self._catch_up(report, started, stop)  # over the decisions just stored: the position passes them
        finally:
            self._stop_decoder()
        report.position = self.position
        report.head = self.store.head_position()
        report.seconds = time.perf_counter() - started
        return report

    def _catch_up(self, report: OperateReport, started: float, stop: Callable[[], bool]) -> None:
        """Handle and commit batch after batch. With a loader, a batch is committed after the next one is
        decided (the loader loads its leads meanwhile); a commit that lost to another operator rebuilds
        and handles both again, one at a time."""
        ahead: _Decided | None = None
        try:
            while not stop():
                rows = self._rows(ahead.position if ahead is not None else self.position)
                if not rows:
                    break
                if self._loader is None or self._reads_store:
                    self._step(rows, None, report)
                else:
                    decided = self._decide(rows, None)
                    settled, ahead = ahead, None
                    if settled is not None and not self._settle(settled, report):
                        self._step([seen for seen in settled.rows + rows if seen.position > self.position], None,
                                   report)
                    else:
                        ahead = decided
                        # (not `- self._loaded.keys()`: that hashes every kept lead again)
                        self._loader.ask({d.lead for d in decided.decisions if d.lead not in self._loaded})
                self._progress(report, started)
        except BaseException:
            if ahead is not None:  # stored as a batch at a time would have stored it before failing
                try:
                    self._settle(ahead, report)
                except Exception:
                    log.exception("the batch decided before the failure could not be stored either")
            raise
        if ahead is not None and not self._settle(ahead, report):
            self._step([seen for seen in ahead.rows if seen.position > self.position], None, report)
            self._progress(report, started)

    def _progress(self, report: OperateReport, started: float) -> None:
        if self._frozen is not None:
            self._frozen.batch()
        if self.on_progress is not None:
            report.head = self.store.head_position()
            report.seconds = time.perf_counter() - started
            self.on_progress(report)

    def _decide(self, rows: list[Seen], now: datetime | None) -> _Decided:
        assert self.operator is not None
        decisions: list[Decision] = []
        position = self.position
        handled = 0
        handle = self.operator.handle
        for seen in rows:
            decisions += handle(seen)
            handled += seen.actor not in OPERATOR_ACTORS
        if rows:
            position = rows[-1].position
        if now is not None:
            decisions.extend(self.operator.tick(now))
        return _Decided(rows, decisions, position, handled)

    def _settle(self, decided: _Decided, report: OperateReport) -> bool:
        """Commit a decided batch with what the loader loaded for it; False when another operator stored
        first (then the runner is rebuilt from the stored position and nothing of the batch counts)."""
        assert self._loader is not None
        ready = self._loader.collect()
        if not decided.decisions and decided.position == self.position:
            return True
        try:
            self._commit(decided.decisions, decided.position, ready)
        except _Overtaken:
            log.warning("another operator stored decisions first: rebuilding from its position")
            self.operator = None
            self.rebuild(report)
            self._refresh_policies()
            return False
        report.handled += decided.handled
        report.decisions.update(d.kind for d in decided.decisions)
        self.position = decided.position
        return True

    def _step(self, rows: list[Seen], now: datetime | None, report: OperateReport) -> None:
        """Handle a batch (or fire the timers due before `now`) and commit it; on a conflict with another
        operator, rebuild and do it again from the stored position."""
        for _ in range(_RETRIES):
            decided = self._decide(rows, now)
            decisions, position, handled = decided.decisions, decided.position, decided.handled
            if not decisions and position == self.position:
                return
            try:
                self._commit(decisions, position)
            except _Overtaken:
                log.warning("another operator stored decisions first: rebuilding from its position")
                self.operator = None
                self.rebuild(report)
                self._refresh_policies()
                rows = [seen for seen in rows if seen.position > self.position]
                continue
            report.handled += handled
            report.decisions.update(d.kind for d in decisions)
            self.position = position
            return
        raise StoreConflict("the operator kept losing to other writers; try again")

    def _commit(self, decisions: list[Decision], position: int, ready: Mapping[UUID, Loaded] | None = None,
                ) -> None:
        """Apply the decisions to their leads and store them with the position (`ready`: leads loaded
        ahead, used where the runner keeps none of its own)."""
        row = (self.name, self.seq + 1, orjson.dumps({"position": position, **self.source.checkpoint()}).decode())
        for _ in range(_RETRIES):
            leads = self._load({d.lead for d in decisions}, ready or {})
            ready = None  # a retry loads again
            try:
                for decision in decisions:
                    _apply(leads[decision.lead], decision)
            except LifecycleError as exc:
                # only an automatic MQL can be refused, when the lead was moved on after the operator looked
                # (an ingest meanwhile): decide again from the store as it is now
                log.warning("a decision no longer fits its lead (%s): deciding again", exc)
                self._forget(leads)
                raise _Overtaken() from None
            try:
                # in the order of the decisions (never of a set of ids, which differ from store to store):
                # the same history stores its decisions in the same order
                order = dict.fromkeys(d.lead for d in decisions)
                self.store.commit(Changes(leads=[leads[lead] for lead in order], operator=row))
            except StoreConflict:
                self._forget(leads)  # their pending events were not stored
                if self._saved()[0] != self.seq:
                    raise _Overtaken() from None
                continue  # a lead was written meanwhile (ingest): its decision stands, on its new version
            self.seq += 1
            for lead_id in order:
                self._loaded[lead_id] = leads[lead_id]
                self._loaded.move_to_end(lead_id)
            while len(self._loaded) > LOADED_CACHE:
                self._loaded.popitem(last=False)
            return
        raise StoreConflict("the leads the operator decided on kept changing under it; try again")

    def _load(self, lead_ids: set[UUID], ready: Mapping[UUID, Loaded]) -> dict[UUID, Loaded]:
        """The leads as stored now: kept from the runner's last commits where the store holds no other
        version since (one query), else loaded ahead (`ready`; a lead written since conflicts at the
        commit), else loaded and folded now."""
        kept = {lead_id: self._loaded[lead_id] for lead_id in lead_ids if lead_id in self._loaded}
        moved = self.store.stale({lead_id: loaded.lead.version for lead_id, loaded in kept.items()}) if kept else set()
        for lead_id in moved:
            del kept[lead_id]
            del self._loaded[lead_id]
        ahead = {lead_id: ready[lead_id] for lead_id in lead_ids - kept.keys() if lead_id in ready}
        return {**kept, **ahead, **self.store.load_many(lead_ids - kept.keys() - ahead.keys())}

    def _forget(self, leads: Mapping[UUID, Loaded]) -> None:
        for lead_id in leads:
            self._loaded.pop(lead_id, None)

    def follow(self, clock: Callable[[], datetime], stop: Callable[[], bool], interval: float = 1.0,
               ) -> Iterator[OperateReport]:
        """Run until `stop()`: catch up, fire what is due, wait, again."""
        while not stop():
            yield self.run_once(clock(), stop=stop)
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.1, interval))


def _auto_qualifies(version: Any) -> bool:
    """Whether a policy version's scorer qualifies leads itself (lifecycle.policies.Published)."""
    scoring = version.policy.scoring
    return scoring is not None and bool(scoring.auto_mql)


class _Overtaken(Exception):
    """Another operator committed at this operator's position."""


def _apply(loaded: Loaded, decision: Decision) -> None:
    lead = loaded.lead
    f = decision.fields
    if decision.kind == "assign":
        lead.route_to(owner=f["owner"], rule=f["rule"], method=f["method"], policy_version=f["policy_version"],
                      candidates=f["candidates"], excluded=f["excluded"], occurred_at=decision.occurred_at,
                      causation=decision.causation)
    elif decision.kind == "queue":
        lead.queue_for_routing(rule=f["rule"], policy_version=f["policy_version"], excluded=f["excluded"],
                               occurred_at=decision.occurred_at, causation=decision.causation)
    elif decision.kind == "score":
        lead.scorer_score(fit=f["fit"], behaviour=f["behaviour"], total=f["total"], contributions=f["contributions"],
                          policy_version=f["policy_version"], occurred_at=decision.occurred_at)
    elif decision.kind == "qualify":
        lead.auto_qualify(total=f["total"], threshold=f["threshold"], policy_version=f["policy_version"],
                          occurred_at=decision.occurred_at)
    else:
        lead.sla_timer(breached=f["breached"], sla=f["sla"], started_at=f["started_at"], deadline=f["deadline"],
                       owner=f["owner"], policy_version=f["policy_version"], occurred_at=decision.occurred_at)
