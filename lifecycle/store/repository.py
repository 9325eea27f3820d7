"""The lead store: load and save Lead aggregates through the recorder, chained and sealed,
and read the raw event log (audits, the relay, the projections). Nothing above it uses the recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from lifecycle.domain.events import LeadEvent
from lifecycle.domain.lead import Lead
from lifecycle.privacy import Secrets
from lifecycle.store.sqlite import (
    EVERY_LEAD,
    AppliedRow,
    EmailRow,
    InboundRow,
    LeadLog,
    LeadRange,
    LeadRecorder,
    LogFile,
    LogRow,
    MessageOutcome,
    OperatorRow,
    RawRow,
)
from schemas import codec
from schemas.codec import EventRecord


class StoreConflict(Exception):
    """Another writer stored a version first (or the same message id); reload and retry."""


@dataclass
class Loaded:
    """A lead as loaded from the store, with the hash of its last stored event."""

    lead: Lead
    head: str = codec.GENESIS


@dataclass
class Changes:
    """One transaction's worth of writes."""

    leads: list[Loaded] = field(default_factory=list)
    new_keys: dict[UUID, tuple[bytes, bytes]] = field(default_factory=dict)  # data key, wrapped
    inbound: list[InboundRow] = field(default_factory=list)  # every keyed message's outcome
    erase: list[UUID] = field(default_factory=list)
    emails: list[EmailRow] = field(default_factory=list)  # e-mail index rows of new leads
    unindex: list[EmailRow] = field(default_factory=list)  # index rows naming an erased lead
    #: stored leads that may have events to seal (a re-capture's statement): their keys are read
    sealing: set[UUID] = field(default_factory=set)
    #: the operator's new position, written with its decisions (a conflict if another got there first)
    operator: OperatorRow | None = None

    def __bool__(self) -> bool:
        return bool(self.leads or self.inbound or self.erase or self.emails or self.unindex or self.operator)


class LeadStore:
    """Aggregates in, aggregates out; the recorder below is SQLite or PostgreSQL."""

    def __init__(self, recorder: LeadRecorder, secrets: Secrets, legacy_ids: bool = False) -> None:
        self.recorder = recorder
        self.secrets = secrets
        #: the store holds leads whose id is an HMAC of their e-mail (written before the e-mail
        #: index): an e-mail the index does not know is also looked up by that id
        self.legacy_ids = legacy_ids

    # ---- reading --------------------------------------------------------------

    def stream(self, lead_id: UUID) -> list[tuple[int, bytes]]:
        """The lead's stored events as (version, state), in version order."""
        return [(s.originator_version, s.state) for s in self.recorder.select_events(lead_id)]

    def records(self, lead_id: UUID) -> list[EventRecord]:
        return [codec.to_record(lead_id, version, state) for version, state in self.stream(lead_id)]

    def load(self, lead_id: UUID) -> Loaded | None:
        """The lead's current state, or None if it was never captured."""
        return self.fold(lead_id, self.stream(lead_id))

    def load_many(self, lead_ids: Iterable[UUID]) -> dict[UUID, Loaded]:
        """Many leads in one query; leads never captured are absent."""
        streams = self.recorder.select_streams(lead_ids)
        loaded = {lead_id: self.fold(lead_id, rows) for lead_id, rows in streams.items()}
        return {k: v for k, v in loaded.items() if v is not None}

    @staticmethod
    def fold(lead_id: UUID, rows: list[tuple[int, bytes]]) -> Loaded | None:
        """A lead from its stored events (version, state) in version order; None without any."""
        lead: Lead | None = None
        head = codec.GENESIS
        for version, state in rows:
            record = codec.to_record(lead_id, version, state)
            lead = codec.to_domain(record, None).mutate(lead)
            head = record.envelope["hash"]
        return None if lead is None else Loaded(lead, head)

    def data_key(self, lead_id: UUID) -> bytes | None:
        wrapped = self.recorder.wrapped_keys([lead_id]).get(lead_id)
        return None if wrapped is None else self.secrets.unwrap(lead_id, wrapped)

    def data_keys(self, lead_ids: Iterable[UUID]) -> dict[UUID, bytes]:
        wrapped = self.recorder.wrapped_keys(lead_ids)
        return {lead: self.secrets.unwrap(lead, w) for lead, w in wrapped.items()}

    def seen(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return self.recorder.seen_messages(keys)

    def outcomes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MessageOutcome]:
        """What became of those of these messages that were recorded before."""
        return self.recorder.message_outcomes(keys)

    def applied_messages(self, lead_id: UUID | None = None) -> list[AppliedRow]:
        return self.recorder.applied_messages(lead_id)

    def lookup_emails(self, keys: Iterable[str]) -> dict[str, UUID]:
        """The lead indexed under each e-mail key (`Secrets.email_key`), where there is one."""
        return self.recorder.lookup_emails(keys)

    def raw(self, after: int = 0, limit: int = 5000) -> list[RawRow]:
        """Stored rows in notification order, after the given notification id."""
        return self.recorder.select_raw(after, limit)

    def iter_raw(self, after: int = 0, batch: int = 5000) -> Iterator[RawRow]:
        while True:
            rows = self.recorder.select_raw(after, batch)
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def head_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def lead_ids(self) -> list[UUID]:
        return self.recorder.lead_ids()

    def heads(self, lead_id: UUID | None = None) -> dict[UUID, tuple[int, str]]:
        """Each lead's (or one lead's) last version and hash, as recorded with its events."""
        return self.recorder.heads(lead_id)

    def relay_position(self, name: str) -> int:
        """The notification id the relay `name` has published up to (0: nothing yet)."""
        return self.recorder.relay_position(name)

    def set_relay_position(self, name: str, position: int) -> None:
        self.recorder.set_relay_position(name, position)

    def operator_state(self, name: str) -> tuple[int, str] | None:
        """The operator `name`'s latest (sequence number, state as JSON), None before its first commit."""
        return self.recorder.operator_state(name)

    # ---- the policy stream ------------------------------------------------------

    def policy_bodies(self) -> list[bytes]:
        """Every published policy version's stored envelope, in version order."""
        return self.recorder.policy_bodies()

    def insert_policy(self, version: int, body: Callable[[int], bytes]) -> bytes:
        """Record policy `version` (`body` builds its envelope from the log position it follows).
        Raises StoreConflict when that version was published meanwhile."""
        try:
            return self.recorder.insert_policy(version, body)
        except IntegrityError as exc:
            raise StoreConflict(str(exc)) from exc

    # ---- the log as the projections read it (lead ids as 32 hex digits) ---------------

    def log(self, after: int = 0, limit: int = 5000) -> list[LogRow]:
        """Stored rows in notification order, after the given notification id."""
        return self.recorder.select_log(after, limit)

    def log_file(self) -> LogFile | None:
        """The log's SQLite file, which other processes (forked ones too) may open; None when
        only this store's connections can read it (PostgreSQL, SQLite in memory)."""
        return self.recorder.log_file()

    def lead_log(self) -> LeadLog | None:
        """The log as any process (a forked one too) may read whole leads of on a connection of
        its own (a SQLite file, a PostgreSQL table); None for SQLite in memory."""
        return self.recorder.lead_log()

    def scan(self, head: int, leads: LeadRange = EVERY_LEAD, batch: int = 20_000) -> Iterator[list[LogRow]]:
        """Batches of the rows at or before `head` whose lead id is in `leads`, in notification
        order. A log file is read on a connection of its own, so a forked process may scan it."""
        log_file = self.log_file()
        if log_file is not None:
            with log_file.open() as reader:
                yield from reader.scan(head, leads, batch)
            return
        lo, hi = leads
        after = 0
        while after < head:
            rows = self.log(after, batch)
            if not rows:
                return
            yield [row for row in rows
                   if row[0] <= head and (lo is None or row[1] >= lo) and (hi is None or row[1] < hi)]
            after = rows[-1][0]

    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` leads' first events (notification id, lead id) after notification id
        `after` and at or before `head`, in notification order: the leads in order of appearance."""
        return self.recorder.select_firsts(head, after, limit)

    def leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        """Every row of the leads `lead_ids` at or before `head`, in notification order."""
        return self.recorder.select_leads_log(lead_ids, head)

    def prepare_lead_reads(self) -> None:
        """Before reading the whole store a chunk of leads at a time (a replay): PostgreSQL gets
        the planner statistics those reads need."""
        self.recorder.prepare_lead_reads()

    def count_log(self, head: int) -> tuple[int, int]:
        """(rows, leads' first events) at or before `head`."""
        return self.recorder.count_log(head)

    # ---- writing --------------------------------------------------------------

    def commit(self, changes: Changes) -> int:
        """Write every pending event of the changed leads, and the side rows, atomically.

        Raises StoreConflict if another writer got there first; then nothing was
        written and every lead in `changes` must be reloaded.
        """
        keys = {lead: key for lead, (key, _) in changes.new_keys.items()}
        stated = {loaded.lead.id: loaded.lead.pending_events for loaded in changes.leads
                  if loaded.lead.id in changes.sealing and loaded.lead.id not in keys}
        sealing = {lead for lead, events in stated.items()
                   if any(codec.needs_data_key(cast("LeadEvent", e)) for e in events)}
        if sealing:  # a re-capture's statement about the person is sealed with the lead's own key
            found = self.data_keys(sealing)
            if sealing - found.keys():  # erased since it was loaded: decide again on fresh state
                raise StoreConflict(f"the data key of lead {min(sealing - found.keys())} is gone (erased)")
            keys.update(found)
        stored = []
        heads: list[tuple[Loaded, str]] = []
        for loaded in changes.leads:
            pending = cast("list[LeadEvent]", loaded.lead.collect_events())
            if not pending:
                continue
            key = keys.get(loaded.lead.id)
            head = loaded.head
            for event in pending:
                row, head = codec.encode(event, head, key)
                stored.append(row)
            heads.append((loaded, head))
        if not stored and not changes.erase and not changes.inbound and changes.operator is None:
            return 0
        try:
            self.recorder.insert_events(
                stored,
                lead_keys=[(lead, wrapped) for lead, (_, wrapped) in changes.new_keys.items()],
                inbound=changes.inbound,
                erase=changes.erase,
                heads=[(loaded.lead.id, loaded.lead.version, head) for loaded, head in heads],
                emails=changes.emails,
                unindex=changes.unindex,
                operator=changes.operator,
            )
        except IntegrityError as exc:
            raise StoreConflict(str(exc)) from exc
        for loaded, head in heads:
            loaded.head = head
        return len(stored)

    def finish_erasure(self, lead_ids: list[UUID]) -> None:
        """Make sure erased keys are gone for good: delete any left, then scrub the files.

        Raises ScrubIncomplete (the erasure itself stands) if the database could not be
        scrubbed now; calling this again later completes it."""
        self.recorder.delete_keys(lead_ids)
        self.recorder.scrub_after_erase()

    def stale(self, versions: dict[UUID, int]) -> set[UUID]:
        """Which of these leads have a stored version other than the one given."""
        stored = self.recorder.max_versions(versions)
        return {lead for lead, version in versions.items() if stored.get(lead) != version}

    def close(self) -> None:
        self.recorder.close()
