"""The Lead aggregate: commands validate against the stage table, then record one event."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from lifecycle.domain import events as ev
from lifecycle.domain.errors import (
    GuardFailed,
    ImpossibleTime,
    InvalidCommand,
    InvalidTransition,
    UnknownTrigger,
)
from lifecycle.domain.stage import Stage
from lifecycle.domain.stages import (
    RULE_OF_EVENT,
    RULES,
    TRIGGERS,
    GuardContext,
    allowed_triggers,
    fire,
)


def _clean(value: str | None) -> str | None:
    """Blank strings are absent values."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def channel_key(value: str | None) -> str | None:
    """A channel or campaign as it is stored and grouped by: trimmed and lower-case, so
    "Webinar " and "webinar" are one channel (blank: absent)."""
    cleaned = _clean(value)
    return None if cleaned is None else cleaned.lower()


#: What each non-stage event is called in a refusal (stage changes are named by their trigger).
_WHAT: dict[type[ev.LeadEvent], str] = {
    ev.LeadTouched: "a touch", ev.LeadScored: "a score", ev.LeadAssigned: "an assignment",
    ev.LeadContacted: "a contact", ev.LeadConsentGiven: "a consent change",
    ev.LeadConsentWithdrawn: "a consent change", ev.LeadPersonalDataErased: "an erasure",
    ev.LeadRoutingQueued: "a routing decision", ev.LeadSLAWarned: "an SLA warning",
    ev.LeadSLABreached: "an SLA breach",
}


class Lead(Aggregate):
    """One sales lead. Its state is a fold of its events; commands never do IO."""

    stage: Stage
    score: int | None
    owner: str | None
    channel: str
    campaign: str | None
    consent: bool | None
    erased: bool
    attributes: dict[str, Any]
    queued: bool
    captured_at: datetime
    stage_entered_at: datetime
    last_change_at: datetime
    last_event_at: datetime

    def __init__(self) -> None:
        self.score = None
        self.owner = None
        self.erased = False
        self.attributes = {}
        self.queued = False

    # ---- creation -------------------------------------------------------------

    @classmethod
    def capture(
        cls,
        lead_id: UUID,
        *,
        channel: str,
        occurred_at: datetime,
        actor: str,
        campaign: str | None = None,
        company: str | None = None,
        consent: bool | None = None,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        causation: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Lead:
        channel_clean = channel_key(channel)
        if channel_clean is None:
            raise InvalidCommand(lead_id, "a capture needs a source channel (--channel)")
        return cls._create(
            ev.LeadCaptured,
            id=lead_id,
            event_id=uuid4(),
            occurred_at=occurred_at,
            actor=actor,
            causation=causation,
            channel=channel_clean,
            campaign=channel_key(campaign),
            company=_clean(company),
            consent=consent,
            email=email,
            name=_clean(name),
            phone=_clean(phone),
            attributes=dict(attributes or {}),
        )

    # ---- stage changes --------------------------------------------------------

    def transition(
        self,
        trigger: str,
        *,
        occurred_at: datetime,
        actor: str,
        mql_threshold: int,
        reason: str | None = None,
        override: bool = False,
        amount: float | None = None,
        currency: str | None = None,
        bant: Mapping[str, Any] | None = None,
        causation: str | None = None,
    ) -> None:
        """Fire `trigger`; refuse with a specific error if the table or a guard says no, else
        record the rule's event with what its payload takes from the command."""
        rule = RULES.get(trigger)
        if rule is None:
            raise UnknownTrigger(self.id, self.stage.value, trigger, TRIGGERS)
        dest = fire(self.stage, trigger)
        if dest is None:
            raise InvalidTransition(
                self.id, self.stage.value, trigger, allowed_triggers(self.stage)
            )
        reason = _clean(reason)
        currency = _clean(currency)
        if amount is not None and not math.isfinite(amount):
            raise InvalidCommand(self.id, f"amount must be a finite number, got {amount}")
        ctx = GuardContext(
            score=self.score,
            owner=self.owner,
            mql_threshold=mql_threshold,
            reason=reason,
            override=override,
            amount=amount,
            currency=currency,
            bant=bant,
        )
        if rule.guard is not None:
            missing = rule.guard(ctx)
            if missing is not None:
                raise GuardFailed(self.id, self.stage.value, trigger, missing)
        self._record(
            rule.event,
            occurred_at,
            actor,
            causation,
            from_stage=self.stage,
            to_stage=dest,
            **rule.payload(ctx),
        )

    # ---- non-stage events -----------------------------------------------------

    def touch(
        self,
        *,
        channel: str,
        occurred_at: datetime,
        actor: str,
        campaign: str | None = None,
        kind: str | None = None,
        causation: str | None = None,
        consent: bool | None = None,
        company: str | None = None,
        name: str | None = None,
        phone: str | None = None,
    ) -> None:
        """An engagement. A re-capture (kind `recapture`) also carries what the new capture said
        about the person: consent and contact data follow the latest statement (None: not stated)."""
        channel_clean = channel_key(channel)
        if channel_clean is None:
            raise InvalidCommand(self.id, "a touch needs a channel (--channel)")
        self._record(
            ev.LeadTouched,
            occurred_at,
            actor,
            causation,
            channel=channel_clean,
            campaign=channel_key(campaign),
            kind=_clean(kind),
            consent=consent,
            company=_clean(company),
            name=_clean(name),
            phone=_clean(phone),
        )

    def record_score(
        self,
        *,
        total: int,
        occurred_at: datetime,
        actor: str,
        fit: int | None = None,
        behaviour: int | None = None,
        causation: str | None = None,
    ) -> None:
        for label, value in (("total", total), ("fit", fit), ("behaviour", behaviour)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidCommand(self.id, f"score {label} must be a whole number, got {value!r}")
            if value is not None and not 0 <= value <= 100:
                raise InvalidCommand(self.id, f"score {label} must be between 0 and 100, got {value}")
        self._record(
            ev.LeadScored, occurred_at, actor, causation, fit=fit, behaviour=behaviour, total=total,
            model="external", contributions=None, policy_version=None,
        )

    def assign(
        self,
        *,
        owner: str,
        occurred_at: datetime,
        actor: str,
        rule: str | None = None,
        causation: str | None = None,
    ) -> None:
        owner_clean = _clean(owner)
        if owner_clean is None:
            raise InvalidCommand(self.id, "an assignment needs an owner (--owner)")
        self._record(
            ev.LeadAssigned, occurred_at, actor, causation, owner=owner_clean, rule=_clean(rule),
            method=None, policy_version=None, candidates=None, excluded=None,
        )

    # ---- the operator's decisions (recorded as decided: the operator checked them) ----

    def route_to(
        self,
        *,
        owner: str,
        rule: str,
        method: str,
        policy_version: int,
        candidates: list[dict[str, Any]],
        excluded: list[dict[str, Any]],
        occurred_at: datetime,
        causation: str | None,
    ) -> None:
        """The router's assignment, with its reasons."""
        self._record(
            ev.LeadAssigned, occurred_at, "router", causation, owner=owner, rule=rule, method=method,
            policy_version=policy_version, candidates=candidates, excluded=excluded,
        )

    def queue_for_routing(
        self, *, rule: str, policy_version: int, excluded: list[dict[str, Any]], occurred_at: datetime,
        causation: str | None,
    ) -> None:
        self._record(ev.LeadRoutingQueued, occurred_at, "router", causation, rule=rule,
                     policy_version=policy_version, excluded=excluded)

    def scorer_score(
        self, *, fit: int, behaviour: float, total: int, contributions: list[dict[str, Any]],
        policy_version: int, occurred_at: datetime,
    ) -> None:
        """The scorer's score under policy version `policy_version`, with each matching rule's points."""
        self._record(ev.LeadScored, occurred_at, "scorer", None, fit=fit, behaviour=behaviour, total=total,
                     model=f"policy:v{policy_version}", contributions=contributions,
                     policy_version=policy_version)

    def auto_qualify(self, *, total: int, threshold: int, policy_version: int, occurred_at: datetime) -> None:
        """The scorer's automatic MQL: its score `total` reached the policy's `threshold` (the scorer checked
        it). Refused like any transition if the lead cannot become an MQL from where it stands, or not at
        that instant."""
        dest = fire(self.stage, "qualify_mql")
        if dest is None:
            raise InvalidTransition(self.id, self.stage.value, "qualify_mql", allowed_triggers(self.stage))
        self._record(ev.LeadQualifiedAsMQL, occurred_at, "scorer", None, from_stage=self.stage, to_stage=dest,
                     score=total, override=False,
                     reason=f"score {total} >= threshold {threshold} (policy v{policy_version})")

    def sla_timer(
        self, *, breached: bool, sla: str, started_at: datetime, deadline: datetime, owner: str | None,
        policy_version: int, occurred_at: datetime,
    ) -> None:
        """An SLA warning (`breached` False) or breach, occurring at its computed instant."""
        self._record(ev.LeadSLABreached if breached else ev.LeadSLAWarned, occurred_at, "sla", None,
                     sla=sla, started_at=started_at, deadline=deadline, owner=owner,
                     policy_version=policy_version)

    def contact(
        self,
        *,
        occurred_at: datetime,
        actor: str,
        owner: str | None = None,
        causation: str | None = None,
    ) -> None:
        owner_clean = _clean(owner) or self.owner
        if owner_clean is None:
            raise InvalidCommand(
                self.id, "a contact needs an owner: assign the lead first or pass --owner"
            )
        self._record(ev.LeadContacted, occurred_at, actor, causation, owner=owner_clean)

    def set_consent(
        self,
        *,
        given: bool,
        occurred_at: datetime,
        actor: str,
        purpose: str | None = None,
        causation: str | None = None,
    ) -> None:
        event_class = ev.LeadConsentGiven if given else ev.LeadConsentWithdrawn
        self._record(event_class, occurred_at, actor, causation, purpose=_clean(purpose))

    def erase_personal_data(
        self, *, occurred_at: datetime, actor: str, reason: str | None = None
    ) -> None:
        if self.erased:
            raise InvalidCommand(self.id, "personal data of this lead is already erased")
        self._record(ev.LeadPersonalDataErased, occurred_at, actor, None, reason=_clean(reason))

    # ---- helpers --------------------------------------------------------------

    def _record(
        self,
        event_class: type[ev.LeadEvent],
        occurred_at: datetime,
        actor: str,
        causation: str | None,
        **fields: Any,
    ) -> None:
        self._check_time(event_class, occurred_at)
        self.trigger_event(
            event_class,
            event_id=uuid4(),
            occurred_at=occurred_at,
            actor=actor,
            causation=causation,
            **fields,
        )

    def _check_time(self, event_class: type[ev.LeadEvent], occurred_at: datetime) -> None:
        """Refuse an impossible history: an event before the lead's capture, or a stage change
        before its latest one. Checked by the command only: applying (replay) never re-checks."""
        rule = RULE_OF_EVENT.get(event_class) if issubclass(event_class, ev.StageChanged) else None
        what = f"'{rule.trigger}'" if rule is not None else _WHAT.get(event_class, event_class.__name__)
        if occurred_at < self.captured_at:
            raise ImpossibleTime(self.id, what, occurred_at, "capture", self.captured_at)
        if rule is not None and occurred_at < self.last_change_at:
            raise ImpossibleTime(self.id, what, occurred_at, f"into '{self.stage.value}'", self.last_change_at)
