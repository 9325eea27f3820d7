"""The lead store: load and save Lead aggregates through the recorder, chained and sealed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from lifecycle.events import LeadEvent
from lifecycle.lead import Lead
from lifecycle.privacy import Secrets
from lifecycle.recorders import InboundRow, LeadRecorder, RawRow
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
    inbound: list[InboundRow] = field(default_factory=list)
    erase: list[UUID] = field(default_factory=list)


class LeadStore:
    """Aggregates in, aggregates out; the recorder below is SQLite or PostgreSQL."""

    def __init__(self, recorder: LeadRecorder, secrets: Secrets) -> None:
        self.recorder = recorder
        self.secrets = secrets

    # ---- reading --------------------------------------------------------------

    def records(self, lead_id: UUID) -> list[EventRecord]:
        return [
            codec.to_record(lead_id, s.originator_version, s.state)
            for s in self.recorder.select_events(lead_id)
        ]

    def load(self, lead_id: UUID) -> Loaded | None:
        """The lead's current state, or None if it was never captured."""
        stored = self.recorder.select_events(lead_id)
        return self._fold(lead_id, [(s.originator_version, s.state) for s in stored])

    def load_many(self, lead_ids: Iterable[UUID]) -> dict[UUID, Loaded]:
        """Many leads in one query; leads never captured are absent."""
        streams = self.recorder.select_streams(lead_ids)
        loaded = {lead_id: self._fold(lead_id, rows) for lead_id, rows in streams.items()}
        return {k: v for k, v in loaded.items() if v is not None}

    @staticmethod
    def _fold(lead_id: UUID, rows: list[tuple[int, bytes]]) -> Loaded | None:
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

    # ---- writing --------------------------------------------------------------

    def commit(self, changes: Changes) -> int:
        """Write every pending event of the changed leads, and the side rows, atomically.

        Raises StoreConflict if another writer got there first; then nothing was
        written and every lead in `changes` must be reloaded.
        """
        stored = []
        heads: list[tuple[Loaded, str]] = []
        for loaded in changes.leads:
            pending = cast("list[LeadEvent]", loaded.lead.collect_events())
            if not pending:
                continue
            lead_id = loaded.lead.id
            key = changes.new_keys.get(lead_id, (None, b""))[0]
            head = loaded.head
            for event in pending:
                row, head = codec.encode(event, head, key)
                stored.append(row)
            heads.append((loaded, head))
        if not stored and not changes.erase:
            return 0
        try:
            self.recorder.insert_events(
                stored,
                lead_keys=[(lead, wrapped) for lead, (_, wrapped) in changes.new_keys.items()],
                inbound=changes.inbound,
                erase=changes.erase,
                heads=[(loaded.lead.id, loaded.lead.version, head) for loaded, head in heads],
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
