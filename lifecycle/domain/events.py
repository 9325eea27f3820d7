"""Lead events: frozen, past-tense facts. Applying one only assigns fields.

Every event carries when it happened upstream (`occurred_at`), who caused it
(`actor`) and, when it came from an inbound message, that message's key
(`causation`). `timestamp` (the library's field) is when leadledger recorded it.
Stage-changing events also carry `from_stage` and `to_stage`; which trigger records
which of them, and into which stage, is the stage table's business (stages.py).
A stored event class's docstring is its description in its JSON Schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from lifecycle.domain.stage import Stage

if TYPE_CHECKING:
    from lifecycle.domain.lead import Lead


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

    #: The lead goes back to marketing: whoever owned it no longer does.
    CLEARS_OWNER: ClassVar[bool] = False

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.stage = self.to_stage
        aggregate.stage_entered_at = self.occurred_at
        aggregate.last_change_at = self.occurred_at
        if self.CLEARS_OWNER:
            aggregate.owner = None


class LeadCaptured(LeadEvent, Aggregate.Created):
    """A new lead was captured. Name, e-mail, phone and company travel sealed in data.personal; the firmographic `attributes` (country, industry, employees, role, language, and the derived email_domain_kind and account_key) are in clear."""

    channel: str
    campaign: str | None
    company: str | None
    consent: bool | None
    email: str | None
    name: str | None
    phone: str | None
    attributes: dict[str, Any]

    #: v2: the company is personal data too (a one-person company names a person), sealed;
    #: v3: the firmographic attributes routing and scoring match on
    SCHEMA_VERSION = 3

    def apply(self, aggregate: Lead) -> None:
        aggregate.stage = Stage.CAPTURED
        aggregate.channel = self.channel
        aggregate.campaign = self.campaign
        aggregate.consent = self.consent
        aggregate.captured_at = self.occurred_at
        aggregate.attributes = dict(self.attributes)
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
    """Marketing keeps developing a lead that is not ready for sales."""


class LeadQualifiedAsMQL(StageChanged):
    """The lead became marketing-qualified: score at or above the threshold, or an override with a reason."""

    score: int | None
    override: bool
    reason: str | None


class LeadAcceptedBySales(StageChanged):
    """Sales accepted the MQL; `owner` is the owner assigned at that moment."""

    owner: str


class LeadRejectedBySales(StageChanged):
    """Sales handed the lead back to marketing; the owner is cleared."""

    reason: str

    CLEARS_OWNER = True


class LeadQualifiedAsSQL(StageChanged):
    """The lead became sales-qualified with complete BANT and, when upstream gives one, the deal's expected `amount` in `currency` (both or neither; null: not given)."""

    bant: dict[str, str]  # budget, authority, need, timeline
    amount: float | None
    currency: str | None

    #: v2: the deal's expected amount and currency (optional)
    SCHEMA_VERSION = 2


class LeadWon(StageChanged):
    """The deal was won."""

    amount: float
    currency: str


class LeadLost(StageChanged):
    """The deal was lost."""

    reason: str


class LeadRecycled(StageChanged):
    """The lead went back to marketing (not now, upsell, ...); the owner is cleared."""

    reason: str

    CLEARS_OWNER = True


class LeadDisqualified(StageChanged):
    """The lead is out: not a fit, spam, duplicate or erased."""

    reason: str


class LeadTouched(LeadEvent):
    """Engagement on a channel/campaign, including a known person's re-capture, which also carries what that capture said about the person: consent, and name, company and phone sealed in data.personal (null: not stated). The lead's consent follows the latest statement."""

    channel: str
    campaign: str | None
    kind: str | None
    consent: bool | None
    company: str | None
    name: str | None
    phone: str | None

    #: v2: consent and the sealed personal statement of a re-capture
    SCHEMA_VERSION = 2

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        if self.consent is not None:
            aggregate.consent = self.consent


class LeadScored(LeadEvent):
    """A new score; `total` becomes the lead's latest score. `model` says whose: `external` (upstream or by hand: fit and behaviour as given, 0-100) or `policy:vN` (leadledger's scorer, actor `scorer`, under policy version N: fit is the sum of the matching fit rules' points, behaviour the decayed, capped sum of the behaviour rules' touches, and `contributions` each matching rule's points)."""

    fit: int | None
    behaviour: float | None
    total: int
    model: str
    contributions: list[dict[str, Any]] | None  # [{rule, points}] (scorer only)
    policy_version: int | None

    #: v2: whose score (`model`), and the scorer's contributions and policy version
    SCHEMA_VERSION = 2

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.score = self.total


class LeadAssigned(LeadEvent):
    """An owner was assigned: by hand or upstream (`method` null), or by leadledger's router (actor `router`), which records how it chose (`method`), the rule, the policy version, the candidates with their round-robin values and load, and the reps it excluded with the reason."""

    owner: str
    rule: str | None
    method: str | None  # round_robin | sticky | fallback (router decisions); None: manual or upstream
    policy_version: int | None
    candidates: list[dict[str, Any]] | None  # [{rep, weight, current_before, open, capacity}]
    excluded: list[dict[str, Any]] | None  # [{rep, reason}]

    #: v2: the router's reasons (method, policy_version, candidates, excluded)
    SCHEMA_VERSION = 2

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.owner = self.owner
        aggregate.queued = False


class LeadRoutingQueued(LeadEvent):
    """The router found no candidate for the lead (actor `router`): it waits in the queue of `rule` until a rep can take it; `excluded` names each pool rep's reason (absent, outside_hours, at_capacity, breached)."""

    rule: str
    policy_version: int
    excluded: list[dict[str, Any]]  # [{rep, reason}]

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.queued = True


class LeadSLAWarned(LeadEvent):
    """An SLA clock reached its warning point (actor `sla`); `occurred_at` is that instant."""

    sla: str
    started_at: datetime
    deadline: datetime
    owner: str | None
    policy_version: int


class LeadSLABreached(LeadEvent):
    """An SLA clock reached its deadline without a stop (actor `sla`); `occurred_at` is the deadline."""

    sla: str
    started_at: datetime
    deadline: datetime
    owner: str | None
    policy_version: int


class LeadContacted(LeadEvent):
    """The owner contacted the lead (speed to lead)."""

    owner: str | None


class LeadConsentGiven(LeadEvent):
    """The person gave consent."""

    purpose: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.consent = True


class LeadConsentWithdrawn(LeadEvent):
    """The person withdrew consent."""

    purpose: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.consent = False


class LeadPersonalDataErased(LeadEvent):
    """Right to be forgotten: the lead's data key was destroyed; its lifecycle still counts."""

    reason: str | None

    def apply(self, aggregate: Lead) -> None:
        super().apply(aggregate)
        aggregate.erased = True


def _stored_classes(base: type[LeadEvent]) -> list[type[LeadEvent]]:
    """The event classes below `base` that are stored: those no class here derives from."""
    found: list[type[LeadEvent]] = []
    for cls in base.__subclasses__():
        found.extend(_stored_classes(cls) if cls.__subclasses__() else [cls])
    return found


#: The actors of leadledger's own decisions (the operator's router, SLA clocks and scorer): no
#: command or inbound message may name them.
OPERATOR_ACTORS = frozenset({"router", "sla", "scorer"})


#: Every stored event class, by its wire name (a new class above is one automatically).
EVENT_CLASSES: dict[str, type[LeadEvent]] = {cls.__name__: cls for cls in _stored_classes(LeadEvent)}
