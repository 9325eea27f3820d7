"""Generate `schemas/events/<Event>.v<N>.json`: the JSON Schema of each stored lead event envelope.

Run `python -m schemas.generate_event_schemas` after changing an event class, the
codec or the stage table (`--check` only reports stale files). A unit test fails
while the files on disk differ from what this module builds. Only each event's
current version is generated: once an event moves to v2, its v1 file stays on
disk untouched, because stored v1 events live forever (see schemas/upcasters.py).
A schema's description is its event class's docstring.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lifecycle.domain.events import EVENT_CLASSES, LeadCaptured, LeadEvent, StageChanged
from lifecycle.domain.stages import BANT_FIELDS, RULE_OF_EVENT, Stage
from schemas.codec import GENESIS, SOURCE, event_type, personal_fields

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://leadledger.dev/schemas/"
EVENTS_DIR = Path(__file__).resolve().parent / "events"

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HASH_PATTERN = "^[0-9a-f]{64}$"
#: What `codec.format_time` writes: RFC 3339, UTC, exactly six fractional digits, `Z`.
TIME_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$"
#: Text the domain has cleaned (`lead._clean`): non-empty, no leading or trailing whitespace.
TRIMMED_PATTERN = "^\\S(?:[\\s\\S]*\\S)?$"
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: AES-GCM output is at least nonce (12 bytes) + tag (16 bytes): 40 base64 characters.
SEALED_MIN_LENGTH = 40


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "pattern": TRIMMED_PATTERN, "description": description}


def _percent(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": 100, "description": description}


#: Value constraints of each payload field, by field name. Nullability is not
#: stated here: it comes from the event class's type hint (`X | None`).
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "channel": _text("source channel, e.g. webinar, paid_search"),
    "campaign": _text("campaign within the channel"),
    "company": _text("the lead's company (personal data: sealed in `personal` since LeadCaptured v2)"),
    "consent": {"type": "boolean", "description": "marketing consent stated by the (re-)capture; null: not asked"},
    "kind": _text("kind of engagement, e.g. page_view; `recapture` for a known person's new capture"),
    "owner": _text("the sales owner"),
    "rule": _text("the routing rule that chose the owner"),
    "reason": _text("why, in the actor's words"),
    "purpose": _text("what the consent covers, e.g. newsletter"),
    "score": _percent("the lead's latest score total when it qualified; null: never scored (override)"),
    "override": {"type": "boolean", "description": "qualified by override (with a reason) instead of score"},
    "bant": {
        "type": "object",
        "description": "budget, authority, need, timeline: all known when a lead becomes an SQL",
        "additionalProperties": False,
        "properties": {
            field: {"type": "string", "minLength": 1, "pattern": TRIMMED_PATTERN}
            for field in BANT_FIELDS
        },
        "required": list(BANT_FIELDS),
    },
    "amount": {"type": "number", "exclusiveMinimum": 0, "description": "deal value, in `currency`"},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code, upper case"},
    "fit": {"type": "integer", "description": "how well the lead fits the ideal customer profile: 0-100 from "
            "upstream; the scorer's sum of its matching fit rules' points (may be negative or above 100)"},
    "behaviour": {"type": "number", "description": "how engaged the lead is: 0-100 from upstream; the scorer's "
                  "decayed, capped sum of its behaviour rules' points"},
    "model": {"type": "string", "pattern": "^(external|policy:v[1-9][0-9]*)$",
              "description": "whose score: external (upstream or by hand) or policy:vN (the scorer under policy "
              "version N)"},
    "contributions": {
        "type": "array",
        "description": "the scorer's matching rules and the points each contributed (fit rules first)",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"rule": {"type": "string", "minLength": 1}, "points": {"type": "number"}},
            "required": ["rule", "points"],
        },
    },
    "total": _percent("the score the MQL threshold is compared with"),
    "attributes": {
        "type": "object",
        "description": "firmographic attributes stated at capture (not personal data), and the derived "
        "email_domain_kind and account_key; routing and scoring match on them",
        "additionalProperties": False,
        "properties": {
            "country": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2"},
            "industry": {"type": "string", "minLength": 1, "pattern": TRIMMED_PATTERN},
            "employees": {"type": "integer", "minimum": 0},
            "role": {"type": "string", "minLength": 1, "pattern": TRIMMED_PATTERN,
                     "description": "a category such as executive, manager, practitioner"},
            "language": {"type": "string", "pattern": "^[a-z]{2}$", "description": "ISO 639-1"},
            "email_domain_kind": {"enum": ["free", "business"]},
            "account_key": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                            "description": "HMAC of the e-mail's domain (business domains only)"},
        },
    },
    "method": {"enum": ["round_robin", "sticky", "fallback"],
               "description": "how the router chose; null: assigned by hand or upstream"},
    "policy_version": {"type": "integer", "minimum": 1, "description": "the published policy the decision used"},
    "candidates": {
        "type": "array",
        "description": "the reps who could take the lead at the decision instant",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "rep": {"type": "string", "minLength": 1},
                "weight": {"type": "integer", "minimum": 1},
                "current_before": {"type": "integer", "description": "the rep's round-robin value before"},
                "open": {"type": "integer", "minimum": 0, "description": "the rep's open leads before"},
                "capacity": {"type": ["integer", "null"], "minimum": 1},
            },
            "required": ["rep", "weight", "current_before", "open", "capacity"],
        },
    },
    "excluded": {
        "type": "array",
        "description": "the pool's reps who could not, with the reason",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "rep": {"type": "string", "minLength": 1},
                "reason": {"enum": ["absent", "outside_hours", "at_capacity", "breached"]},
            },
            "required": ["rep", "reason"],
        },
    },
    "sla": {"type": "string", "minLength": 1, "description": "the SLA rule's id"},
    "started_at": {"type": "string", "format": "date-time", "pattern": TIME_PATTERN,
                   "description": "when the clock started"},
    "deadline": {"type": "string", "format": "date-time", "pattern": TIME_PATTERN,
                 "description": "the instant the counted time reaches the target"},
}

_ENVELOPE_BASE = frozenset(f.name for f in dataclasses.fields(LeadEvent)) | {"originator_topic"}


def payload_hints(cls: type[LeadEvent]) -> dict[str, Any]:
    """The payload fields the codec writes for `cls` (before sealing), with their type hints."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in _ENVELOPE_BASE}


def _nullable(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    kind = schema["type"]
    return {**schema, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}


def _stage_fields(cls: type[LeadEvent]) -> dict[str, dict[str, Any]] | None:
    """`from_stage` and `to_stage` of an event that moves a lead into a stage (None for the others)."""
    if cls is LeadCaptured:
        return {
            "from_stage": {"type": "null", "description": "a new lead comes from no stage"},
            "to_stage": {"const": Stage.CAPTURED.value},
        }
    rule = RULE_OF_EVENT.get(cls) if issubclass(cls, StageChanged) else None
    if rule is None:
        return None
    return {
        # Any stage: the table's sources may change over time, and events written under an
        # older table must stay valid against their version's schema.
        "from_stage": {
            "enum": [stage.value for stage in Stage],
            "description": f"the stage the lead left (`{rule.trigger}` is allowed from: "
            f"{', '.join(s.value for s in rule.sources)} under the current table)",
        },
        "to_stage": {"const": rule.dest.value},
    }


def data_schema(cls: type[LeadEvent]) -> dict[str, Any]:
    """The envelope's `data`: exactly the fields `codec.event_data` writes for `cls`."""
    hints = payload_hints(cls)
    sealed = personal_fields(cls)
    properties: dict[str, dict[str, Any]] = dict(_stage_fields(cls) or {})
    for name, hint in hints.items():
        if name in ("from_stage", "to_stage") or name in sealed:
            continue
        if name not in FIELD_SCHEMAS:
            raise KeyError(f"{cls.__name__}.{name}: add its constraints to FIELD_SCHEMAS")
        base = FIELD_SCHEMAS[name]
        properties[name] = _or_null(base) if _nullable(hint) else dict(base)
    if sealed:
        properties["personal"] = {
            "type": ["string", "null"],
            "contentEncoding": "base64",
            "minLength": SEALED_MIN_LENGTH,
            "pattern": BASE64_PATTERN,
            "description": (
                f"AES-256-GCM (nonce, ciphertext, tag) of the canonical JSON of {{{', '.join(sealed)}}} "
                "under the lead's data key, base64; null when none was given; unreadable once erased"
            ),
        }
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(properties),
    }
    if "override" in properties:
        # qualify_mql's guard: an override needs a reason, otherwise the lead had a score.
        schema["if"] = {"properties": {"override": {"const": True}}}
        schema["then"] = {"properties": {"reason": {"type": "string"}}}
        schema["else"] = {"properties": {"score": {"type": "integer"}}}
    if _nullable(hints.get("amount")) and _nullable(hints.get("currency")):
        # an optional deal value: an amount and its currency, or neither
        schema["if"] = {"properties": {"amount": {"type": "null"}}}
        schema["then"] = {"properties": {"currency": {"type": "null"}}}
        schema["else"] = {"properties": {"currency": {"type": "string"}}}
    return schema


def event_description(cls: type[LeadEvent]) -> str:
    """The event's docstring, on one line (the dataclass machinery writes a signature where there is none)."""
    doc = cls.__doc__ or ""
    if not doc.strip() or doc.startswith(f"{cls.__name__}("):
        raise ValueError(f"{cls.__name__}: give the event class a docstring (it is the schema's description)")
    return " ".join(doc.split())


def _timestamp(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "date-time", "pattern": TIME_PATTERN, "description": description}


def envelope_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the whole stored envelope of event `name`, as `codec.encode` writes it."""
    cls = EVENT_CLASSES[name]
    version = cls.SCHEMA_VERSION
    type_ = event_type(name, version)
    first = cls is LeadCaptured  # a lead's first event: version 1, chained to the genesis hash
    hash_string = {"type": "string", "pattern": HASH_PATTERN}
    properties: dict[str, Any] = {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN, "description": "event id"},
        "source": {"const": SOURCE},
        "type": {"const": type_},
        "subject": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN, "description": "lead id"},
        "time": _timestamp("occurred_at: when it happened (upstream may send it)"),
        "recordedat": _timestamp("recorded_at: when leadledger stored it"),
        "sequence": (
            {"const": 1, "description": "the lead's version: a capture starts the stream"}
            if first
            else {"type": "integer", "minimum": 2, "description": "the lead's version (1, 2, 3 ... no gaps)"}
        ),
        "datacontenttype": {"const": "application/json"},
        "dataschema": {"const": f"schemas/events/{name}.v{version}.json"},
        "actor": {"type": "string", "description": "who caused it: a user, or the inbound message's source"},
        "causation": {
            "type": "string",
            "minLength": 1,
            "description": "`source/id` of the inbound message that caused it (absent otherwise)",
        },
        "prevhash": (
            {"const": GENESIS, "description": "a lead's first event links to the genesis hash"}
            if first
            else {**hash_string, "description": "`hash` of the lead's previous event"}
        ),
        "hash": {
            **hash_string,
            "description": "SHA-256 of the canonical JSON (sorted keys) of this envelope without `hash`",
        },
        "data": data_schema(cls),
    }
    return {
        "$schema": DRAFT,
        "$id": f"{ID_BASE}events/{name}.v{version}.json",
        "title": f"{type_} (stored CloudEvents 1.0 envelope)",
        "description": event_description(cls),
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": [key for key in properties if key != "causation"],
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name (under schemas/events/) -> text, for every event's current version."""
    return {
        f"{name}.v{cls.SCHEMA_VERSION}.json": render(envelope_schema(name))
        for name, cls in EVENT_CLASSES.items()
    }


def stale_files(directory: Path = EVENTS_DIR) -> list[str]:
    """Generated files missing from `directory` or differing from what this module builds."""
    return [
        file_name
        for file_name, text in expected_files().items()
        if not (directory / file_name).is_file() or (directory / file_name).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate_event_schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    parser.add_argument("--dir", type=Path, default=EVENTS_DIR, help="output directory")
    args = parser.parse_args(argv)
    stale = stale_files(args.dir)
    if args.check:
        for file_name in stale:
            print(f"stale: {args.dir / file_name}", file=sys.stderr)
        return 1 if stale else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    files = expected_files()
    for file_name in stale:
        (args.dir / file_name).write_text(files[file_name])
        print(f"wrote {args.dir / file_name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
