"""The lean typed envelope projections fold: one `Fact` per stored lead event.

A `Fact` keeps only what the read models use (times as integer microseconds
since the epoch, the target stage, channel/campaign, owner, score or amount, an MQL's source, the
reason a lead was lost, disqualified, recycled or rejected), so
a replay decodes a stored row with one `orjson.loads` and no datetime objects;
the event's type and data are read by the codec (`schemas.codec.read_data`).
`from_record` builds the same Fact from a `schemas.codec.EventRecord`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from lifecycle.domain.events import EVENT_CLASSES
from lifecycle.domain.stages import STAGE_EVENTS
from schemas.codec import CorruptEvent, EventRecord, checked_body, corrupt_event, read_data

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000

#: Attribution touches: the capture and every touch.
TOUCH_EVENTS = frozenset({"LeadCaptured", "LeadTouched"})


class Fact(NamedTuple):
    """One lead event as the read models see it. Sorts in metric order (occurred, version)."""

    occurred: int  # µs since the epoch (upstream time)
    version: int
    name: str
    recorded: int  # µs since the epoch (when leadledger stored it)
    stage: str | None = None  # to_stage of stage-changing events
    channel: str | None = None  # LeadCaptured / LeadTouched
    campaign: str | None = None
    owner: str | None = None  # LeadAssigned / LeadContacted / a stage event with an owner (LeadAcceptedBySales)
    value: float | None = None  # LeadScored total, a stage event's amount (LeadWon; LeadQualifiedAsSQL: expected)
    currency: str | None = None  # the amount's ISO 4217 code (LeadWon, LeadQualifiedAsSQL)
    source: str | None = None  # LeadQualifiedAsMQL: who qualified the lead (`mql_source`)
    reason: str | None = None  # LeadLost / LeadDisqualified / LeadRecycled / LeadRejectedBySales: the reason given


# ---------------------------------------------------------------- time


def parse_us(text: str) -> int:
    """RFC 3339 (with a zone) → µs since the epoch."""
    return dt_to_us(datetime.fromisoformat(text))


_ONE_US = timedelta(microseconds=1)


def dt_to_us(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: leadledger times are timezone-aware")
    return (value - EPOCH) // _ONE_US


def us_to_dt(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


_EPOCH_NAIVE = datetime(1970, 1, 1)


def format_us(value: int | None) -> str | None:
    """µs since the epoch as `format_time` writes it (2026-03-02T09:15:00.000000Z), without building an
    aware datetime: answers format thousands of these."""
    if value is None:
        return None
    return (_EPOCH_NAIVE + timedelta(microseconds=value)).isoformat(timespec="microseconds") + "Z"


# ---------------------------------------------------------------- decoding

#: Who qualified an MQL: leadledger's scorer (actor `scorer`), a person by override, or the guard
#: on a score that came from upstream (any other MQL).
MQL_SOURCES = ("scorer", "external", "override")


def mql_source(actor: str | None, data: dict[str, Any]) -> str:
    """The source of a LeadQualifiedAsMQL event recorded by `actor` with `data` (`MQL_SOURCES`)."""
    if actor == "scorer":
        return "scorer"
    return "override" if data.get("override") else "external"


def fact_from_data(name: str, version: int, occurred: int, recorded: int, data: dict[str, Any],
                   actor: str | None = None) -> Fact:
    """The Fact of an event given its (current-version) envelope `data` and `actor`."""
    kind = _KINDS.get(name, _OTHER)
    if kind == _MQL:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, None, None, None,
                           mql_source(actor, data), None))
    if kind == _STAGE:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, None, None, None,
                           None, None))
    if kind == _STAGE_REASON:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, None, None, None,
                           None, data.get("reason")))
    if kind == _TOUCH:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), data.get("channel"),
                           data.get("campaign"), None, None, None, None, None))
    if kind == _SCORE:
        total = data.get("total")
        return _new(Fact, (occurred, version, name, recorded, None, None, None, None,
                           None if total is None else float(total), None, None, None))
    if kind == _OWNER:
        return _new(Fact, (occurred, version, name, recorded, None, None, None, data.get("owner"), None, None,
                           None, None))
    if kind == _STAGE_OWNER:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, data.get("owner"),
                           None, None, None, None))
    if kind == _STAGE_AMOUNT:
        amount = data.get("amount")
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, None,
                           None if amount is None else float(amount), data.get("currency"), None, None))
    return _new(Fact, (occurred, version, name, recorded, None, None, None, None, None, None, None, None))


def _stage_kind(name: str) -> int:
    """A stage event's Fact carries the owner, the amount or the reason when its event has one."""
    fields = {f.name for f in dataclasses.fields(EVENT_CLASSES[name])}
    if "owner" in fields:
        return _STAGE_OWNER
    if "amount" in fields:
        return _STAGE_AMOUNT
    return _STAGE_REASON if "reason" in fields else _STAGE


_OTHER, _TOUCH, _SCORE, _OWNER, _STAGE, _STAGE_OWNER, _STAGE_AMOUNT, _MQL, _STAGE_REASON = range(9)
_KINDS = {**{n: _stage_kind(n) for n in STAGE_EVENTS}, "LeadTouched": _TOUCH, "LeadCaptured": _TOUCH,
          "LeadScored": _SCORE, "LeadAssigned": _OWNER, "LeadContacted": _OWNER, "LeadQualifiedAsMQL": _MQL}
_new = tuple.__new__  # a Fact from its twelve fields, without the keyword handling of Fact(...)


def decode_state(version: int, state: bytes) -> Fact:
    """The lean path: a stored row's bytes → Fact (upcasting old `data` versions)."""
    try:
        envelope = orjson.loads(state)
        name, _, data = read_data(envelope)
        return fact_from_data(name, version, parse_us(envelope["time"]), parse_us(envelope["recordedat"]), data,
                              envelope.get("actor"))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptEvent(f"version {version}: undecodable event: {exc}") from exc


def decode_checked(lead: str, version: int, state: bytes, where: str = "") -> tuple[Fact, str, str]:
    """The lean path as the readers take it: a stored row (lead id as 32 hex digits) → (its Fact,
    its hash, its prevhash), its hash and row checked (`schemas.codec.checked_envelope`; the link
    to the lead's previous event is the caller's). CorruptEvent names the lead, version and `where`."""
    envelope, digest = checked_body(lead, version, state, where)
    try:
        name, _, data = read_data(envelope)
        fact = fact_from_data(name, version, parse_us(envelope["time"]), parse_us(envelope["recordedat"]), data,
                              envelope.get("actor"))
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt_event(lead, version, f"undecodable event: {exc}", where) from exc
    return fact, digest, envelope["prevhash"]


def from_record(record: EventRecord) -> Fact:
    """A decoded `EventRecord` → Fact (the same result as `decode_state` on its row)."""
    return fact_from_data(record.name, record.version, dt_to_us(record.occurred_at),
                          dt_to_us(record.recorded_at), record.data, record.actor)


def pack(facts: list[Fact]) -> bytes:
    """Compact bytes of a lead's facts (stored in the timeline table)."""
    return orjson.dumps([tuple(f) for f in facts])


def unpack(blob: bytes | memoryview | str) -> list[Fact]:
    raw = bytes(blob) if isinstance(blob, memoryview) else blob
    return [Fact(*item) for item in orjson.loads(raw)]
