"""The application service: run commands against leads, in batches, with retries."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal
from uuid import UUID

from lifecycle import commands as cmd
from lifecycle.errors import ConcurrencyConflict, InvalidCommand, LifecycleError, UnknownLead
from lifecycle.lead import Lead
from lifecycle.privacy import normalize_email
from lifecycle.recorders import ScrubIncomplete
from lifecycle.settings import Settings
from lifecycle.store import Changes, LeadStore, Loaded, StoreConflict

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
        working, absent = self._prefetch(commands)
        changes = Changes()
        applied: list[int] = []
        for i, command in enumerate(commands):
            key = command.message_key
            if key is not None and (key in seen or key in batch_keys):
                outcomes[i] = Outcome("duplicate")
                continue
            if isinstance(command, cmd.Erase) and self._already_erased(command, working):
                outcomes[i] = self._repeat_erasure(command)
                continue
            try:
                lead, event_name = self._apply(command, working, changes, use_cache=True, absent=absent)
            except LifecycleError as exc:
                outcomes[i] = Outcome("refused", error=str(exc))
                continue
            if key is not None:
                batch_keys.add(key)
                changes.inbound.append((key[0], key[1], lead.id, lead.version))
            outcomes[i] = Outcome("applied", lead.id, lead.version, event_name)
            applied.append(i)
        changes.leads = list(working.values())
        try:
            self.store.commit(changes)
        except StoreConflict:
            self._evict(working)
            for i in applied:
                outcomes[i] = self._execute_alone(commands[i])
        except BaseException:
            self._evict(working)
            raise
        else:
            for loaded in working.values():
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

    def _prefetch(self, commands: Sequence[cmd.LeadCommand]) -> tuple[dict[UUID, Loaded], set[UUID]]:
        """Load, in one query, the leads the batch names that the cache does not hold.

        Returns those found and the ids known not to be stored (new leads)."""
        wanted: set[UUID] = set()
        cached: dict[UUID, int] = {}
        for command in commands:
            try:
                if isinstance(command, cmd.Capture):
                    lead_id = self.store.secrets.lead_id_for_email(command.email)
                else:
                    lead_id = self.lead_id_for(command.lead)
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
        return found, wanted - found.keys()

    def _already_erased(self, command: cmd.Erase, working: dict[UUID, Loaded]) -> bool:
        try:
            lead_id = self.lead_id_for(command.lead)
        except LifecycleError:
            return False
        loaded = working.get(lead_id) or self._cache.get(lead_id) or self.store.load(lead_id)
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
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                # jittered backoff so racing writers stop colliding in lock-step
                time.sleep(random.uniform(0.002, 0.01) * 2**attempt)
            key = command.message_key
            if key is not None and self.store.seen([key]):
                return Outcome("duplicate")
            working: dict[UUID, Loaded] = {}
            changes = Changes()
            try:
                lead, event_name = self._apply(command, working, changes, use_cache=False, absent=set())
            except LifecycleError as exc:
                return Outcome("refused", error=str(exc))
            if key is not None:
                changes.inbound.append((key[0], key[1], lead.id, lead.version))
            changes.leads = list(working.values())
            try:
                self.store.commit(changes)
            except StoreConflict:
                continue
            for loaded in working.values():
                self._remember(loaded)
            return Outcome("applied", lead.id, lead.version, event_name)
        lead_ref = getattr(command, "lead", None)
        lead_id = self.lead_id_for(lead_ref) if lead_ref else None
        error = ConcurrencyConflict(lead_id, MAX_ATTEMPTS) if lead_id else None
        return Outcome("refused", lead_id, error=str(error or "conflict: retry the command"))

    def _get(self, lead_id: UUID, working: dict[UUID, Loaded], use_cache: bool,
             absent: set[UUID]) -> Loaded | None:
        loaded = working.get(lead_id)
        if loaded is None and use_cache:
            loaded = self._cache.get(lead_id)
        if loaded is None and lead_id not in absent:
            loaded = self.store.load(lead_id)
        if loaded is not None:
            working[lead_id] = loaded
        return loaded

    def _apply(
        self,
        command: cmd.LeadCommand,
        working: dict[UUID, Loaded],
        changes: Changes,
        *,
        use_cache: bool,
        absent: set[UUID],
    ) -> tuple[Lead, str]:
        """Run one command on the working set; returns the lead and the event it recorded."""
        at, actor = command.occurred_at, command.actor
        causation = f"{command.message_key[0]}/{command.message_key[1]}" if command.message_key else None
        if isinstance(command, cmd.Capture):
            email = command.email.strip()
            if "@" not in email:
                raise InvalidCommand(None, f"a capture needs a valid e-mail (--email), got {email!r}")
            lead_id = self.store.secrets.lead_id_for_email(email)
            loaded = self._get(lead_id, working, use_cache, absent)
            if loaded is not None:
                # SPEC §2: a known person's capture is a touch on their lead.
                loaded.lead.touch(
                    channel=command.channel,
                    campaign=command.campaign,
                    kind="recapture",
                    occurred_at=at,
                    actor=actor,
                    causation=causation,
                )
                return loaded.lead, "LeadTouched"
            lead = Lead.capture(
                lead_id,
                channel=command.channel,
                campaign=command.campaign,
                company=command.company,
                consent=command.consent,
                email=normalize_email(email),
                name=command.name,
                phone=command.phone,
                occurred_at=at,
                actor=actor,
                causation=causation,
            )
            changes.new_keys[lead_id] = self.store.secrets.new_data_key(lead_id)
            working[lead_id] = Loaded(lead)
            return lead, "LeadCaptured"

        lead_id = self.lead_id_for(command.lead)
        loaded = self._get(lead_id, working, use_cache, absent)
        if loaded is None:
            raise UnknownLead(str(command.lead))
        lead = loaded.lead
        before = lead.version
        if isinstance(command, cmd.Touch):
            lead.touch(channel=command.channel, campaign=command.campaign, kind=command.kind,
                       occurred_at=at, actor=actor, causation=causation)
        elif isinstance(command, cmd.Score):
            lead.record_score(total=command.total, fit=command.fit, behaviour=command.behaviour,
                              occurred_at=at, actor=actor, causation=causation)
        elif isinstance(command, cmd.Assign):
            lead.assign(owner=command.owner, rule=command.rule, occurred_at=at, actor=actor,
                        causation=causation)
        elif isinstance(command, cmd.Contact):
            lead.contact(owner=command.owner, occurred_at=at, actor=actor, causation=causation)
        elif isinstance(command, cmd.Transition):
            lead.transition(
                command.trigger,
                reason=command.reason,
                amount=command.amount,
                currency=command.currency,
                override=command.override,
                bant=command.bant,
                mql_threshold=self.settings.mql_threshold,
                occurred_at=at,
                actor=actor,
                causation=causation,
            )
        elif isinstance(command, cmd.Consent):
            lead.set_consent(given=command.given, purpose=command.purpose, occurred_at=at,
                             actor=actor, causation=causation)
        elif isinstance(command, cmd.Erase):
            lead.erase_personal_data(reason=command.reason, occurred_at=at, actor=actor)
            changes.erase.append(lead_id)
            self._cache.pop(lead_id, None)
        else:  # pragma: no cover - the union is exhaustive
            raise InvalidCommand(lead_id, f"unknown command {type(command).__name__}")
        assert lead.version == before + 1
        return lead, type(lead.pending_events[-1]).__name__

    def _remember(self, loaded: Loaded) -> None:
        lead_id = loaded.lead.id
        self._cache[lead_id] = loaded
        self._cache.move_to_end(lead_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _evict(self, working: dict[UUID, Loaded]) -> None:
        for lead_id in working:
            self._cache.pop(lead_id, None)
