"""The one mapper between lead events and bytes: CloudEvents envelope, hash chain, sealing.

A stored event's state is the canonical JSON (orjson, sorted keys) of its
CloudEvents 1.0 envelope. `hash` is the SHA-256 of the envelope without it, and
the envelope includes `prevhash`, so every event's hash covers its content and
its predecessor's hash. Names, e-mails, phones and company names travel sealed (AES-GCM
with the lead's key) in `data.personal` (a capture, and a re-capture touch); the hash covers the sealed form, so erasing the
key never breaks the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from lifecycle.domain.events import EVENT_CLASSES, LeadCaptured, LeadEvent
from lifecycle.domain.stages import Stage
from schemas.sealing import ERASED, PERSONAL_FIELDS, seal, unseal
from schemas.upcasters import upcast

GENESIS = "0" * 64
TYPE_PREFIX = "leadledger.lead."
SOURCE = "leadledger"
LEAD_TOPIC = "lifecycle.domain.lead:Lead"

_BASE_FIELDS = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "originator_topic",
        "event_id",
        "occurred_at",
        "actor",
        "causation",
    }
)
_SORTED = orjson.OPT_SORT_KEYS


class CorruptEvent(ValueError):
    """A stored event cannot be decoded or does not match its row."""


class EventRecord(NamedTuple):
    """A decoded stored event, the typed envelope projections and audits read."""

    lead_id: UUID
    version: int
    name: str  # e.g. "LeadCaptured"
    schema_version: int
    event_id: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    data: dict[str, Any]
    envelope: dict[str, Any]


def event_type(name: str, version: int) -> str:
    return f"{TYPE_PREFIX}{name}.v{version}"


def parse_event_type(type_: str) -> tuple[str, int]:
    """(event name, schema version) of a `type` such as leadledger.lead.LeadWon.v1."""
    if not isinstance(type_, str) or not type_.startswith(TYPE_PREFIX):
        raise CorruptEvent(f"not a lead event type: {type_!r}")
    name, _, ver = type_[len(TYPE_PREFIX) :].rpartition(".v")
    if not name or not ver.isdigit():
        raise CorruptEvent(f"malformed lead event type: {type_!r}")
    return name, int(ver)


def format_time(value: datetime) -> str:
    """RFC 3339, UTC, microseconds: 2026-03-02T09:15:00.000000Z."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: leadledger times are timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {value!r} is out of range") from None


#: the header of a lead-events record carrying the event's notification id (decimal ASCII): the
#: operator merges the partitions back into store order by it (consumers/operate_kafka.py)
POSITION_HEADER = "ll_position"


def kafka_headers(state: bytes, version: int, position: int | None = None) -> list[tuple[str, bytes]]:
    """The CloudEvents headers a stored event carries on Kafka (ce_type, ce_sequence, ce_id),
    read from its stored envelope bytes (which travel unchanged as the record's value), and, given
    its notification id, `ll_position` (POSITION_HEADER)."""
    try:
        envelope = orjson.loads(state)
        headers = [("ce_type", envelope["type"].encode()), ("ce_sequence", str(version).encode()),
                   ("ce_id", envelope["id"].encode())]
    except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise CorruptEvent(f"version {version}: undecodable event: {exc}") from exc
    if position is not None:
        headers.append((POSITION_HEADER, str(position).encode()))
    return headers


def subject_and_sequence(state: bytes) -> tuple[str, int]:
    """(lead id as 32 lower-case hex digits, version) stated by a stored envelope."""
    try:
        envelope = orjson.loads(state)
        return str(envelope["subject"]).replace("-", "").lower(), int(envelope["sequence"])
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptEvent(f"undecodable event: {exc}") from exc


def canonical(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj, option=_SORTED)


def content_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


_FIELD_CACHE: dict[type, tuple[str, ...]] = {}


def _payload_fields(cls: type) -> tuple[str, ...]:
    names = _FIELD_CACHE.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
        _FIELD_CACHE[cls] = names
    return names


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    return value.value if isinstance(value, Enum) else value


#: Payload fields that are instants (RFC 3339 on the wire, like `time`)
TIME_FIELDS = frozenset({"started_at", "deadline"})


_PERSONAL_CACHE: dict[type, tuple[str, ...]] = {}


def personal_fields(cls: type) -> tuple[str, ...]:
    """The personal fields an event class carries (sealed together in `data.personal`)."""
    names = _PERSONAL_CACHE.get(cls)
    if names is None:
        payload = _payload_fields(cls)
        names = tuple(f for f in PERSONAL_FIELDS if f in payload)
        _PERSONAL_CACHE[cls] = names
    return names


def _personal_of(name: str) -> tuple[str, ...]:
    cls = EVENT_CLASSES.get(name)
    return personal_fields(cls) if cls is not None else ()


def needs_data_key(event: LeadEvent) -> bool:
    """Whether encoding the event seals something (then `encode` needs the lead's data key)."""
    return any(getattr(event, f) is not None for f in personal_fields(type(event)))


def event_data(event: LeadEvent, data_key: bytes | None) -> dict[str, Any]:
    """The envelope `data` of a domain event (personal fields sealed)."""
    data = {name: _wire(getattr(event, name)) for name in _payload_fields(type(event))}
    if isinstance(event, LeadCaptured):
        data["from_stage"] = None
        data["to_stage"] = Stage.CAPTURED.value
    sealed_fields = personal_fields(type(event))
    if sealed_fields:
        personal = {f: data.pop(f) for f in sealed_fields}
        if any(v is not None for v in personal.values()):
            if data_key is None:
                raise ValueError(f"lead {event.originator_id}: personal data needs a data key")
            data["personal"] = seal(event.originator_id, data_key, canonical(personal))
        else:
            data["personal"] = None
    return data


def encode(event: LeadEvent, prev_hash: str, data_key: bytes | None) -> tuple[StoredEvent, str]:
    """A stored event for the recorder, and its hash (the next event's prev)."""
    name = type(event).__name__
    type_ = event_type(name, event.SCHEMA_VERSION)
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event.event_id),
        "source": SOURCE,
        "type": type_,
        "subject": str(event.originator_id),
        "time": format_time(event.occurred_at),
        "sequence": event.originator_version,
        "datacontenttype": "application/json",
        "dataschema": f"schemas/events/{name}.v{event.SCHEMA_VERSION}.json",
        "recordedat": format_time(event.timestamp),
        "actor": event.actor,
        "prevhash": prev_hash,
        "data": event_data(event, data_key),
    }
    if event.causation is not None:
        body["causation"] = event.causation
    digest = content_hash(body)
    body["hash"] = digest
    stored = StoredEvent(
        originator_id=event.originator_id,
        originator_version=event.originator_version,
        topic=type_,
        state=canonical(body),
    )
    return stored, digest


def load_envelope(state: bytes) -> dict[str, Any]:
    try:
        envelope = orjson.loads(state)
    except orjson.JSONDecodeError as exc:
        raise CorruptEvent(f"stored state is not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise CorruptEvent("stored state is not a JSON object")
    return envelope


#: The type of each event's current version -> (name, version): read with no parsing or upcasting.
_CURRENT_TYPES: dict[str, tuple[str, int]] = {
    event_type(name, cls.SCHEMA_VERSION): (name, cls.SCHEMA_VERSION) for name, cls in EVENT_CLASSES.items()
}


def read_data(envelope: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """A loaded envelope's event name, the schema version it states and its `data` as the current
    version reads it (upcast when older). Raises KeyError, TypeError or ValueError (CorruptEvent
    among them) when the envelope says no such thing; the callers wrap them with where it was."""
    current = _CURRENT_TYPES.get(envelope["type"])
    if current is not None:
        return current[0], current[1], envelope["data"]
    name, version = parse_event_type(envelope["type"])
    return name, version, upcast(name, version, envelope["data"])


def to_record(lead_id: UUID, version: int, state: bytes) -> EventRecord:
    """Decode a stored row into a typed envelope (upcast to the current version)."""
    envelope = load_envelope(state)
    try:
        name, schema_version, data = read_data(envelope)
        return EventRecord(
            lead_id=lead_id,
            version=version,
            name=name,
            schema_version=schema_version,
            event_id=envelope["id"],
            occurred_at=parse_time(envelope["time"]),
            recorded_at=parse_time(envelope["recordedat"]),
            actor=envelope["actor"],
            data=data,
            envelope=envelope,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptEvent(f"lead {lead_id} version {version}: undecodable event: {exc}") from exc


def open_personal(record: EventRecord, data_key: bytes | None) -> dict[str, Any]:
    """`data` with personal fields in clear, or marked erased when the key is gone.

    A LeadCaptured v1 kept `company` in clear beside the sealed e-mail, name and phone; it
    reads the same way (and as erased once the key is gone)."""
    fields = _personal_of(record.name)
    data = dict(record.data)
    sealed = data.pop("personal", None)
    if sealed is None:
        for f in fields:
            data.setdefault(f, None)
        return data
    if data_key is None:
        data.update({f: ERASED for f in fields})
        return data
    data.update(orjson.loads(unseal(record.lead_id, data_key, sealed)))
    for f in fields:
        data.setdefault(f, None)
    return data


def to_domain(record: EventRecord, data_key: bytes | None) -> LeadEvent:
    """Rebuild the domain event (personal fields only if the key is given)."""
    cls = EVENT_CLASSES.get(record.name)
    if cls is None:
        raise CorruptEvent(f"lead {record.lead_id} version {record.version}: unknown {record.name}")
    sealed = personal_fields(cls)
    data = open_personal(record, data_key) if sealed else record.data
    if sealed and data_key is None:
        data = {k: (None if k in sealed and v == ERASED else v) for k, v in data.items()}
    kwargs: dict[str, Any] = {}
    for name in _payload_fields(cls):
        value = data.get(name)
        if name in ("from_stage", "to_stage") and value is not None:
            value = Stage(value)
        elif name in TIME_FIELDS and value is not None:
            value = parse_time(value)
        kwargs[name] = value
    if cls is LeadCaptured:
        kwargs["originator_topic"] = LEAD_TOPIC
    try:
        factory: Any = cls  # the library's metaclass makes the dataclass; mypy cannot see its fields
        return factory(  # type: ignore[no-any-return]
            originator_id=record.lead_id,
            originator_version=record.version,
            timestamp=record.recorded_at,
            event_id=UUID(record.event_id),
            occurred_at=record.occurred_at,
            actor=record.actor,
            causation=record.envelope.get("causation"),
            **kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise CorruptEvent(f"lead {record.lead_id} version {record.version}: {exc}") from exc


def public_envelope(record: EventRecord, key_lookup: Callable[[UUID], bytes | None]) -> dict[str, Any]:
    """The CloudEvents envelope as users see it: personal data opened or marked erased."""
    envelope = dict(record.envelope)
    if _personal_of(record.name):
        envelope["data"] = open_personal(record, key_lookup(record.lead_id))
    return envelope


def check_row(lead_id: UUID, version: int, state: bytes, expected_prev: str) -> tuple[str, str | None]:
    """Check one stored event against its row and the chain.

    Returns (its hash, None) when sound, else (best-effort hash, problem).
    """
    try:
        envelope = load_envelope(state)
    except CorruptEvent as exc:
        return expected_prev, str(exc)
    stated = envelope.pop("hash", None)
    if not isinstance(stated, str):
        return expected_prev, "the event has no hash"
    body_bytes = canonical(envelope)
    envelope["hash"] = stated
    if canonical(envelope) != bytes(state):
        return stated, "the stored bytes are not the canonical form of their content (edited)"
    actual = hashlib.sha256(body_bytes).hexdigest()
    if actual != stated:
        return stated, "its content does not match its hash (edited)"
    if envelope.get("subject") != str(lead_id):
        return stated, f"it names lead {envelope.get('subject')} but is stored under {lead_id}"
    if envelope.get("sequence") != version:
        return stated, f"it says version {envelope.get('sequence')} but is stored as {version} (reordered)"
    if envelope.get("prevhash") != expected_prev:
        return stated, "its previous-hash link does not match the event before it (dropped, inserted or reordered)"
    return stated, None


# ---------------------------------------------------------------- checked reads
#
# Every reader of stored events (history, export, the replay, the runner's sources, the relay,
# the Kafka source) checks each event as it reads it: `checked_envelope` (its own hash and row),
# then `check_link` against the lead's previous event, so a broken chain is never presented as
# if it were whole. `verify` (lifecycle.audit) is the exhaustive audit of the same properties.


def lead_text(lead: UUID | str) -> str:
    """A lead id as users see it (the canonical UUID text), from a UUID or 32 hex digits."""
    if isinstance(lead, UUID):
        return str(lead)
    try:
        return str(UUID(lead))
    except ValueError:
        return lead


def corrupt_event(lead: UUID | str, version: int, reason: str, where: str = "") -> CorruptEvent:
    """The error a reader raises: `lead L version V (where): reason`."""
    return CorruptEvent(f"lead {lead_text(lead)} version {version}{f' ({where})' if where else ''}: {reason}")


def checked_envelope(lead: UUID | str, version: int, state: bytes, where: str = "") -> dict[str, Any]:
    """A stored event's envelope, checked: it is a JSON object, its `hash` is the SHA-256 of the
    rest of it, and it names the lead (a UUID or 32 hex digits) and version of its row; its
    `prevhash` is a string, for the caller's `check_link`. Raises CorruptEvent naming the lead,
    the version and `where` (e.g. "notification 17"). (`hash` comes last in the dict; the
    canonical order is `checked_record`'s.)"""
    envelope, stated = checked_body(lead, version, state, where)
    envelope["hash"] = stated
    return envelope


def checked_body(lead: UUID | str, version: int, state: bytes, where: str = "") -> tuple[dict[str, Any], str]:
    """`checked_envelope` without its `hash`, and the hash (the readers' hot path)."""
    try:
        envelope = orjson.loads(state)
    except orjson.JSONDecodeError as exc:
        raise corrupt_event(lead, version, f"the stored event is not JSON ({exc})", where) from None
    if not isinstance(envelope, dict):
        raise corrupt_event(lead, version, "the stored event is not a JSON object", where)
    stated = envelope.pop("hash", None)
    if not isinstance(stated, str):
        raise corrupt_event(lead, version, "the event has no hash", where)
    # stored bytes are canonical, so the parsed keys are already sorted: serialized as they come
    # first (cheaper), sorted only when that does not match
    if (hashlib.sha256(orjson.dumps(envelope)).hexdigest() != stated
            and hashlib.sha256(canonical(envelope)).hexdigest() != stated):
        raise corrupt_event(lead, version, "its content does not match its hash (edited)", where)
    subject = envelope.get("subject")
    expected = lead.hex if isinstance(lead, UUID) else lead if len(lead) == 32 else lead.replace("-", "").lower()
    if not isinstance(subject, str) or subject.replace("-", "") != expected:
        raise corrupt_event(lead, version, f"it names lead {subject} but is stored under another (moved)", where)
    sequence = envelope.get("sequence")
    if sequence != version or type(sequence) is not int:
        raise corrupt_event(lead, version, f"it says version {sequence} but is stored as {version} (reordered)",
                            where)
    if not isinstance(envelope.get("prevhash"), str):
        raise corrupt_event(lead, version, "the event has no previous-hash link", where)
    return envelope, stated


def check_link(lead: UUID | str, version: int, prev: str, last_version: int, last_hash: str,
               where: str = "") -> None:
    """That an event follows its lead's previous one, `last_version` with hash `last_hash`
    (0 and GENESIS before the first): version `last_version + 1`, `prev` = `last_hash`."""
    if version == last_version + 1 and prev == last_hash:
        return
    if version > last_version + 1:
        raise corrupt_event(lead, last_version + 1, f"missing: the lead's events go from version {last_version} "
                                                    f"to {version} (dropped)", where)
    if version <= last_version:
        raise corrupt_event(lead, version, f"out of order: it comes after version {last_version}", where)
    if last_version == 0:
        raise corrupt_event(lead, version, "it is the lead's first event but links to an event before it "
                                           "(inserted)", where)
    raise corrupt_event(lead, version, f"its previous-hash link does not match version {last_version} (an "
                                       "event before it was edited and re-hashed, dropped or inserted)", where)


def checked_record(lead_id: UUID, version: int, state: bytes, where: str = "") -> EventRecord:
    """`to_record` of a row whose hash and row are checked (`checked_envelope`); the link to the
    lead's previous event is the caller's (`check_link` with `record.envelope["prevhash"]`)."""
    body, stated = checked_body(lead_id, version, state, where)
    envelope = dict(sorted([*body.items(), ("hash", stated)]))  # the canonical order, as stored
    try:
        name, schema_version, data = read_data(envelope)
        return EventRecord(lead_id=lead_id, version=version, name=name, schema_version=schema_version,
                           event_id=envelope["id"], occurred_at=parse_time(envelope["time"]),
                           recorded_at=parse_time(envelope["recordedat"]), actor=envelope["actor"], data=data,
                           envelope=envelope)
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt_event(lead_id, version, f"undecodable event: {exc}", where) from exc
