"""Stateful property test: random command sequences against the Lead and an independent model of SPEC §2.

The model below is written from the specification alone (its own table, its own
guards, its own time rules: nothing before the capture, no stage change before the
latest one); it does not import lifecycle.domain.stages. After every step the Lead and
the model agree on the stage, on whether the command was refused and on the version;
the Lead rebuilt from its own events, directly and through the wire codec,
equals the live one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lifecycle.domain.errors import (
    GuardFailed,
    ImpossibleTime,
    InvalidCommand,
    InvalidTransition,
    LifecycleError,
)
from lifecycle.domain.events import LeadEvent
from lifecycle.domain.lead import Lead
from schemas import codec

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

# ---------------------------------------------------------------- the reference model (SPEC §2)

MODEL_SOURCES: dict[str, set[str]] = {
    "nurture": {"captured", "recycled"},
    "qualify_mql": {"captured", "nurtured", "recycled"},
    "accept": {"mql"},
    "reject": {"mql", "sal"},
    "qualify_sql": {"sal"},
    "win": {"sql"},
    "lose": {"sql"},
    "recycle": {"sal", "sql", "won", "lost"},
    "disqualify": {"captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost"},
}
MODEL_DEST = {
    "nurture": "nurtured",
    "qualify_mql": "mql",
    "accept": "sal",
    "reject": "recycled",
    "qualify_sql": "sql",
    "win": "won",
    "lose": "lost",
    "recycle": "recycled",
    "disqualify": "disqualified",
}
MODEL_EVENT = {
    "nurture": "LeadNurtured",
    "qualify_mql": "LeadQualifiedAsMQL",
    "accept": "LeadAcceptedBySales",
    "reject": "LeadRejectedBySales",
    "qualify_sql": "LeadQualifiedAsSQL",
    "win": "LeadWon",
    "lose": "LeadLost",
    "recycle": "LeadRecycled",
    "disqualify": "LeadDisqualified",
}


def present(text: str | None) -> bool:
    return text is not None and text.strip() != ""


def iso_4217(text: str | None) -> bool:
    code = (text or "").strip()
    return len(code) == 3 and code.isascii() and code.isalpha()


def deal_ok(data: dict[str, Any]) -> bool:
    """A deal's amount and currency as SPEC §2 bounds them."""
    amount = data.get("amount")
    return amount is not None and 0 < amount <= 1e12 and iso_4217(data.get("currency"))


class Model:
    """What SPEC §2 says a lead is, and whether it accepts a trigger."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.stage = "captured"
        self.score: int | None = None
        self.owner: str | None = None
        self.version = 1
        self.erased = False
        self.captured_at = T0
        self.last_change_at = T0  # the capture is the first stage change

    def when(self, at: datetime, stage_change: bool) -> str:
        """'ok', or 'time': before the capture, or a stage change before the latest one."""
        if at < self.captured_at or (stage_change and at < self.last_change_at):
            return "time"
        return "ok"

    def verdict(self, trigger: str, data: dict[str, Any]) -> str:
        """'ok', 'not allowed' (table) or 'guard' (guard failed)."""
        if self.stage not in MODEL_SOURCES[trigger]:
            return "not allowed"
        reason_ok = present(data.get("reason"))
        if trigger == "qualify_mql":
            ok = reason_ok if data.get("override") else (self.score is not None and self.score >= self.threshold)
        elif trigger == "accept":
            ok = self.owner is not None
        elif trigger in ("reject", "lose", "recycle", "disqualify"):
            ok = reason_ok
        elif trigger == "qualify_sql":
            bant = data.get("bant") or {}
            ok = all(present(bant.get(k)) for k in ("budget", "authority", "need", "timeline"))
            if data.get("amount") is not None or present(data.get("currency")):  # an expected deal: both valid
                ok = ok and deal_ok(data)
        elif trigger == "win":
            ok = deal_ok(data)
        else:
            ok = True
        return "ok" if ok else "guard"

    def apply(self, trigger: str, at: datetime) -> None:
        self.stage = MODEL_DEST[trigger]
        self.last_change_at = at
        if trigger in ("reject", "recycle"):
            self.owner = None  # handed back to marketing
        self.version += 1


# ---------------------------------------------------------------- strategies

reasons = st.sampled_from([None, "", "   ", "not now", "  budget frozen "])
amounts = st.sampled_from([None, 0.0, -1.0, 0.01, 1500.0, 250_000.0, 1e12, 1.0000001e12, 1.7e308])
currencies = st.sampled_from([None, "", " ", "eur", "USD", " chf ", "EURO", "E1R"])
bant_answer = st.sampled_from([None, "", "  ", "yes", "CFO", "Q3"])
FULL_BANT = {"budget": "50k", "authority": "CFO", "need": "reporting", "timeline": "Q3"}
bants = st.none() | st.just(FULL_BANT) | st.fixed_dictionaries(
    {},
    optional={k: bant_answer for k in ("budget", "authority", "need", "timeline")},
)
owners = st.sampled_from(["olivia", "bruno", " chen ", "", "  "])
minutes = st.integers(min_value=-600, max_value=6000)


class LeadVersusSpec(RuleBasedStateMachine):
    @initialize(threshold=st.integers(0, 100), consent=st.none() | st.booleans(),
                campaign=st.none() | st.sampled_from(["", "q1-cloud"]))
    def capture(self, threshold: int, consent: bool | None, campaign: str | None) -> None:
        self.data_key = AESGCM.generate_key(bit_length=256)
        self.lead = Lead.capture(uuid4(), channel="webinar", campaign=campaign, occurred_at=T0,
                                 actor="prop", consent=consent, email="ada@example.com",
                                 name="Ada", phone="+41 44 000")
        self.model = Model(threshold)
        self.clock = T0
        self.step_kinds: list[str] = []

    def _at(self, offset: int) -> datetime:
        # upstream times may arrive out of order
        return self.clock + timedelta(minutes=offset)

    def _expect_ok_or(self, verdict: str, action: Any, expected_event: str | None) -> None:
        version_before = self.lead.version
        pending_before = list(self.lead.pending_events)
        if verdict == "ok":
            action()
            assert self.lead.version == version_before + 1
            assert type(self.lead.pending_events[-1]).__name__ == expected_event
            self.step_kinds.append(expected_event or "?")
            return
        error_type = {"not allowed": InvalidTransition, "guard": GuardFailed, "invalid": InvalidCommand,
                      "time": ImpossibleTime}[verdict]
        try:
            action()
        except LifecycleError as exc:
            assert type(exc) is error_type, f"expected {error_type.__name__}, got {exc!r}"
            assert str(self.lead.id) in str(exc)
        else:
            raise AssertionError(f"the lead accepted what the spec refuses ({verdict})")
        assert self.lead.version == version_before
        assert list(self.lead.pending_events) == pending_before

    @rule(trigger=st.sampled_from(sorted(MODEL_SOURCES)), reason=reasons, override=st.booleans(),
          amount=amounts, currency=currencies, bant=bants, offset=minutes)
    def transition(self, trigger: str, reason: str | None, override: bool, amount: float | None,
                   currency: str | None, bant: dict[str, str] | None, offset: int) -> None:
        data = {"reason": reason, "override": override, "amount": amount, "currency": currency, "bant": bant}
        verdict = self.model.verdict(trigger, data)
        if verdict == "ok":
            verdict = self.model.when(self._at(offset), stage_change=True)
        from_stage = self.model.stage

        def act() -> None:
            self.lead.transition(trigger, occurred_at=self._at(offset), actor="prop",
                                 mql_threshold=self.model.threshold, **data)

        self._expect_ok_or(verdict, act, MODEL_EVENT[trigger])
        if verdict == "ok":
            event = self.lead.pending_events[-1]
            assert (event.from_stage.value, event.to_stage.value) == (from_stage, MODEL_DEST[trigger])  # type: ignore[attr-defined]
            self.model.apply(trigger, self._at(offset))
            event_note(f"entered {self.model.stage}")

    @rule(data=st.data(), offset=minutes)
    def advance(self, data: st.DataObject, offset: int) -> None:
        """Fire a trigger the model allows from here (keeps walks long); the guard data is random."""
        allowed = sorted(t for t, sources in MODEL_SOURCES.items()
                         if self.model.stage in sources and t != "disqualify")
        forward = [t for t in allowed if t in ("qualify_mql", "accept", "qualify_sql", "win")]
        allowed += forward * 3  # favour the main path so walks get deep
        if not allowed:
            return
        trigger = data.draw(st.sampled_from(allowed), label="trigger")
        good = data.draw(st.booleans(), label="good data")
        if good:
            if trigger == "accept" and self.model.owner is None:
                self.assign(data.draw(owners), offset)
            self.transition(trigger, reason="why not", override=data.draw(st.booleans()),
                            amount=99.5, currency="chf", bant=FULL_BANT, offset=offset)
        else:
            self.transition(trigger, data.draw(reasons), data.draw(st.booleans()), data.draw(amounts),
                            data.draw(currencies), data.draw(bants), offset)

    @rule(total=st.integers(-5, 105), offset=minutes)
    def score(self, total: int, offset: int) -> None:
        verdict = self.model.when(self._at(offset), False) if 0 <= total <= 100 else "invalid"
        self._expect_ok_or(verdict, lambda: self.lead.record_score(total=total, occurred_at=self._at(offset),
                                                                   actor="prop"), "LeadScored")
        if verdict == "ok":
            self.model.score = total
            self.model.version += 1

    @rule(owner=owners, offset=minutes)
    def assign(self, owner: str, offset: int) -> None:
        verdict = self.model.when(self._at(offset), False) if present(owner) else "invalid"
        self._expect_ok_or(verdict, lambda: self.lead.assign(owner=owner, occurred_at=self._at(offset),
                                                             actor="prop"), "LeadAssigned")
        if verdict == "ok":
            self.model.owner = owner.strip()
            self.model.version += 1

    @rule(owner=st.none() | owners, offset=minutes)
    def contact(self, owner: str | None, offset: int) -> None:
        verdict = (self.model.when(self._at(offset), False) if present(owner) or self.model.owner is not None
                   else "invalid")
        self._expect_ok_or(verdict, lambda: self.lead.contact(owner=owner, occurred_at=self._at(offset),
                                                              actor="prop"), "LeadContacted")
        if verdict == "ok":
            self.model.version += 1

    @rule(channel=st.sampled_from(["email", "paid_search", "", " ", " Paid_Search ", "EMAIL"]),
          campaign=st.sampled_from([None, "", "Q1-Cloud ", "q1-cloud"]), offset=minutes)
    def touch(self, channel: str, campaign: str | None, offset: int) -> None:
        verdict = self.model.when(self._at(offset), False) if present(channel) else "invalid"
        self._expect_ok_or(verdict, lambda: self.lead.touch(channel=channel, campaign=campaign,
                                                            occurred_at=self._at(offset), actor="prop",
                                                            kind="page_view"), "LeadTouched")
        if verdict == "ok":
            self.model.version += 1
            touched = self.lead.pending_events[-1]
            # keys are stored trimmed and lower-case
            assert touched.channel == channel.strip().lower()  # type: ignore[attr-defined]
            assert touched.campaign == (campaign.strip().lower() if present(campaign) else None)  # type: ignore[attr-defined]

    @rule(given=st.booleans(), offset=minutes)
    def consent(self, given: bool, offset: int) -> None:
        name = "LeadConsentGiven" if given else "LeadConsentWithdrawn"
        verdict = self.model.when(self._at(offset), False)
        self._expect_ok_or(verdict, lambda: self.lead.set_consent(given=given, occurred_at=self._at(offset),
                                                                  actor="prop"), name)
        if verdict == "ok":
            self.model.version += 1

    @precondition(lambda self: len(self.step_kinds) > 3)
    @rule()
    def erase(self) -> None:
        verdict = "invalid" if self.model.erased else "ok"
        self._expect_ok_or(verdict, lambda: self.lead.erase_personal_data(occurred_at=self.clock,
                                                                          actor="prop"),
                           "LeadPersonalDataErased")
        if verdict == "ok":
            self.model.erased = True
            self.model.version += 1

    @rule(hours=st.integers(1, 48))
    def time_passes(self, hours: int) -> None:
        self.clock += timedelta(hours=hours)

    # ---- invariants -------------------------------------------------------------

    @invariant()
    def same_stage_score_owner_version(self) -> None:
        assert self.lead.stage.value == self.model.stage
        assert self.lead.score == self.model.score
        assert self.lead.owner == self.model.owner
        assert self.lead.version == self.model.version
        assert self.lead.erased == self.model.erased

    @invariant()
    def versions_are_contiguous_from_one(self) -> None:
        versions = [e.originator_version for e in self.lead.pending_events]
        assert versions == list(range(1, self.lead.version + 1))

    @invariant()
    def replay_equals_the_live_lead(self) -> None:
        events: list[LeadEvent] = list(self.lead.pending_events)
        live = state_of(self.lead)

        folded = None
        for event in events:
            folded = event.mutate(folded)
        assert folded is not None and state_of(folded) == live

        head = codec.GENESIS
        decoded = None
        for event in events:
            stored, head = codec.encode(event, head, self.data_key)
            record = codec.to_record(stored.originator_id, stored.originator_version, stored.state)
            assert record.envelope["hash"] == head
            decoded = codec.to_domain(record, self.data_key).mutate(decoded)
        assert decoded is not None and state_of(decoded) == live

        # the codec also rebuilds the same lead after the key is gone (erased)
        erased_view = None
        head = codec.GENESIS
        for event in events:
            stored, head = codec.encode(event, head, self.data_key)
            record = codec.to_record(stored.originator_id, stored.originator_version, stored.state)
            erased_view = codec.to_domain(record, None).mutate(erased_view)
        assert erased_view is not None and state_of(erased_view) == live


def state_of(lead: Lead) -> dict[str, Any]:
    state = {k: v for k, v in vars(lead).items() if k != "_pending_events"}
    for value in state.values():
        if isinstance(value, float):
            assert math.isfinite(value)
    return state


LeadVersusSpec.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLeadVersusSpec = LeadVersusSpec.TestCase
