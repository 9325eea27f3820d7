"""Inbound messages (docs/contract.md): bytes -> validated command, or BadMessage with the reason."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, NamedTuple
from uuid import UUID

import fastjsonschema
import orjson
from email_validator import EmailNotValidError, validate_email

from lifecycle.domain import commands as cmd
from schemas.codec import canonical, parse_time
from schemas.firmographics import FIELDS as ATTRIBUTE_FIELDS
from schemas.firmographics import InvalidAttribute, clean_attributes

MAX_MESSAGE_BYTES = 64 * 1024
#: sane bounds for upstream times (a lead from year 1 is a broken clock, not a lead)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
TYPE_PREFIX = "leadledger.inbound."
KINDS = ("capture", "touch", "score", "assign", "contact", "transition", "consent")


class InvalidEmail(ValueError):
    """Not an e-mail address; the message says what is wrong with it."""


#: e-mail addresses normalized lately (`normalize_email`), cleared when it holds NORMALIZED_CACHE
_NORMALIZED: dict[str, str] = {}
NORMALIZED_CACHE = 100_000


def normalize_email(email: str) -> str:
    """The identity of an e-mail address: the validator's normalized address, lower-cased
    (remembered: the validator costs some 100 µs an address)."""
    normalized = _NORMALIZED.get(email)
    if normalized is None:
        normalized = _normalize_email(email)
        remember_normalized(email, normalized)
    return normalized


def remember_normalized(email: str, normalized: str) -> None:
    """Remember what `normalize_email(email)` returns (e.g. as another process worked it out)."""
    if len(_NORMALIZED) >= NORMALIZED_CACHE:
        _NORMALIZED.clear()
    _NORMALIZED[email] = normalized


def _normalize_email(email: str) -> str:
    """The identity of an e-mail address: the validator's normalized address, lower-cased.

    Compatibility forms are folded first (NFKC: full-width letters, the Kelvin sign), and a
    trailing dot on the domain (the DNS root) is dropped; the domain is read in Unicode
    whether it came as Unicode or punycode. Syntax only: no DNS (`check_deliverability=False`).
    Raises InvalidEmail naming the problem (a zero-width space, no domain, ...)."""
    text = unicodedata.normalize("NFKC", email).strip()
    local, at, domain = text.rpartition("@")
    if at and domain.endswith(".") and not domain.endswith(".."):
        text = f"{local}@{domain[:-1]}"
    try:
        valid = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"{email!r} is not a valid e-mail address: {exc}") from None
    return valid.normalized.lower()


#: hex digits of a message digest kept (128 bits of SHA-256: ample to tell contents apart, half the bytes)
DIGEST_HEX = 32


def message_digest(message: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of a parsed message (its first 128 bits, hex):
    what an idempotency key is remembered with, so a key reused with other content is told from
    a repeat."""
    return hashlib.sha256(canonical(message)).hexdigest()[:DIGEST_HEX]


class Decoded(NamedTuple):
    """A valid message: its command and the digest of its content."""

    command: cmd.LeadCommand
    digest: str


class BadMessage(ValueError):
    """The message cannot be applied as it is; `reason` says why and what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_schema(relative: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath(relative).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(relative: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(relative))  # type: ignore[no-any-return]


def _check(relative: str, value: Any, what: str) -> None:
    try:
        _validator(relative)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        # fastjsonschema calls the root "data"; name it what it is (the envelope or its data)
        root = "message" if what == "envelope" else "data"
        detail = exc.message.replace("data", root, 1) if exc.message.startswith("data") else exc.message
        raise BadMessage(f"{what} violates {relative}: {detail}") from None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Check size, JSON and the envelope; returns (kind, envelope)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"oversized message: {len(raw)} bytes (limit {MAX_MESSAGE_BYTES}): "
                         "send one lead event per message, without attachments")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"not JSON: {exc}; send one CloudEvents 1.0 JSON object (UTF-8) per message") from None
    if not isinstance(message, dict):
        raise BadMessage(f"not a JSON object but {type(message).__name__}: send one CloudEvent per message")
    _check("inbound/envelope.v1.json", message, "envelope")
    kind, _, version = message["type"][len(TYPE_PREFIX) :].rpartition(".v")
    if kind not in KINDS:
        raise BadMessage(f"unknown kind {kind!r} in type {message['type']!r}; known: {', '.join(KINDS)}")
    if version != "1":
        raise BadMessage(f"unsupported version v{version} of {kind!r}; this leadledger reads v1")
    if kind == "capture":  # first, for a reason in words rather than the schema's pattern
        _capture_attributes(message["data"])
    _check(f"inbound/{kind}.v1.json", message["data"], f"data of {kind}")
    # valid JSON, but no database stores it in text; JSON writes NUL only as the escape \u0000
    if b"\\u0000" in raw and _has_nul(message):
        raise BadMessage("a string contains a NUL character (\\u0000): remove it; no store accepts it")
    return kind, message


def to_command(kind: str, message: dict[str, Any], now: datetime | None = None) -> cmd.LeadCommand:
    data: dict[str, Any] = message["data"]
    key = (message["source"], message["id"])
    actor = message["source"]
    if "time" in message:
        try:
            at = parse_time(message["time"])
        except ValueError as exc:
            raise BadMessage(f"time {message['time']!r} is not an RFC 3339 timestamp: {exc}") from None
        if not EARLIEST <= at < LATEST:
            raise BadMessage(
                f"time {message['time']!r} is outside {EARLIEST.year}-{LATEST.year - 1}: check the upstream clock"
            )
    else:
        at = now or datetime.now(UTC)
    common: dict[str, Any] = {"occurred_at": at, "actor": actor, "message_key": key}
    if kind == "capture":
        _check_email(data["email"])
        return cmd.Capture(
            **common,
            email=data["email"],
            channel=data["channel"],
            campaign=data.get("campaign"),
            name=data.get("name"),
            company=data.get("company"),
            phone=data.get("phone"),
            consent=data.get("consent"),
            **_capture_attributes(data),
        )
    lead = _lead_ref(message)
    if kind == "touch":
        return cmd.Touch(**common, lead=lead, channel=data["channel"], campaign=data.get("campaign"),
                         kind=data.get("kind"))
    if kind == "score":
        return cmd.Score(**common, lead=lead, total=data["total"], fit=data.get("fit"),
                         behaviour=data.get("behaviour"))
    if kind == "assign":
        return cmd.Assign(**common, lead=lead, owner=data["owner"], rule=data.get("rule"))
    if kind == "contact":
        return cmd.Contact(**common, lead=lead, owner=data.get("owner"))
    if kind == "transition":
        amount = data.get("amount")
        return cmd.Transition(
            **common,
            lead=lead,
            trigger=data["trigger"],
            reason=data.get("reason"),
            amount=float(amount) if amount is not None else None,
            currency=data.get("currency"),
            override=bool(data.get("override") or False),
            bant=data.get("bant"),
        )
    return cmd.Consent(**common, lead=lead, given=data["given"], purpose=data.get("purpose"))


def _capture_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """A capture's firmographic attributes (those given, not null), normalized; BadMessage naming
    the field and what it expects. An integral number (1200.0) is an integer, as in JSON Schema."""
    given = {name: data.get(name) for name in ATTRIBUTE_FIELDS}
    employees = given["employees"]
    if isinstance(employees, float) and employees.is_integer():
        given["employees"] = int(employees)
    try:
        return clean_attributes(**given)
    except InvalidAttribute as exc:
        raise BadMessage(f"data.{exc}") from None


def _lead_ref(message: dict[str, Any]) -> cmd.LeadRef:
    subject = message.get("subject")
    if subject:
        return cmd.LeadRef(lead_id=UUID(subject))
    email = message["data"].get("email")
    if email:
        _check_email(email)
        return cmd.LeadRef(email=email)
    raise BadMessage("no lead addressed: set the envelope's subject (lead id) or data.email")


def _check_email(email: str) -> None:
    try:
        normalize_email(email)
    except InvalidEmail as exc:
        raise BadMessage(f"data.email: {exc}") from None


def decode(raw: bytes, now: datetime | None = None) -> cmd.LeadCommand:
    kind, message = parse(raw)
    return to_command(kind, message, now)


def decode_message(raw: bytes, now: datetime | None = None) -> Decoded:
    """The command of a valid message and the digest of its content; BadMessage otherwise."""
    kind, message = parse(raw)
    return Decoded(to_command(kind, message, now), message_digest(message))
