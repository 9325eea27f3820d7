"""The application service: run commands against leads, in batches, with retries."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypedDict
from uuid import UUID

from lifecycle.domain import commands as cmd
from lifecycle.domain.errors import ConcurrencyConflict, InvalidCommand, LifecycleError, UnknownLead
from lifecycle.domain.lead import Lead
from lifecycle.privacy import normalize_email
from lifecycle.settings import Settings
from lifecycle.store.repository import Changes, LeadStore, Loaded, StoreConflict
from lifecycle.store.sqlite import ScrubIncomplete

MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Outcome:
    """What became of one command."""

    status: Literal["applied", "duplicate", "refused"]
    lead_id: UUID | None = None
    version: int | None = None
    event: str | None = None
    error: str | None = None
    warning: str | None = None  # applied, but something needs the operator's attention

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "lead_id": str(self.lead_id) if self.lead_id else None,
            "version": self.version,
            "event": self.event,
            "error": self.error,
            **({"warning": self.warning} if self.warning else {}),
        }


class _Stamp(TypedDict):
    """When a command's event happened, who caused it, and the inbound message that did (if any)."""

    occurred_at: datetime
    actor: str
    causation: str | None


@dataclass
class _Attempt:
    """What one attempt at storing commands works on: the leads it loaded or created, the writes
    it collects, and where it may look for leads (the cache; ids known to be new)."""

    use_cache: bool
    absent: set[UUID] = field(default_factory=set)
    leads: dict[UUID, Loaded] = field(default_factory=dict)
    changes: Changes = field(default_factory=Changes)


class LeadLedger:
    """Commands in, events stored. One instance per process; not thread-safe."""

    def __init__(self, store: LeadStore, settings: Settings, cache_size: int = 20_000) -> None:
        self.store = store
        self.settings = settings
        self._cache: OrderedDict[UUID, Loaded] = OrderedDict()
        self._cache_size = cache_size

    # ---- public ---------------------------------------------------------------

    def execute(self, command: cmd.LeadCommand) -> Outcome:
        return self.execute_batch([command])[0]

    def execute_batch(self, commands: Sequence[cmd.LeadCommand]) -> list[Outcome]:
        """Apply commands in order and store all their events in ONE transaction.

        Duplicate message keys are skipped; refused commands append nothing. If
        another writer raced us, the applied commands are re-run one at a time on
        fresh state (bounded retries).
        """
        outcomes: list[Outcome | None] = [None] * len(commands)
        keys = [c.message_key for c in commands if c.message_key is not None]
        seen = self.store.seen(keys) if keys else set()
        batch_keys: set[tuple[str, str]] = set()
        attempt = self._prefetch(commands)
        changes = attempt.changes
        applied: list[int] = []
        for i, command in enumerate(commands):
            key = command.message_key
            if key is not None and (key in seen or key in batch_keys):
                outcomes[i] = Outcome("duplicate")
                continue
            if isinstance(command, cmd.Erase) and self._already_erased(command, attempt.leads):
                outcomes[i] = self._repeat_erasure(command)
                continue
            try:
                lead, event_name = self._apply(command, attempt)
            except LifecycleError as exc:
                outcomes[i] = Outcome("refused", error=str(exc))
                continue
            if key is not None:
                batch_keys.add(key)
                changes.inbound.append((key[0], key[1], lead.id, lead.version))
            outcomes[i] = Outcome("applied", lead.id, lead.version, event_name)
            applied.append(i)
        changes.leads = list(attempt.leads.values())
        try:
            self.store.commit(changes)
        except StoreConflict:
            self._evict(attempt.leads)
            for i in applied:
                outcomes[i] = self._execute_alone(commands[i])
        except BaseException:
            self._evict(attempt.leads)
            raise
        else:
            for loaded in attempt.leads.values():
                self._remember(loaded)
        if changes.erase:
            warning = self._scrub(changes.erase)
            if warning:
                outcomes = [
                    replace(o, warning=warning) if o and o.event == "LeadPersonalDataErased" else o
                    for o in outcomes
                ]
        return [o if o is not None else Outcome("refused", error="internal: no outcome") for o in outcomes]

    def lead_id_for(self, ref: cmd.LeadRef) -> UUID:
        if ref.lead_id is not None:
            return ref.lead_id
        if ref.email is None or not ref.email.strip():
            raise InvalidCommand(None, "address the lead by id or by e-mail")
        return self.store.secrets.lead_id_for_email(ref.email)

    def load(self, lead_id: UUID) -> Lead | None:
        loaded = self.store.load(lead_id)
        return loaded.lead if loaded else None

    # ---- internals ------------------------------------------------------------

    def _prefetch(self, commands: Sequence[cmd.LeadCommand]) -> _Attempt:
        """Load, in one query, the leads the batch names that the cache does not hold.

        The batch's attempt starts with those found and the ids known not to be stored (new leads)."""
        wanted: set[UUID] = set()
        cached: dict[UUID, int] = {}
        for command in commands:
            try:
                lead_id = self._target(command)
            except LifecycleError:
                continue  # the command will be refused with its own message
            hit = self._cache.get(lead_id)
            if hit is None:
                wanted.add(lead_id)
            else:
                cached[lead_id] = hit.lead.version
        # Another process may have appended to a cached lead: decide on fresh state, so a
        # refusal (which commits nothing, hence never conflicts) is never based on stale data.
        for lead_id in self.store.stale(cached) if cached else ():
            self._cache.pop(lead_id, None)
            wanted.add(lead_id)
        found = self.store.load_many(wanted) if wanted else {}
        return _Attempt(use_cache=True, absent=wanted - found.keys(), leads=found)

    def _target(self, command: cmd.LeadCommand) -> UUID:
        """The id of the lead a command is for (a capture names its lead by the e-mail)."""
        if isinstance(command, cmd.Capture):
            return self.store.secrets.lead_id_for_email(command.email)
        return self.lead_id_for(command.lead)

    def _already_erased(self, command: cmd.Erase, leads: dict[UUID, Loaded]) -> bool:
        try:
            lead_id = self.lead_id_for(command.lead)
        except LifecycleError:
            return False
        loaded = leads.get(lead_id) or self._cache.get(lead_id) or self.store.load(lead_id)
        return loaded is not None and loaded.lead.erased

    def _repeat_erasure(self, command: cmd.Erase) -> Outcome:
        """Erasing an erased lead appends nothing; it repeats the scrub (e.g. after a
        checkpoint was blocked the first time)."""
        lead_id = self.lead_id_for(command.lead)
        warning = self._scrub([lead_id])
        return Outcome("duplicate", lead_id, event="LeadPersonalDataErased", warning=warning)

    def _scrub(self, lead_ids: list[UUID]) -> str | None:
        try:
            self.store.finish_erasure(lead_ids)
        except ScrubIncomplete as exc:
            return f"erasure recorded, but not yet scrubbed from disk: {exc}"
        return None

    def _execute_alone(self, command: cmd.LeadCommand) -> Outcome:
        for retry in range(MAX_ATTEMPTS):
            if retry:
                # jittered backoff so racing writers stop colliding in lock-step
                time.sleep(random.uniform(0.002, 0.01) * 2**retry)
            key = command.message_key
            if key is not None and self.store.seen([key]):
                return Outcome("duplicate")
            attempt = _Attempt(use_cache=False)
            try:
                lead, event_name = self._apply(command, attempt)
            except LifecycleError as exc:
                return Outcome("refused", error=str(exc))
            if key is not None:
                attempt.changes.inbound.append((key[0], key[1], lead.id, lead.version))
            attempt.changes.leads = list(attempt.leads.values())
            try:
                self.store.commit(attempt.changes)
            except StoreConflict:
                continue
            for loaded in attempt.leads.values():
                self._remember(loaded)
            return Outcome("applied", lead.id, lead.version, event_name)
        lead_ref = getattr(command, "lead", None)
        lead_id = self.lead_id_for(lead_ref) if lead_ref else None
        error = ConcurrencyConflict(lead_id, MAX_ATTEMPTS) if lead_id else None
        return Outcome("refused", lead_id, error=str(error or "conflict: retry the command"))

    def _get(self, lead_id: UUID, attempt: _Attempt) -> Loaded | None:
        loaded = attempt.leads.get(lead_id)
        if loaded is None and attempt.use_cache:
            loaded = self._cache.get(lead_id)
        if loaded is None and lead_id not in attempt.absent:
            loaded = self.store.load(lead_id)
        if loaded is not None:
            attempt.leads[lead_id] = loaded
        return loaded

    def _apply(self, command: cmd.LeadCommand, attempt: _Attempt) -> tuple[Lead, str]:
        """Run one command on the attempt's leads; returns the lead and the event it recorded."""
        handler = _HANDLERS.get(type(command))
        if handler is None:  # pragma: no cover - the table covers every command type
            raise InvalidCommand(None, f"unknown command {type(command).__name__}")
        at: _Stamp = {
            "occurred_at": command.occurred_at,
            "actor": command.actor,
            "causation": f"{command.message_key[0]}/{command.message_key[1]}" if command.message_key else None,
        }
        lead = handler(self, command, attempt, at)
        return lead, type(lead.pending_events[-1]).__name__

    def _lead(self, ref: cmd.LeadRef, attempt: _Attempt) -> Lead:
        """The stored (or just created) lead a command addresses."""
        loaded = self._get(self.lead_id_for(ref), attempt)
        if loaded is None:
            raise UnknownLead(str(ref))
        return loaded.lead

    # ---- one handler per command type (see _HANDLERS); each records one event -------

    def _capture(self, command: cmd.Capture, attempt: _Attempt, at: _Stamp) -> Lead:
        email = command.email.strip()
        if "@" not in email:
            raise InvalidCommand(None, f"a capture needs a valid e-mail (--email), got {email!r}")
        lead_id = self.store.secrets.lead_id_for_email(email)
        loaded = self._get(lead_id, attempt)
        if loaded is not None:
            # SPEC §2: a known person's capture is a touch on their lead.
            loaded.lead.touch(channel=command.channel, campaign=command.campaign, kind="recapture", **at)
            return loaded.lead
        lead = Lead.capture(
            lead_id,
            channel=command.channel,
            campaign=command.campaign,
            company=command.company,
            consent=command.consent,
            email=normalize_email(email),
            name=command.name,
            phone=command.phone,
            **at,
        )
        attempt.changes.new_keys[lead_id] = self.store.secrets.new_data_key(lead_id)
        attempt.leads[lead_id] = Loaded(lead)
        return lead

    def _touch(self, command: cmd.Touch, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.touch(channel=command.channel, campaign=command.campaign, kind=command.kind, **at)
        return lead

    def _score(self, command: cmd.Score, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.record_score(total=command.total, fit=command.fit, behaviour=command.behaviour, **at)
        return lead

    def _assign(self, command: cmd.Assign, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.assign(owner=command.owner, rule=command.rule, **at)
        return lead

    def _contact(self, command: cmd.Contact, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.contact(owner=command.owner, **at)
        return lead

    def _transition(self, command: cmd.Transition, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.transition(
            command.trigger,
            reason=command.reason,
            amount=command.amount,
            currency=command.currency,
            override=command.override,
            bant=command.bant,
            mql_threshold=self.settings.mql_threshold,
            **at,
        )
        return lead

    def _consent(self, command: cmd.Consent, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.set_consent(given=command.given, purpose=command.purpose, **at)
        return lead

    def _erase(self, command: cmd.Erase, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        # no causation: an erasure is an operator's act, never an inbound message's
        lead.erase_personal_data(reason=command.reason, occurred_at=at["occurred_at"], actor=at["actor"])
        attempt.changes.erase.append(lead.id)
        self._cache.pop(lead.id, None)
        return lead

    def _remember(self, loaded: Loaded) -> None:
        lead_id = loaded.lead.id
        self._cache[lead_id] = loaded
        self._cache.move_to_end(lead_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _evict(self, leads: dict[UUID, Loaded]) -> None:
        for lead_id in leads:
            self._cache.pop(lead_id, None)


#: The handler of each command type.
_HANDLERS: dict[type[cmd.Command], Callable[[LeadLedger, Any, _Attempt, _Stamp], Lead]] = {
    cmd.Capture: LeadLedger._capture,
    cmd.Touch: LeadLedger._touch,
    cmd.Score: LeadLedger._score,
    cmd.Assign: LeadLedger._assign,
    cmd.Contact: LeadLedger._contact,
    cmd.Transition: LeadLedger._transition,
    cmd.Consent: LeadLedger._consent,
    cmd.Erase: LeadLedger._erase,
}
