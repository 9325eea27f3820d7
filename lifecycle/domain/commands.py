"""Commands: what a caller asks of a lead. Frozen; validated by the Lead, not here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class LeadRef:
    """A lead addressed by id or by e-mail (exactly one)."""

    lead_id: UUID | None = None
    email: str | None = None

    def __str__(self) -> str:
        return str(self.lead_id) if self.lead_id else f"<e-mail {self.email}>"


@dataclass(frozen=True)
class Command:
    """Common fields: when it happened, who asked, and the message key if any."""

    occurred_at: datetime
    actor: str
    message_key: tuple[str, str] | None  # (source, id) of an inbound message


@dataclass(frozen=True)
class Capture(Command):
    email: str
    channel: str
    campaign: str | None = None
    name: str | None = None
    company: str | None = None
    phone: str | None = None
    consent: bool | None = None
    #: firmographic attributes (not personal data, stored in clear): ISO 3166-1 alpha-2 country,
    #: industry, employees, role category, ISO 639-1 language
    country: str | None = None
    industry: str | None = None
    employees: int | None = None
    role: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Touch(Command):
    lead: LeadRef
    channel: str
    campaign: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Score(Command):
    lead: LeadRef
    total: int
    fit: int | None = None
    behaviour: int | None = None


@dataclass(frozen=True)
class Assign(Command):
    lead: LeadRef
    owner: str
    rule: str | None = None


@dataclass(frozen=True)
class Contact(Command):
    lead: LeadRef
    owner: str | None = None


@dataclass(frozen=True)
class Transition(Command):
    lead: LeadRef
    trigger: str
    reason: str | None = None
    amount: float | None = None
    currency: str | None = None
    override: bool = False
    bant: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Consent(Command):
    lead: LeadRef
    given: bool
    purpose: str | None = None


@dataclass(frozen=True)
class Erase(Command):
    lead: LeadRef
    reason: str | None = None


LeadCommand = Capture | Touch | Score | Assign | Contact | Transition | Consent | Erase
