"""The lean typed envelope projections fold: one `Fact` per stored lead event.

A `Fact` keeps only what the read models use (times as integer microseconds
since the epoch, the target stage, channel/campaign, owner, score or amount), so
a replay decodes a stored row with one `orjson.loads` and no datetime objects.
`from_record` builds the same Fact from a `schemas.codec.EventRecord`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from lifecycle.events import EVENT_CLASSES
from schemas.codec import TYPE_PREFIX, CorruptEvent, EventRecord, format_time, parse_time
from schemas.upcasters import upcast

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000

#: Events that move a lead between stages (LeadCaptured enters "captured").
STAGE_EVENTS = frozenset(
    {
        "LeadCaptured",
        "LeadNurtured",
        "LeadQualifiedAsMQL",
        "LeadAcceptedBySales",
        "LeadRejectedBySales",
        "LeadQualifiedAsSQL",
        "LeadWon",
        "LeadLost",
        "LeadRecycled",
        "LeadDisqualified",
    }
)
#: Attribution touches: the capture and every touch.
TOUCH_EVENTS = frozenset({"LeadCaptured", "LeadTouched"})

_CURRENT_VERSION = {name: cls.SCHEMA_VERSION for name, cls in EVENT_CLASSES.items()}


class Fact(NamedTuple):
    """One lead event as the read models see it. Sorts in metric order (occurred, version)."""

    occurred: int  # µs since the epoch (upstream time)
    version: int
    name: str
    recorded: int  # µs since the epoch (when leadledger stored it)
    stage: str | None = None  # to_stage of stage-changing events
    channel: str | None = None  # LeadCaptured / LeadTouched
    campaign: str | None = None
    owner: str | None = None  # LeadAssigned / LeadContacted / LeadAcceptedBySales
    value: float | None = None  # LeadScored total, LeadWon amount


# ---------------------------------------------------------------- time


def parse_us(text: str) -> int:
    """RFC 3339 (with a zone) → µs since the epoch."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = parse_time(text)
    return dt_to_us(parsed)


_ONE_US = timedelta(microseconds=1)


def dt_to_us(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: leadledger times are timezone-aware")
    return (value - EPOCH) // _ONE_US


def us_to_dt(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def format_us(value: int | None) -> str | None:
    return None if value is None else format_time(us_to_dt(value))


# ---------------------------------------------------------------- decoding


def fact_from_data(name: str, version: int, occurred: int, recorded: int, data: dict[str, Any]) -> Fact:
    """The Fact of an event given its (current-version) envelope `data`."""
    kind = _KINDS.get(name, _OTHER)
    if kind == _TOUCH:
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), data.get("channel"),
                           data.get("campaign"), None, None))
    if kind == _SCORE:
        total = data.get("total")
        return _new(Fact, (occurred, version, name, recorded, None, None, None, None,
                           None if total is None else float(total)))
    if kind == _OWNER:
        return _new(Fact, (occurred, version, name, recorded, None, None, None, data.get("owner"), None))
    if kind == _STAGE:
        owner = data.get("owner") if name == "LeadAcceptedBySales" else None
        amount = data.get("amount") if name == "LeadWon" else None
        return _new(Fact, (occurred, version, name, recorded, data.get("to_stage"), None, None, owner,
                           None if amount is None else float(amount)))
    return _new(Fact, (occurred, version, name, recorded, None, None, None, None, None))


_OTHER, _TOUCH, _SCORE, _OWNER, _STAGE = range(5)
_KINDS = {"LeadTouched": _TOUCH, "LeadCaptured": _TOUCH, "LeadScored": _SCORE, "LeadAssigned": _OWNER,
          "LeadContacted": _OWNER, **{n: _STAGE for n in STAGE_EVENTS if n != "LeadCaptured"}}
_new = tuple.__new__  # a Fact from its nine fields, without the keyword handling of Fact(...)

#: "leadledger.lead.<Name>.v<current>" -> name: the types that need no upcasting
_CURRENT_TYPES = {f"{TYPE_PREFIX}{name}.v{v}": name for name, v in _CURRENT_VERSION.items()}


def decode_state(version: int, state: bytes) -> Fact:
    """The lean path: a stored row's bytes → Fact (upcasting old `data` versions)."""
    try:
        envelope = orjson.loads(state)
        type_ = envelope["type"]
        name = _CURRENT_TYPES.get(type_)
        if name is None:
            name, data = _older(type_, envelope)
        else:
            data = envelope["data"]
        return fact_from_data(name, version, parse_us(envelope["time"]), parse_us(envelope["recordedat"]), data)
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptEvent(f"version {version}: undecodable event: {exc}") from exc


def _older(type_: str, envelope: dict[str, Any]) -> tuple[str, Any]:
    """A type that is not a current one: the event's name and its data upcast to the current version."""
    name, _, schema = type_[len(TYPE_PREFIX):].rpartition(".v")
    if not type_.startswith(TYPE_PREFIX) or not name:
        raise CorruptEvent(f"not a lead event type: {type_!r}")
    data = envelope["data"]
    if int(schema) != _CURRENT_VERSION.get(name):
        data = upcast(name, int(schema), data)
    return name, data


def from_record(record: EventRecord) -> Fact:
    """A decoded `EventRecord` → Fact (the same result as `decode_state` on its row)."""
    return fact_from_data(record.name, record.version, dt_to_us(record.occurred_at),
                          dt_to_us(record.recorded_at), record.data)


def pack(facts: list[Fact]) -> bytes:
    """Compact bytes of a lead's facts (stored in the timeline table)."""
    return orjson.dumps([tuple(f) for f in facts])


def unpack(blob: bytes | memoryview | str) -> list[Fact]:
    raw = bytes(blob) if isinstance(blob, memoryview) else blob
    return [Fact(*item) for item in orjson.loads(raw)]
