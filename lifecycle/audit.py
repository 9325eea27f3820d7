"""Audit trail: verify hash chains and versions, show a lead's history as of a time, export.

`history` and `export` check each event as they read it (its hash, its row, its link to the
lead's previous event, and each stream against its recorded head) and raise CorruptEvent
naming the first bad event: a broken chain is never presented as if it were whole. `verify`
checks everything and lists every broken lead; `verify_file` checks an export without a store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from lifecycle.domain.stages import Stage
from lifecycle.explain import explain
from lifecycle.policies import PolicyStream
from lifecycle.store.repository import LeadStore
from schemas import codec
from schemas.codec import GENESIS, CorruptEvent, EventRecord
from schemas.sealing import PERSONAL_FIELDS, DecryptionFailed


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
    #: the policy stream: how many versions, and what is wrong with it (hash, link, content)
    policy_versions: int = 0
    policy_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.policy_problems


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
    messages = _MessageCheck(store, lead_id)  # read before the events: each of them is then seen
    if lead_id is not None:
        rows: Iterable[tuple[UUID, int, bytes]] = (
            (lead_id, version, state) for version, state in store.stream(lead_id))
    else:
        rows = ((lead, version, state) for _, lead, version, state in store.iter_raw())
    report = verify_rows(messages.watch(rows), heads)
    if lead_id is None:
        report.policy_versions, report.policy_problems = PolicyStream(store).problems()
    return messages.report(report)


class _MessageCheck:
    """verify's idempotency part: each applied message's record (leadledger_inbound) names an event
    that carries that message's key as its causation, and each event with a causation has its
    record, so deleted records (a redelivery would apply the message again) are found."""

    def __init__(self, store: LeadStore, lead_id: UUID | None) -> None:
        self.store = store
        self.records = {(lead, version): (source, mid) for source, mid, lead, version
                        in store.applied_messages(lead_id)}
        self.unrecorded: dict[tuple[UUID, int], str] = {}  # (lead, version) -> causation, no record
        self.problems: list[Problem] = []

    def watch(self, rows: Iterable[tuple[UUID, int, bytes]]) -> Iterator[tuple[UUID, int, bytes]]:
        for lead, version, state in rows:
            causation = _causation(state)
            if causation is not None:
                record = self.records.pop((lead, version), None)
                if record is None:
                    self.unrecorded[(lead, version)] = causation
                elif f"{record[0]}/{record[1]}" != causation:
                    self.problems.append(Problem(lead, version, (
                        f"its idempotency record is of message {record[0]}/{record[1]}, but the event was "
                        f"caused by {causation} (the record was edited)")))
            yield lead, version, state

    def report(self, report: VerifyReport) -> VerifyReport:
        if self.unrecorded:  # recorded by a writer while verify read: read those leads' records again
            for lead in {lead for lead, _ in self.unrecorded}:
                for source, mid, _, version in self.store.applied_messages(lead):
                    if self.unrecorded.get((lead, version)) == f"{source}/{mid}":
                        del self.unrecorded[(lead, version)]
        for (lead, version), causation in self.unrecorded.items():
            self.problems.append(Problem(lead, version, (
                f"it was caused by message {causation}, whose idempotency record is missing "
                "(deleted: a redelivery of that message would be applied again)")))
        for (lead, version), (source, mid) in self.records.items():
            self.problems.append(Problem(lead, version, (
                f"the idempotency record of message {source}/{mid} says it produced this version, "
                "but no such event carries that message as its causation (the event or the record "
                "was altered)")))
        broken = {p.lead_id for p in report.problems or []}  # already named by the chain check
        extra = [p for p in self.problems if p.lead_id not in broken]
        if extra:
            report.problems = sorted([*(report.problems or []), *extra], key=lambda p: (str(p.lead_id), p.version))
        return report


def _causation(state: bytes) -> str | None:
    """A stored envelope's `causation`, read off its canonical bytes (a top-level key: an unescaped
    quote before it cannot occur inside a string); parsed in full only when it holds escapes."""
    at = state.find(b'"causation":"')
    if at < 0:
        return None
    start = at + len(b'"causation":"')
    value = state[start:state.find(b'"', start)]
    if b"\\" in value:
        with suppress(orjson.JSONDecodeError, AttributeError):
            found = orjson.loads(state).get("causation")
            return found if isinstance(found, str) else None
        return None
    return value.decode("utf-8", "replace")


def metric_order(records: Iterable[EventRecord]) -> list[EventRecord]:
    """Per-lead metric order (docs/contract.md): occurred_at, then version."""
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


def checked_records(store: LeadStore, lead_id: UUID) -> list[EventRecord]:
    """The lead's events, each checked as it is read: its hash, its row, its link to the one
    before, and the stream against the lead's recorded head (so dropped latest events show).
    Raises CorruptEvent naming the first bad event; [] for a lead never stored."""
    heads = store.heads(lead_id)  # read first: every event it vouches for is then in the stream
    records: list[EventRecord] = []
    hashes: dict[int, str] = {}
    last_version, last_hash = 0, GENESIS
    for version, state in store.stream(lead_id):
        record = codec.checked_record(lead_id, version, state)
        codec.check_link(lead_id, version, record.envelope["prevhash"], last_version, last_hash)
        last_version, last_hash = version, record.envelope["hash"]
        hashes[version] = last_hash
        records.append(record)
    head = heads.get(lead_id) or store.heads(lead_id).get(lead_id)  # (a lead stored meanwhile)
    if head is None:
        if records:
            raise codec.corrupt_event(lead_id, 1, "the lead has no recorded head: its events were inserted "
                                                  "behind leadledger's back")
        return records
    _check_head(lead_id, head, last_version, hashes.get(head[0]))
    return records


def _check_head(lead_id: UUID, head: tuple[int, str], last_version: int, hash_at_head: str | None) -> None:
    """The lead's recorded head (read before its events) is one of the events read, the same one."""
    head_version, head_hash = head
    if last_version < head_version:
        raise codec.corrupt_event(lead_id, last_version + 1, f"missing: the lead's recorded head is version "
                                                             f"{head_version} but its stream ends at {last_version} "
                                                             "(its latest events were dropped)")
    if hash_at_head != head_hash:
        raise codec.corrupt_event(lead_id, head_version, "it differs from the lead's recorded head (the chain "
                                                         "was rewritten)")


def _opened(record: EventRecord, key_lookup: Callable[[UUID], bytes | None]) -> dict[str, Any]:
    """`codec.public_envelope`, with a key or ciphertext that does not decrypt named by lead and version."""
    try:
        return codec.public_envelope(record, key_lookup)
    except DecryptionFailed as exc:
        reason = str(exc).removeprefix(f"lead {record.lead_id}: ")
        raise codec.corrupt_event(record.lead_id, record.version, f"{reason} (wrong LEADLEDGER_SECRET, or the "
                                                                  "key or ciphertext was altered)") from None
    except (ValueError, TypeError) as exc:  # not base64, not JSON inside
        raise codec.corrupt_event(record.lead_id, record.version,
                                  f"its personal data cannot be opened ({exc})") from None


def _key_lookup(store: LeadStore, cache: dict[UUID, bytes | DecryptionFailed | None]) -> Callable[[UUID], bytes | None]:
    """A lead's data key (None when erased), read once; one that does not unwrap raises when used."""

    def lookup(lead: UUID) -> bytes | None:
        if lead not in cache:
            try:
                cache[lead] = store.data_key(lead)
            except DecryptionFailed as exc:
                cache[lead] = exc
        found = cache[lead]
        if isinstance(found, DecryptionFailed):
            raise found
        return found

    return lookup


def history(
    store: LeadStore,
    lead_id: UUID,
    as_of: datetime | None = None,
    known_at: datetime | None = None,
) -> dict[str, Any] | None:
    """The history of one lead (docs/contract.md): every event (store order) and the stage at `as_of`; each
    decision of the router or an SLA clock also carries `why`, its reasons in one line. Raises CorruptEvent
    for a broken chain (`checked_records`) or personal data that does not decrypt."""
    records = checked_records(store, lead_id)
    if not records:
        return None
    visible = as_of_filter(records, as_of, known_at)
    key_lookup = _key_lookup(store, {})
    stage = stage_of(visible)
    return {
        "lead_id": str(lead_id),
        "stage": stage.value if stage else None,
        "as_of": codec.format_time(as_of) if as_of else None,
        "known_at": codec.format_time(known_at) if known_at else None,
        "events": [_explained(r, _opened(r, key_lookup)) for r in visible],
    }


def _explained(record: EventRecord, envelope: dict[str, Any]) -> dict[str, Any]:
    """A decision event's envelope with `why`, its reasons in one line (lifecycle.explain)."""
    why = explain(record.name, record.data)
    return envelope if why is None else {**envelope, "why": why}


def export_envelopes(
    store: LeadStore, decrypt: bool = False, batch: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every event in store order as its CloudEvents envelope (personal data sealed
    unless `decrypt`), each checked as it is read (hash, row, link to the lead's previous
    event; at the end each lead's stream against its recorded head). Raises CorruptEvent at
    the first bad event, after yielding the events before it."""
    heads = store.heads()  # read first: every event they vouch for is then read below
    last: dict[UUID, int] = {}
    chain: dict[UUID, str] = {}
    after = 0
    while True:
        rows = store.raw(after, batch)
        if not rows:
            break
        cache: dict[UUID, bytes | DecryptionFailed | None] = {}
        if decrypt:
            leads = {lead for _, lead, _, _ in rows}
            # one that does not unwrap: read one by one, so the lead fails at its event
            with suppress(DecryptionFailed):
                keys = store.data_keys(leads)
                cache.update({lead: keys.get(lead) for lead in leads})
        lookup = _key_lookup(store, cache)
        for position, lead, version, state in rows:
            where = f"notification {position}"
            record = codec.checked_record(lead, version, state, where)
            codec.check_link(lead, version, record.envelope["prevhash"], last.get(lead, 0), chain.get(lead, GENESIS),
                             where)
            digest = record.envelope["hash"]
            head = heads.get(lead)
            if head is not None and head[0] == version and head[1] != digest:
                _check_head(lead, head, version, digest)
            last[lead], chain[lead] = version, digest
            yield _opened(record, lookup) if decrypt else record.envelope
            after = position
    for lead, head in heads.items():
        if last.get(lead, 0) < head[0]:
            _check_head(lead, head, last.get(lead, 0), None)


def verify_file(path: Path) -> VerifyReport:
    """`verify` of an export (`leadledger export`, JSON lines, personal data sealed), without a
    store: the same checks but the recorded heads (compare the root with a published one to
    notice dropped latest events). Raises CorruptEvent for a line that is no sealed lead event."""
    return verify_rows(_export_rows(path))


def _export_rows(path: Path) -> Iterator[tuple[UUID, int, bytes]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            state = line.rstrip(b"\r\n")
            if not state.strip():
                continue
            try:
                envelope = orjson.loads(state)
                lead_id, version = UUID(envelope["subject"]), envelope["sequence"]
                data = envelope.get("data")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CorruptEvent(f"{path} line {number}: not a leadledger event ({exc})") from None
            if not isinstance(version, int):
                raise CorruptEvent(f"{path} line {number}: not a leadledger event (its sequence is {version!r})")
            if isinstance(data, dict) and "personal" not in data and any(f in data for f in PERSONAL_FIELDS):
                raise CorruptEvent(f"{path} line {number}: lead {lead_id} version {version} has its personal data "
                                   "opened (an `export --decrypt`), so its hash cannot be checked; verify an "
                                   "export made without --decrypt")
            yield lead_id, version, state
