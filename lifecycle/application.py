"""The application service: run commands against leads, in batches, with retries."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict
from uuid import UUID, uuid4

import orjson

from lifecycle.domain import commands as cmd
from lifecycle.domain.errors import ConcurrencyConflict, InvalidCommand, LifecycleError, UnknownLead
from lifecycle.domain.events import OPERATOR_ACTORS
from lifecycle.domain.lead import Lead
from lifecycle.operations.scoring import threshold_of
from lifecycle.policies import PolicyStream
from lifecycle.privacy import InvalidEmail, normalize_email
from lifecycle.settings import Settings
from lifecycle.store.repository import Changes, LeadStore, Loaded, StoreConflict
from lifecycle.store.sqlite import APPLIED, REFUSED, InboundRow, MessageOutcome, ScrubIncomplete
from schemas.codec import format_time
from schemas.firmographics import InvalidAttribute, clean_attributes, email_domain, email_domain_kind
from schemas.inbound import DIGEST_HEX

#: attempts of one command alone (after its batch kept conflicting)
MAX_ATTEMPTS = 8
#: attempts of a whole batch on fresh state before its commands are tried one at a time
BATCH_ATTEMPTS = 3
#: how far after the recording clock an `occurred_at` may be (clock skew), no more
FUTURE_TOLERANCE = timedelta(minutes=5)
#: the dead-letter reason of a message whose key was applied or refused before with other content
KEY_REUSED = "idempotency key reused with different content"
#: what each actor reserved for leadledger's own decisions (OPERATOR_ACTORS) is
RESERVED_FOR = {"router": "leadledger's router", "sla": "leadledger's SLA clocks", "scorer": "leadledger's scorer"}


def command_digest(command: cmd.LeadCommand) -> str:
    """The digest of a command given without one (not from an inbound message's bytes): SHA-256 of
    the canonical JSON of its fields."""
    fields = dataclasses.asdict(command)
    fields["command"] = type(command).__name__
    return hashlib.sha256(orjson.dumps(fields, default=str, option=orjson.OPT_SORT_KEYS)).hexdigest()[:DIGEST_HEX]


@dataclass(frozen=True)
class Outcome:
    """What became of one command."""

    status: Literal["applied", "duplicate", "refused"]
    lead_id: UUID | None = None
    version: int | None = None
    event: str | None = None
    error: str | None = None
    warning: str | None = None  # applied, but something needs the operator's attention
    #: a duplicate of a message that was refused the first time: why it was (it stays refused)
    refused_before: str | None = None

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
            **({"refused_before": self.refused_before} if self.refused_before else {}),
        }


class _Stamp(TypedDict):
    """When a command's event happened, who caused it, and the inbound message that did (if any)."""

    occurred_at: datetime
    actor: str
    causation: str | None


@dataclass
class _Attempt:
    """What one attempt at storing commands works on: the leads it loaded or created, the writes
    it collects, and where it may look for leads (the cache; ids known to be new; the e-mail
    index rows it read; the e-mails it resolved or gave a new lead)."""

    use_cache: bool
    absent: set[UUID] = field(default_factory=set)
    leads: dict[UUID, Loaded] = field(default_factory=dict)
    changes: Changes = field(default_factory=Changes)
    indexed: dict[str, UUID] = field(default_factory=dict)  # e-mail key -> lead, as the index says
    looked_up: set[str] = field(default_factory=set)  # e-mail keys the index was asked about
    emails: dict[str, UUID] = field(default_factory=dict)  # e-mail key -> its live lead in this attempt


class LeadLedger:
    """Commands in, events stored. One instance per process; not thread-safe."""

    def __init__(self, store: LeadStore, settings: Settings, cache_size: int = 20_000) -> None:
        self.store = store
        self.settings = settings
        self._cache: OrderedDict[UUID, Loaded] = OrderedDict()
        self._cache_size = cache_size
        self._threshold_of: tuple[int, bytes] | None = None  # the policy versions `_threshold` was read from
        self._threshold = settings.mql_threshold

    # ---- public ---------------------------------------------------------------

    def execute(self, command: cmd.LeadCommand) -> Outcome:
        return self.execute_batch([command])[0]

    def execute_batch(
        self, commands: Sequence[cmd.LeadCommand], digests: Sequence[str | None] | None = None
    ) -> list[Outcome]:
        """Apply commands in order and store all their events in ONE transaction.

        Every command with a message key has its outcome recorded with its key in that same
        transaction, applied or refused, with `digests[i]` (the digest of the message's
        content; default: of the command): a key recorded before is a duplicate whatever its
        first outcome, unless its content differs (then it is refused, KEY_REUSED). Refused
        commands append no event. If another writer raced us, the batch is decided again on
        fresh state (BATCH_ATTEMPTS), then each command alone (bounded retries).
        """
        given = list(digests) if digests is not None else [None] * len(commands)
        if len(given) != len(commands):
            raise ValueError("one digest per command")
        wanted = [d if d is not None or c.message_key is None else command_digest(c)
                  for c, d in zip(commands, given, strict=True)]
        tried = None
        for attempt_no in range(BATCH_ATTEMPTS):
            if attempt_no:
                time.sleep(random.uniform(0.002, 0.01) * 2**attempt_no)
            tried = self._try_batch(commands, wanted)
            if tried is not None:
                break
        if tried is None:
            tried = [self._execute_alone(c, d) for c, d in zip(commands, wanted, strict=True)], []
        outcomes, erased = tried
        if erased:
            warning = self._scrub(erased)
            if warning:
                outcomes = [replace(o, warning=warning) if o.event == "LeadPersonalDataErased" else o
                            for o in outcomes]
        return outcomes

    def lead_id_for(self, ref: cmd.LeadRef) -> UUID:
        """The id of the lead a reference names; by e-mail, through the e-mail index (an erased
        lead is no longer found by its e-mail): UnknownLead if there is none."""
        if ref.lead_id is not None:
            return ref.lead_id
        if ref.email is None or not ref.email.strip():
            raise InvalidCommand(None, "address the lead by id or by e-mail")
        loaded = self._lead_for_email(self._normalized(ref.email), _Attempt(use_cache=True))
        if loaded is None:
            raise UnknownLead(str(ref))
        return loaded.lead.id

    def load(self, lead_id: UUID) -> Lead | None:
        loaded = self.store.load(lead_id)
        return loaded.lead if loaded else None

    # ---- internals ------------------------------------------------------------

    def _try_batch(
        self, commands: Sequence[cmd.LeadCommand], digests: Sequence[str | None]
    ) -> tuple[list[Outcome], list[UUID]] | None:
        """One attempt at the whole batch: the outcomes and the erased leads, or None if another
        writer got there first (nothing was written; decide again on fresh state)."""
        keys = [c.message_key for c in commands if c.message_key is not None]
        known = self.store.outcomes(keys) if keys else {}
        attempt = self._prefetch(commands)
        changes = attempt.changes
        in_batch: dict[tuple[str, str], MessageOutcome] = {}
        outcomes: list[Outcome] = []
        for command, digest in zip(commands, digests, strict=True):
            key = command.message_key
            first = None if key is None else known.get(key) or in_batch.get(key)
            if key is not None and first is not None:
                outcomes.append(_repeat(key, first, digest))
                continue
            if isinstance(command, cmd.Erase) and self._already_erased(command, attempt.leads):
                outcomes.append(self._repeat_erasure(command))
                continue
            outcome = self._decide(command, attempt)
            if key is not None:
                row = _record(key, digest, outcome)
                changes.inbound.append(row)
                in_batch[key] = row[2:]  # type: ignore[assignment]
            outcomes.append(outcome)
        # the leads in the order the batch first names them (not the order they were looked up in, which
        # follows their random ids): messages of different leads are stored in the order they came
        named: dict[UUID, None] = dict.fromkeys(
            o.lead_id for o in outcomes if o.lead_id is not None and o.lead_id in attempt.leads)
        changes.leads = [attempt.leads[i] for i in named] + [
            loaded for i, loaded in attempt.leads.items() if i not in named]
        try:
            self.store.commit(changes)
        except StoreConflict:
            self._evict(attempt.leads)
            return None
        except BaseException:
            self._evict(attempt.leads)
            raise
        for loaded in attempt.leads.values():
            self._remember(loaded)
        return outcomes, changes.erase

    def _decide(self, command: cmd.LeadCommand, attempt: _Attempt) -> Outcome:
        try:
            lead, event_name = self._apply(command, attempt)
        except LifecycleError as exc:
            return Outcome("refused", getattr(exc, "lead_id", None), error=str(exc))
        return Outcome("applied", lead.id, lead.version, event_name)

    def _prefetch(self, commands: Sequence[cmd.LeadCommand]) -> _Attempt:
        """Look up, in one query, the e-mails the batch names, and load, in one more, the leads
        it names that the cache does not hold.

        The batch's attempt starts with those found and the ids known not to be stored (new leads)."""
        attempt = _Attempt(use_cache=True)
        ids: set[UUID] = set()
        emails: set[str] = set()
        for command in commands:
            email = command.email if isinstance(command, cmd.Capture) else command.lead.email
            if isinstance(command, cmd.Capture) or command.lead.lead_id is None:
                if email:
                    emails.add(email)
            else:
                ids.add(command.lead.lead_id)
        ids.update(self._look_up(emails, attempt))
        wanted: set[UUID] = set()
        cached: dict[UUID, int] = {}
        for lead_id in ids:
            hit = self._cache.get(lead_id)
            if hit is None:
                wanted.add(lead_id)
            else:
                cached[lead_id] = hit.lead.version
        # Another process may have appended to a cached lead: decide on fresh state, so a
        # refusal is never based on stale data.
        for lead_id in self.store.stale(cached) if cached else ():
            self._cache.pop(lead_id, None)
            wanted.add(lead_id)
        found = self.store.load_many(wanted) if wanted else {}
        attempt.absent = wanted - found.keys()
        attempt.leads = found
        return attempt

    def _look_up(self, emails: set[str], attempt: _Attempt) -> set[UUID]:
        """Ask the e-mail index about these e-mails (once each per attempt); returns the lead ids
        they may name: the index's, else (stores with leads of old) the legacy ids."""
        keys: dict[str, str] = {}
        for email in emails:
            try:
                normalized = normalize_email(email)
            except InvalidEmail:
                continue  # the command will be refused with its own message
            key = self.store.secrets.email_key(normalized)
            if key not in attempt.looked_up:
                keys[key] = normalized
        if not keys:
            return set()
        attempt.looked_up.update(keys)
        found = self.store.lookup_emails(keys)
        attempt.indexed.update(found)
        ids = set(found.values())
        if self.store.legacy_ids:
            ids.update(self.store.secrets.legacy_lead_id(e) for key, e in keys.items() if key not in found)
        return ids

    def _lead_for_email(self, email: str, attempt: _Attempt, key: str | None = None) -> Loaded | None:
        """The live (not erased) lead of a normalized e-mail (`key`: its index key, if known): one
        this attempt created or found, else the index's, else (stores with leads of old) the one
        whose id is the e-mail's HMAC."""
        key = key or self.store.secrets.email_key(email)
        known = attempt.emails.get(key)
        if known is not None:
            loaded = self._get(known, attempt)
            if loaded is not None and not loaded.lead.erased:
                return loaded
            attempt.emails.pop(key, None)  # erased in this batch
        if key not in attempt.looked_up:
            self._look_up({email}, attempt)
        indexed = attempt.indexed.get(key)
        candidates = [indexed] if indexed is not None else (
            [self.store.secrets.legacy_lead_id(email)] if self.store.legacy_ids else [])
        for lead_id in candidates:
            loaded = self._get(lead_id, attempt)
            if loaded is None:
                continue
            if loaded.lead.erased:  # never attach to an erased lead
                if lead_id == indexed and (key, lead_id) not in attempt.changes.unindex:
                    attempt.changes.unindex.append((key, lead_id))
                continue
            attempt.emails[key] = lead_id
            return loaded
        return None

    def _normalized(self, email: str) -> str:
        try:
            return normalize_email(email)
        except InvalidEmail as exc:
            raise InvalidCommand(None, str(exc)) from None

    def _already_erased(self, command: cmd.Erase, leads: dict[UUID, Loaded]) -> bool:
        lead_id = command.lead.lead_id  # an erased lead's e-mail no longer finds it
        if lead_id is None:
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
            ids = ", ".join(str(lead) for lead in lead_ids)
            return f"erasure of lead {ids} recorded, but not yet scrubbed from disk: {exc}"
        return None

    def _execute_alone(self, command: cmd.LeadCommand, digest: str | None) -> Outcome:
        key = command.message_key
        for retry in range(MAX_ATTEMPTS):
            if retry:
                # jittered backoff so racing writers stop colliding in lock-step
                time.sleep(random.uniform(0.002, 0.01) * 2**retry)
            first = self.store.outcomes([key]).get(key) if key is not None else None
            if key is not None and first is not None:
                return _repeat(key, first, digest)
            if isinstance(command, cmd.Erase) and self._already_erased(command, {}):
                return self._repeat_erasure(command)
            attempt = _Attempt(use_cache=False)
            outcome = self._decide(command, attempt)
            if key is None and not outcome.applied:
                return outcome
            if key is not None:
                attempt.changes.inbound.append(_record(key, digest, outcome))
            attempt.changes.leads = list(attempt.leads.values())
            try:
                self.store.commit(attempt.changes)
            except StoreConflict:
                continue
            for loaded in attempt.leads.values():
                self._remember(loaded)
            if attempt.changes.erase:
                warning = self._scrub(attempt.changes.erase)
                return replace(outcome, warning=warning) if warning else outcome
            return outcome
        lead_ref = getattr(command, "lead", None)
        lead_id = lead_ref.lead_id if lead_ref is not None else None
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
        _check_actor(command.actor)
        now = datetime.now(UTC)
        if command.occurred_at > now + FUTURE_TOLERANCE:
            raise InvalidCommand(
                None,
                f"occurred_at {format_time(command.occurred_at)} is more than "
                f"{FUTURE_TOLERANCE.seconds // 60} minutes after the recording clock ({format_time(now)}): "
                "check the upstream clock (a time in the future is refused)",
            )
        at: _Stamp = {
            "occurred_at": command.occurred_at,
            "actor": command.actor,
            "causation": f"{command.message_key[0]}/{command.message_key[1]}" if command.message_key else None,
        }
        lead = handler(self, command, attempt, at)
        return lead, type(lead.pending_events[-1]).__name__

    def _lead(self, ref: cmd.LeadRef, attempt: _Attempt) -> Lead:
        """The stored (or just created) lead a command addresses."""
        if ref.lead_id is not None:
            loaded = self._get(ref.lead_id, attempt)
        elif ref.email is not None and ref.email.strip():
            loaded = self._lead_for_email(self._normalized(ref.email), attempt)
        else:
            raise InvalidCommand(None, "address the lead by id or by e-mail")
        if loaded is None:
            raise UnknownLead(str(ref))
        return loaded.lead

    # ---- one handler per command type (see _HANDLERS); each records one event -------

    def _capture(self, command: cmd.Capture, attempt: _Attempt, at: _Stamp) -> Lead:
        email = self._normalized(command.email)
        attributes = self._attributes(command, email)
        key = self.store.secrets.email_key(email)
        loaded = self._lead_for_email(email, attempt, key)
        if loaded is not None:
            # a known person's capture is a touch on their lead, with what it said of them
            loaded.lead.touch(channel=command.channel, campaign=command.campaign, kind="recapture",
                              consent=command.consent, company=command.company, name=command.name,
                              phone=command.phone, **at)
            if loaded.lead.id not in attempt.changes.new_keys:
                attempt.changes.sealing.add(loaded.lead.id)  # sealed with the lead's stored key
            return loaded.lead
        lead_id = uuid4()
        lead = Lead.capture(
            lead_id,
            channel=command.channel,
            campaign=command.campaign,
            company=command.company,
            consent=command.consent,
            email=email,
            name=command.name,
            phone=command.phone,
            attributes=attributes,
            **at,
        )
        attempt.changes.new_keys[lead_id] = self.store.secrets.new_data_key(lead_id)
        attempt.changes.emails.append((key, lead_id))
        attempt.leads[lead_id] = Loaded(lead)
        attempt.emails[key] = lead_id
        return lead

    def _attributes(self, command: cmd.Capture, email: str) -> dict[str, Any]:
        """A capture's firmographic attributes (those given, normalized) and what the normalized
        e-mail's domain says: `email_domain_kind`, and for a business domain its `account_key`.
        A bad value refuses the capture (even a re-capture, which records none of them)."""
        try:
            attributes = clean_attributes(country=command.country, industry=command.industry,
                                          employees=command.employees, role=command.role,
                                          language=command.language)
        except InvalidAttribute as exc:
            raise InvalidCommand(None, str(exc)) from None
        domain = email_domain(email)
        attributes["email_domain_kind"] = kind = email_domain_kind(domain)
        if kind == "business":
            attributes["account_key"] = self.store.secrets.account_key(domain)
        return attributes

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
            mql_threshold=self.mql_threshold() if command.trigger == "qualify_mql" else self.settings.mql_threshold,
            **at,
        )
        return lead

    def mql_threshold(self) -> int:
        """The score an MQL needs now: the latest published policy's `[scoring]` threshold, else the
        configured one (LEADLEDGER_MQL_THRESHOLD). Read per qualification, parsed once per version."""
        bodies = self.store.policy_bodies()
        if not bodies:
            return self.settings.mql_threshold
        key = (len(bodies), bodies[-1])
        if self._threshold_of != key:
            latest = PolicyStream(self.store).versions()[-1].policy.scoring
            self._threshold_of, self._threshold = key, threshold_of(latest, self.settings.mql_threshold)
        return self._threshold

    def _consent(self, command: cmd.Consent, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        lead.set_consent(given=command.given, purpose=command.purpose, **at)
        return lead

    def _erase(self, command: cmd.Erase, attempt: _Attempt, at: _Stamp) -> Lead:
        lead = self._lead(command.lead, attempt)
        # no causation: an erasure is an operator's act, never an inbound message's
        lead.erase_personal_data(reason=command.reason, occurred_at=at["occurred_at"], actor=at["actor"])
        attempt.changes.erase.append(lead.id)
        # an index row this attempt would add for it goes too (the erase deletes the stored ones)
        attempt.changes.emails = [row for row in attempt.changes.emails if row[1] != lead.id]
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


def _check_actor(actor: str) -> None:
    """Refuse a command in the name of leadledger's own decisions (OPERATOR_ACTORS, any case):
    what they record must have been decided by leadledger, never claimed by a caller."""
    name = actor.strip().lower()
    if name in OPERATOR_ACTORS:
        raise InvalidCommand(None, (
            f"actor {actor!r} is reserved for {RESERVED_FOR.get(name, 'leadledger itself')}, whose decisions "
            "leadledger records itself: use another actor (the CLI: set LEADLEDGER_ACTOR; an inbound "
            "message: another source)"))


def _record(key: tuple[str, str], digest: str | None, outcome: Outcome) -> InboundRow:
    """A keyed message's record, written with the batch's events."""
    if outcome.applied:
        return key[0], key[1], APPLIED, digest, None, outcome.lead_id, outcome.version
    return key[0], key[1], REFUSED, digest, outcome.error, outcome.lead_id, None


def _repeat(key: tuple[str, str], first: MessageOutcome, digest: str | None) -> Outcome:
    """A message whose key was recorded before: a duplicate (nothing changes) when its content
    is the same, whatever its first outcome was; refused (KEY_REUSED) when it differs."""
    outcome, recorded, reason, lead_id, version = first
    if recorded is not None and digest is not None and recorded != digest:
        return Outcome("refused", lead_id, error=(
            f"{KEY_REUSED}: message {key[1]!r} of source {key[0]!r} was {outcome} before with other "
            "content; a new message needs a new id (an identical repeat is a duplicate)"))
    if outcome == APPLIED:
        return Outcome("duplicate", lead_id, version)
    return Outcome("duplicate", lead_id, refused_before=reason or "refused")
