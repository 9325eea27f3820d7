"""Audit trail: verify hash chains and versions, show a lead's history as of a time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from lifecycle.domain.stages import Stage
from lifecycle.store.repository import LeadStore
from schemas import codec
from schemas.codec import EventRecord


@dataclass(frozen=True)
class Problem:
    lead_id: UUID
    version: int
    reason: str

    def __str__(self) -> str:
        return f"lead {self.lead_id} version {self.version}: {self.reason}"


@dataclass
class VerifyReport:
    leads: int = 0
    events: int = 0
    problems: list[Problem] | None = None
    #: sha256 over every lead's (id, last version, head hash): publish it to anchor the store
    root: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_decodable(lead_id: UUID, version: int, state: bytes) -> str | None:
    try:
        codec.to_domain(codec.to_record(lead_id, version, state), None)
    except codec.CorruptEvent as exc:
        return f"cannot be decoded: {exc}"
    return None


def verify_rows(
    rows: Iterable[tuple[UUID, int, bytes]], heads: dict[UUID, tuple[int, str]] | None = None
) -> VerifyReport:
    """Check rows given in store order: per lead, versions 1..n without gaps, each
    event's hash, its link to the previous event, and that it decodes. `heads` (each
    lead's last version and hash, recorded in the same transaction as its events)
    catch a lead whose latest events were removed or whose chain was re-hashed."""
    expected: dict[UUID, tuple[int, str]] = {}  # lead -> (next version, prev hash)
    broken: dict[UUID, Problem] = {}
    events = 0
    for lead_id, version, state in rows:
        events += 1
        if lead_id in broken:
            continue
        next_version, prev = expected.get(lead_id, (1, codec.GENESIS))
        if version != next_version:
            what = "missing" if version > next_version else "out of order"
            reason = f"expected version {next_version} here, found {version} (version {next_version} {what})"
            broken[lead_id] = Problem(lead_id, min(version, next_version), reason)
            continue
        digest, problem = codec.check_row(lead_id, version, state, prev)
        problem = problem or _check_decodable(lead_id, version, state)
        if problem:
            broken[lead_id] = Problem(lead_id, version, problem)
            continue
        expected[lead_id] = (version + 1, digest)
    if heads is not None:
        for lead_id in expected.keys() - heads.keys() - broken.keys():
            broken[lead_id] = Problem(
                lead_id, 1, "the lead has no recorded head: its events were inserted behind leadledger's back"
            )
        for lead_id, (head_version, head_hash) in heads.items():
            if lead_id in broken:
                continue
            next_version, last_hash = expected.get(lead_id, (1, codec.GENESIS))
            last = next_version - 1
            if last < head_version:
                broken[lead_id] = Problem(
                    lead_id, last + 1,
                    f"events {last + 1}..{head_version} are missing: the lead's recorded head is "
                    f"version {head_version} but its stream ends at {last} (truncated)",
                )
            elif last > head_version:
                broken[lead_id] = Problem(
                    lead_id, head_version + 1,
                    f"events after version {head_version} were not written by leadledger "
                    f"(the recorded head is version {head_version}, the stream has {last})",
                )
            elif last_hash != head_hash:
                broken[lead_id] = Problem(
                    lead_id, last,
                    "the stream's last hash differs from the recorded head (the chain was rewritten)",
                )
    problems = sorted(broken.values(), key=lambda p: (str(p.lead_id), p.version))
    root = hashlib.sha256()
    for lead_id in sorted(expected, key=str):
        if lead_id not in broken:
            next_version, head = expected[lead_id]
            root.update(f"{lead_id}:{next_version - 1}:{head}\n".encode())
    return VerifyReport(leads=len(expected.keys() | broken.keys()), events=events, problems=problems,
                        root=root.hexdigest())


def verify(store: LeadStore, lead_id: UUID | None = None) -> VerifyReport:
    heads = store.heads(lead_id)
    if lead_id is not None:
        return verify_rows(((lead_id, version, state) for version, state in store.stream(lead_id)), heads)
    return verify_rows(((lead, version, state) for _, lead, version, state in store.iter_raw()), heads)


def metric_order(records: Iterable[EventRecord]) -> list[EventRecord]:
    """Per-lead metric order (SPEC §7): occurred_at, then version."""
    return sorted(records, key=lambda r: (r.occurred_at, r.version))


def as_of_filter(
    records: Iterable[EventRecord], as_of: datetime | None, known_at: datetime | None = None
) -> list[EventRecord]:
    """Only events that occurred at or before `as_of` (and were recorded by `known_at`)."""
    return [
        r
        for r in records
        if (as_of is None or r.occurred_at <= as_of) and (known_at is None or r.recorded_at <= known_at)
    ]


def stage_of(records: Iterable[EventRecord]) -> Stage | None:
    stage: Stage | None = None
    for r in metric_order(records):
        to_stage = r.data.get("to_stage")
        if to_stage:
            stage = Stage(to_stage)
    return stage


def history(
    store: LeadStore,
    lead_id: UUID,
    as_of: datetime | None = None,
    known_at: datetime | None = None,
) -> dict[str, Any] | None:
    """SPEC §8 history: every event (store order) and the stage at `as_of`."""
    records = store.records(lead_id)
    if not records:
        return None
    visible = as_of_filter(records, as_of, known_at)
    key_cache: dict[UUID, bytes | None] = {}

    def key_lookup(lead: UUID) -> bytes | None:
        if lead not in key_cache:
            key_cache[lead] = store.data_key(lead)
        return key_cache[lead]

    stage = stage_of(visible)
    return {
        "lead_id": str(lead_id),
        "stage": stage.value if stage else None,
        "as_of": codec.format_time(as_of) if as_of else None,
        "known_at": codec.format_time(known_at) if known_at else None,
        "events": [codec.public_envelope(r, key_lookup) for r in visible],
    }


def export_envelopes(
    store: LeadStore, decrypt: bool = False, batch: int = 5000
) -> Iterable[dict[str, Any]]:
    """Every event in store order as its CloudEvents envelope (personal data sealed
    unless `decrypt`)."""
    after = 0
    while True:
        rows = store.raw(after, batch)
        if not rows:
            return
        keys: dict[UUID, bytes] = {}
        if decrypt:
            keys = store.data_keys({lead for _, lead, _, _ in rows})
        lookup: Callable[[UUID], bytes | None] = keys.get
        for position, lead, version, state in rows:
            record = codec.to_record(lead, version, state)
            yield codec.public_envelope(record, lookup) if decrypt else record.envelope
            after = position
