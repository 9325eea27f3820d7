"""Lead events: frozen, past-tense facts. Applying one only assigns fields.

Every event carries when it happened upstream (`occurred_at`), who caused it
(`actor`) and, when it came from an inbound message, that message's key
(`causation`). `timestamp` (the library's field) is when leadledger recorded it.
Stage-changing events also carry `from_stage` and `to_stage`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from lifecycle.stages import Stage

if TYPE_CHECKING:
    from lifecycle.lead import Lead


class LeadEvent(Aggregate.Event):
    """Base of every lead event."""

    event_id: UUID
    occurred_at: datetime
    actor: str
    causation: str | None

    #: Wire schema version of this event type; bump it and add an upcaster.
    SCHEMA_VERSION: ClassVar[int] = 1

    def apply(self, aggregate: Lead) -> None:
        aggregate.last_event_at = max(aggregate.last_event_at, self.occurred_at)


class StageChanged(LeadEvent):
    """Base of the events that move a lead between stages (never stored itself)."""

    from_stage: Stage
    to_stage: Stage

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.stage = self.to_stage
        aggregate.stage_entered_at = self.occurred_at
        aggregate.last_change_at = self.occurred_at


class LeadCaptured(LeadEvent, Aggregate.Created):
    """A new lead was captured. Personal fields are encrypted at rest."""

    channel: str
    campaign: str | None
    company: str | None
    consent: bool | None
    email: str | None
    name: str | None
    phone: str | None

    def apply(self, aggregate: Lead) -> None:
        aggregate.stage = Stage.CAPTURED
        aggregate.channel = self.channel
        aggregate.campaign = self.campaign
        aggregate.consent = self.consent
        aggregate.captured_at = self.occurred_at
        aggregate.stage_entered_at = self.occurred_at
        aggregate.last_change_at = self.occurred_at
        aggregate.last_event_at = self.occurred_at

    @property
    def from_stage(self) -> None:
        return None

    @property
    def to_stage(self) -> Stage:
        return Stage.CAPTURED


class LeadNurtured(StageChanged):
    pass


class LeadQualifiedAsMQL(StageChanged):
    score: int | None
    override: bool
    reason: str | None


class LeadAcceptedBySales(StageChanged):
    owner: str


class LeadRejectedBySales(StageChanged):
    reason: str

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.owner = None


class LeadQualifiedAsSQL(StageChanged):
    bant: dict[str, str]  # budget, authority, need, timeline


class LeadWon(StageChanged):
    amount: float
    currency: str


class LeadLost(StageChanged):
    reason: str


class LeadRecycled(StageChanged):
    reason: str

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.owner = None


class LeadDisqualified(StageChanged):
    reason: str


class LeadTouched(LeadEvent):
    """Engagement on a channel/campaign (also: a re-capture of a known person)."""

    channel: str
    campaign: str | None
    kind: str | None


class LeadScored(LeadEvent):
    fit: int | None
    behaviour: int | None
    total: int

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.score = self.total


class LeadAssigned(LeadEvent):
    owner: str
    rule: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.owner = self.owner


class LeadContacted(LeadEvent):
    owner: str | None


class LeadConsentGiven(LeadEvent):
    purpose: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.consent = True


class LeadConsentWithdrawn(LeadEvent):
    purpose: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.consent = False


class LeadPersonalDataErased(LeadEvent):
    """Right to be forgotten: the lead's data key was destroyed with this event."""

    reason: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.erased = True


STAGE_EVENTS: dict[str, type[StageChanged]] = {
    "nurture": LeadNurtured,
    "qualify_mql": LeadQualifiedAsMQL,
    "accept": LeadAcceptedBySales,
    "reject": LeadRejectedBySales,
    "qualify_sql": LeadQualifiedAsSQL,
    "win": LeadWon,
    "lose": LeadLost,
    "recycle": LeadRecycled,
    "disqualify": LeadDisqualified,
}

#: Every concrete event class, by its wire name.
_ALL_EVENTS: tuple[type[LeadEvent], ...] = (
    LeadCaptured,
    *STAGE_EVENTS.values(),
    LeadTouched,
    LeadScored,
    LeadAssigned,
    LeadContacted,
    LeadConsentGiven,
    LeadConsentWithdrawn,
    LeadPersonalDataErased,
)
EVENT_CLASSES: dict[str, type[LeadEvent]] = {cls.__name__: cls for cls in _ALL_EVENTS}
