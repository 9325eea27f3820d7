"""The Lead aggregate's stage machine: given events -> command -> expected events (no IO)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import transitions

from lifecycle.domain import events as ev
from lifecycle.domain import stages
from lifecycle.domain.errors import (
    GuardFailed,
    InvalidCommand,
    InvalidTransition,
    LifecycleError,
    UnknownTrigger,
)
from lifecycle.domain.lead import Lead
from lifecycle.domain.stages import Stage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
THRESHOLD = 70
BANT = {"budget": "50k", "authority": "CFO", "need": "reporting", "timeline": "Q3"}

# SPEC §2, written out here on purpose (not read from lifecycle.domain.stages).
SPEC_TABLE: dict[str, tuple[frozenset[str], str]] = {
    "nurture": (frozenset({"captured", "recycled"}), "nurtured"),
    "qualify_mql": (frozenset({"captured", "nurtured", "recycled"}), "mql"),
    "accept": (frozenset({"mql"}), "sal"),
    "reject": (frozenset({"mql", "sal"}), "recycled"),
    "qualify_sql": (frozenset({"sal"}), "sql"),
    "win": (frozenset({"sql"}), "won"),
    "lose": (frozenset({"sql"}), "lost"),
    "recycle": (frozenset({"sal", "sql", "won", "lost"}), "recycled"),
    "disqualify": (
        frozenset({"captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost"}),
        "disqualified",
    ),
}
ALL_STAGES = ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified")

SPEC_EVENTS: dict[str, type[ev.StageChanged]] = {
    "nurture": ev.LeadNurtured,
    "qualify_mql": ev.LeadQualifiedAsMQL,
    "accept": ev.LeadAcceptedBySales,
    "reject": ev.LeadRejectedBySales,
    "qualify_sql": ev.LeadQualifiedAsSQL,
    "win": ev.LeadWon,
    "lose": ev.LeadLost,
    "recycle": ev.LeadRecycled,
    "disqualify": ev.LeadDisqualified,
}

#: Data that satisfies each trigger's guard.
GOOD_DATA: dict[str, dict[str, Any]] = {
    "nurture": {},
    "qualify_mql": {},  # the given history scores the lead above the threshold
    "accept": {},  # the given history assigns an owner
    "reject": {"reason": "not a fit yet"},
    "qualify_sql": {"bant": BANT},
    "win": {"amount": 12_000.0, "currency": "eur"},
    "lose": {"reason": "went with a competitor"},
    "recycle": {"reason": "not now"},
    "disqualify": {"reason": "spam"},
}


def fire(lead: Lead, trigger: str, at: datetime | None = None, **data: Any) -> None:
    lead.transition(trigger, occurred_at=at or T0, actor="test", mql_threshold=THRESHOLD, **data)


def new_lead(lead_id: UUID | None = None) -> Lead:
    return Lead.capture(lead_id or uuid4(), channel="webinar", campaign="q1", occurred_at=T0,
                        actor="test", email="ada@example.com")


#: How to reach each stage from a fresh capture (the "given" history).
PATHS: dict[str, list[Callable[[Lead], None]]] = {}


def _score(total: int) -> Callable[[Lead], None]:
    return lambda lead: lead.record_score(total=total, occurred_at=T0, actor="test")


def _assign(owner: str) -> Callable[[Lead], None]:
    return lambda lead: lead.assign(owner=owner, occurred_at=T0, actor="test")


def _go(trigger: str) -> Callable[[Lead], None]:
    return lambda lead: fire(lead, trigger, **GOOD_DATA[trigger])


PATHS["captured"] = []
PATHS["nurtured"] = [_go("nurture")]
PATHS["mql"] = [_score(85), _go("qualify_mql")]
PATHS["sal"] = [*PATHS["mql"], _assign("olivia"), _go("accept")]
PATHS["sql"] = [*PATHS["sal"], _go("qualify_sql")]
PATHS["won"] = [*PATHS["sql"], _go("win")]
PATHS["lost"] = [*PATHS["sql"], _go("lose")]
PATHS["recycled"] = [*PATHS["mql"], _go("reject")]
PATHS["disqualified"] = [_go("disqualify")]


def given(stage: str, *extra: Callable[[Lead], None]) -> Lead:
    """A lead whose history (already collected, i.e. stored) leaves it in `stage`."""
    lead = new_lead()
    for step in (*PATHS[stage], *extra):
        step(lead)
    assert lead.stage.value == stage
    lead.collect_events()
    return lead


def assert_refused(lead: Lead, error: type[LifecycleError], action: Callable[[], None]) -> LifecycleError:
    """The command raises `error` and leaves the lead exactly as it was."""
    version, stage, owner, score = lead.version, lead.stage, lead.owner, lead.score
    pending_before = list(lead.pending_events)
    with pytest.raises(error) as info:
        action()
    assert lead.version == version
    assert lead.stage == stage
    assert (lead.owner, lead.score) == (owner, score)
    assert lead.pending_events == pending_before
    return info.value


# ---------------------------------------------------------------- every row of the table

ALLOWED_PAIRS = [(t, s) for t, (sources, _) in SPEC_TABLE.items() for s in sorted(sources)]
FORBIDDEN_PAIRS = [(t, s) for t, (sources, _) in SPEC_TABLE.items() for s in ALL_STAGES if s not in sources]


@pytest.mark.parametrize(("trigger", "source"), ALLOWED_PAIRS)
def test_each_allowed_trigger_records_one_stage_event_with_from_and_to(trigger: str, source: str) -> None:
    lead = given(source)
    version = lead.version
    if trigger == "qualify_mql" and lead.score is None:
        lead.record_score(total=90, occurred_at=T0, actor="test")
        lead.collect_events()
        version = lead.version
    if trigger == "accept" and lead.owner is None:
        lead.assign(owner="olivia", occurred_at=T0, actor="test")
        lead.collect_events()
        version = lead.version
    at = T0 + timedelta(days=3)

    fire(lead, trigger, at=at, **GOOD_DATA[trigger])

    (event,) = lead.collect_events()
    dest = SPEC_TABLE[trigger][1]
    assert type(event) is SPEC_EVENTS[trigger]
    assert event.from_stage == Stage(source)
    assert event.to_stage == Stage(dest)
    assert event.originator_version == version + 1
    assert event.occurred_at == at
    assert lead.stage == Stage(dest)
    assert lead.stage_entered_at == at


@pytest.mark.parametrize(("trigger", "source"), FORBIDDEN_PAIRS)
def test_a_trigger_not_allowed_from_the_stage_is_refused_naming_lead_stage_and_trigger(
    trigger: str, source: str
) -> None:
    # Even with data that would satisfy every guard, the table says no.
    lead = given(source, _score(99), _assign("olivia"))
    data = {"reason": "because", "bant": BANT, "amount": 5.0, "currency": "USD", "override": True}

    error = assert_refused(lead, InvalidTransition, lambda: fire(lead, trigger, **data))

    message = str(error)
    assert str(lead.id) in message
    assert f"'{source}'" in message
    assert f"'{trigger}'" in message


def test_the_table_has_no_other_triggers() -> None:
    assert set(stages.TRIGGERS) == set(SPEC_TABLE)
    for rule in stages.TABLE:
        sources, dest = SPEC_TABLE[rule.trigger]
        assert {s.value for s in rule.sources} == sources
        assert rule.dest.value == dest


def test_an_unknown_trigger_is_refused_and_appends_nothing() -> None:
    lead = given("captured")
    error = assert_refused(lead, UnknownTrigger, lambda: fire(lead, "promote", reason="x"))
    assert str(lead.id) in str(error) and "'promote'" in str(error) and "'captured'" in str(error)


# ---------------------------------------------------------------- one shared machine


def test_one_shared_machine_serves_every_lead_and_keeps_no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[object] = []
    original_init = transitions.Machine.__init__

    def counting_init(self: transitions.Machine, *args: Any, **kwargs: Any) -> None:
        created.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(transitions.Machine, "__init__", counting_init)
    for i in range(200):
        lead = given("won" if i % 2 else "lost")
        fire(lead, "recycle", reason="upsell")
        fire(lead, "nurture")
        fire(lead, "disqualify", reason="duplicate")

    assert created == []  # no Machine built per lead or per command
    assert stages.MACHINE.models == []  # the shared machine holds no lead
    assert isinstance(stages.MACHINE, transitions.Machine)


def test_auto_transitions_are_off_so_there_is_no_back_door_to_a_stage() -> None:
    assert stages.MACHINE.auto_transitions is False
    assert "to_mql" not in stages.MACHINE.events
    assert not any(name.startswith("to_") for name in stages.MACHINE.events)
    lead = given("captured")
    assert not hasattr(lead, "to_mql")
    assert_refused(lead, LifecycleError, lambda: fire(lead, "to_mql"))
    assert_refused(lead, LifecycleError, lambda: fire(lead, "to_won"))


# ---------------------------------------------------------------- qualify_mql guard


def _unscored(stage: str) -> Lead:
    lead = new_lead()
    if stage == "nurtured":
        fire(lead, "nurture")
    elif stage == "recycled":
        fire(lead, "qualify_mql", override=True, reason="met at the booth")
        fire(lead, "reject", reason="not ready")
    lead.collect_events()
    assert lead.stage.value == stage and lead.score is None
    return lead


@pytest.mark.parametrize("source", ["captured", "nurtured", "recycled"])
def test_qualify_mql_without_any_score_is_refused_saying_a_score_is_missing(source: str) -> None:
    lead = _unscored(source)
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_mql"))
    assert isinstance(error, GuardFailed)
    assert (error.lead_id, error.stage, error.trigger) == (lead.id, source, "qualify_mql")
    assert str(lead.id) in str(error)
    assert "score" in str(error) and str(THRESHOLD) in str(error)


def test_qualify_mql_below_the_threshold_is_refused_naming_the_score_and_threshold() -> None:
    lead = given("captured", _score(THRESHOLD - 1))
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_mql"))
    assert str(THRESHOLD - 1) in str(error) and str(THRESHOLD) in str(error)
    assert "'captured'" in str(error) and "'qualify_mql'" in str(error)


def test_qualify_mql_at_exactly_the_threshold_records_the_score() -> None:
    lead = given("captured", _score(THRESHOLD))
    fire(lead, "qualify_mql")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadQualifiedAsMQL)
    assert (event.score, event.override, event.reason) == (THRESHOLD, False, None)


def test_qualify_mql_uses_the_latest_score_not_the_best_one() -> None:
    lead = given("captured", _score(95), _score(20))
    assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_mql"))


def test_the_mql_threshold_is_configurable() -> None:
    lead = given("captured", _score(40))
    with pytest.raises(GuardFailed):
        lead.transition("qualify_mql", occurred_at=T0, actor="t", mql_threshold=41)
    lead.transition("qualify_mql", occurred_at=T0, actor="t", mql_threshold=40)
    assert lead.stage is Stage.MQL


@pytest.mark.parametrize("reason", [None, "", "   \t"])
def test_an_override_without_a_non_blank_reason_is_refused(reason: str | None) -> None:
    lead = given("captured", _score(10))
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_mql", override=True, reason=reason))
    assert "reason" in str(error) and "override" in str(error)


def test_an_override_with_a_reason_qualifies_a_low_or_unscored_lead() -> None:
    for extra in ((), (_score(5),)):
        lead = given("nurtured", *extra)
        fire(lead, "qualify_mql", override=True, reason="  met at the booth  ")
        (event,) = lead.collect_events()
        assert isinstance(event, ev.LeadQualifiedAsMQL)
        assert event.override is True
        assert event.reason == "met at the booth"
        assert event.score == lead.score


# ---------------------------------------------------------------- accept guard and owner


def test_accept_without_an_owner_is_refused_saying_assign_first() -> None:
    lead = given("mql")
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "accept"))
    assert "owner" in str(error)
    assert str(lead.id) in str(error) and "'mql'" in str(error) and "'accept'" in str(error)


def test_accept_records_the_owner_currently_assigned() -> None:
    lead = given("mql", _assign("olivia"), _assign("  bruno "))
    fire(lead, "accept")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadAcceptedBySales)
    assert event.owner == "bruno"


@pytest.mark.parametrize(("source", "trigger"), [("mql", "reject"), ("sal", "reject"), ("sal", "recycle"),
                                                 ("sql", "recycle"), ("won", "recycle"), ("lost", "recycle")])
def test_reject_and_recycle_hand_the_lead_back_and_clear_the_owner(source: str, trigger: str) -> None:
    lead = given(source, _assign("olivia"))
    fire(lead, trigger, reason="not now")
    assert lead.owner is None
    assert lead.stage is Stage.RECYCLED
    # back to mql, accept needs a fresh assignment
    fire(lead, "qualify_mql", override=True, reason="came back")
    assert_refused(lead, GuardFailed, lambda: fire(lead, "accept"))
    lead.assign(owner="bruno", occurred_at=T0, actor="t")
    fire(lead, "accept")
    assert lead.stage is Stage.SAL


def test_a_replayed_reject_or_recycle_clears_the_owner_too() -> None:
    lead = new_lead()
    for step in PATHS["sal"]:
        step(lead)
    fire(lead, "reject", reason="no budget")
    fire(lead, "qualify_mql", override=True, reason="back")
    lead.assign(owner="bruno", occurred_at=T0, actor="t")
    fire(lead, "accept")
    fire(lead, "recycle", reason="not now")
    history = lead.collect_events()
    rebuilt = None
    for i, event in enumerate(history):
        rebuilt = event.mutate(rebuilt)
        if isinstance(event, ev.LeadRejectedBySales | ev.LeadRecycled):
            assert rebuilt is not None and rebuilt.owner is None, f"owner kept after event {i + 1}"
    assert rebuilt is not None
    assert (rebuilt.owner, rebuilt.stage, rebuilt.version) == (None, Stage.RECYCLED, lead.version)


# ---------------------------------------------------------------- reasons


@pytest.mark.parametrize(("trigger", "source"), [("reject", "mql"), ("reject", "sal"), ("lose", "sql"),
                                                 ("recycle", "won"), ("recycle", "lost"),
                                                 ("disqualify", "captured"), ("disqualify", "won")])
@pytest.mark.parametrize("reason", [None, "", "  "])
def test_exits_and_handbacks_need_a_non_blank_reason(trigger: str, source: str, reason: str | None) -> None:
    lead = given(source)
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, trigger, reason=reason))
    assert "reason" in str(error)
    assert str(lead.id) in str(error) and f"'{source}'" in str(error) and f"'{trigger}'" in str(error)


@pytest.mark.parametrize("trigger", ["reject", "disqualify"])
def test_the_reason_is_recorded_trimmed(trigger: str) -> None:
    lead = given("sal")
    fire(lead, trigger, reason="  budget frozen ")
    (event,) = lead.collect_events()
    assert event.reason == "budget frozen"  # type: ignore[attr-defined]


@pytest.mark.parametrize("source", [s for s in ALL_STAGES if s != "disqualified"])
def test_disqualify_works_from_every_stage_but_disqualified(source: str) -> None:
    lead = given(source)
    fire(lead, "disqualify", reason="spam")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadDisqualified)
    assert (event.from_stage, event.to_stage) == (Stage(source), Stage.DISQUALIFIED)
    assert_refused(lead, InvalidTransition, lambda: fire(lead, "disqualify", reason="again"))


# ---------------------------------------------------------------- BANT


@pytest.mark.parametrize("missing", ["budget", "authority", "need", "timeline"])
def test_qualify_sql_names_each_missing_bant_field(missing: str) -> None:
    lead = given("sal")
    partial = {k: v for k, v in BANT.items() if k != missing}
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_sql", bant=partial))
    assert missing in str(error)
    for present in partial:
        assert f"--{present}" not in str(error)
    emptied = {**BANT, missing: ""}
    assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_sql", bant=emptied))


def test_qualify_sql_without_any_bant_names_all_four() -> None:
    lead = given("sal")
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_sql"))
    for field in ("budget", "authority", "need", "timeline"):
        assert field in str(error)
    assert "'sal'" in str(error) and "'qualify_sql'" in str(error)


def test_qualify_sql_records_the_bant_answers() -> None:
    lead = given("sal")
    fire(lead, "qualify_sql", bant={**BANT, "need": "  reporting "})
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadQualifiedAsSQL)
    assert event.bant == BANT


def test_a_whitespace_only_bant_answer_counts_as_missing() -> None:
    lead = given("sal")
    assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_sql", bant={**BANT, "budget": "   "}))


def test_qualify_sql_records_the_expected_amount_and_upper_case_currency() -> None:
    lead = given("sal")
    fire(lead, "qualify_sql", bant=BANT, amount=12_000.0, currency=" eur ")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadQualifiedAsSQL)
    assert (event.bant, event.amount, event.currency) == (BANT, 12_000.0, "EUR")
    assert lead.stage is Stage.SQL


def test_qualify_sql_without_an_expected_amount_records_neither() -> None:
    lead = given("sal")
    fire(lead, "qualify_sql", bant=BANT)
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadQualifiedAsSQL)
    assert (event.amount, event.currency) == (None, None)


@pytest.mark.parametrize(
    ("amount", "currency", "named", "not_named"),
    [
        (12_000.0, None, "--currency", "--amount"),
        (12_000.0, "  ", "--currency", "--amount"),
        (None, "EUR", "--amount", "--currency"),
        (0.0, "EUR", "--amount", "--currency"),
        (-5.0, "EUR", "--amount", "--currency"),
        (2e12, "EUR", "--amount", "--currency"),
        (12_000.0, "euros", "--currency", "--amount"),
    ],
)
def test_an_expected_amount_needs_both_a_valid_amount_and_currency(
    amount: float | None, currency: str | None, named: str, not_named: str
) -> None:
    lead = given("sal")
    error = assert_refused(
        lead, GuardFailed, lambda: fire(lead, "qualify_sql", bant=BANT, amount=amount, currency=currency))
    assert named in str(error)
    assert not_named not in str(error)
    assert "or neither" in str(error)


def test_incomplete_bant_is_named_before_the_expected_amount() -> None:
    lead = given("sal")
    partial = {k: v for k, v in BANT.items() if k != "need"}
    error = assert_refused(
        lead, GuardFailed, lambda: fire(lead, "qualify_sql", bant=partial, amount=100.0, currency="EUR"))
    assert "missing need" in str(error)


# ---------------------------------------------------------------- win


@pytest.mark.parametrize(
    ("amount", "currency", "missing"),
    [
        (None, "EUR", ["amount"]),
        (0.0, "EUR", ["amount"]),
        (-10.0, "EUR", ["amount"]),
        (100.0, None, ["currency"]),
        (100.0, "  ", ["currency"]),
        (None, None, ["amount", "currency"]),
    ],
)
def test_a_win_needs_a_positive_amount_and_a_currency(
    amount: float | None, currency: str | None, missing: list[str]
) -> None:
    lead = given("sql")
    error = assert_refused(lead, GuardFailed, lambda: fire(lead, "win", amount=amount, currency=currency))
    for word in missing:
        assert word in str(error)
    for word in {"amount", "currency"} - set(missing):
        assert f"--{word}" not in str(error)


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), float("-inf")])
def test_a_win_amount_must_be_finite(amount: float) -> None:
    lead = given("sql")
    error = assert_refused(lead, InvalidCommand, lambda: fire(lead, "win", amount=amount, currency="EUR"))
    assert str(lead.id) in str(error)


def test_a_win_records_amount_and_upper_case_currency() -> None:
    lead = given("sql")
    fire(lead, "win", amount=1234.5, currency=" usd ")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadWon)
    assert (event.amount, event.currency) == (1234.5, "USD")


# ---------------------------------------------------------------- capture and non-stage commands


def test_capture_records_one_event_at_version_one_in_stage_captured() -> None:
    lead_id = uuid4()
    lead = Lead.capture(lead_id, channel=" webinar ", campaign="", occurred_at=T0, actor="web-forms",
                        consent=True, email="ada@example.com", name="Ada", phone="+41 1")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadCaptured)
    assert event.originator_id == lead_id and event.originator_version == 1
    assert (event.from_stage, event.to_stage) == (None, Stage.CAPTURED)
    assert (event.channel, event.campaign, event.consent) == ("webinar", None, True)
    assert (lead.stage, lead.owner, lead.score, lead.captured_at) == (Stage.CAPTURED, None, None, T0)


@pytest.mark.parametrize("channel", ["", "   "])
def test_capture_without_a_channel_is_refused(channel: str) -> None:
    lead_id = uuid4()
    with pytest.raises(InvalidCommand) as info:
        Lead.capture(lead_id, channel=channel, occurred_at=T0, actor="t", email="a@x.io")
    assert str(lead_id) in str(info.value) and "channel" in str(info.value)


@pytest.mark.parametrize(("label", "kwargs"), [("total", {"total": 101}), ("total", {"total": -1}),
                                               ("fit", {"total": 50, "fit": 101}),
                                               ("behaviour", {"total": 50, "behaviour": -3})])
def test_a_score_outside_0_to_100_is_refused(label: str, kwargs: dict[str, int]) -> None:
    lead = given("captured")
    error = assert_refused(lead, InvalidCommand,
                           lambda: lead.record_score(occurred_at=T0, actor="t", **kwargs))
    assert label in str(error) and str(lead.id) in str(error)


def test_score_assign_touch_contact_consent_record_one_event_each_without_changing_stage() -> None:
    lead = given("mql")
    v = lead.version
    lead.record_score(total=64, fit=30, behaviour=34, occurred_at=T0, actor="t")
    lead.assign(owner="olivia", rule="round-robin", occurred_at=T0, actor="t")
    lead.contact(occurred_at=T0, actor="t")
    lead.touch(channel="email", campaign="nurture-3", kind="email_open", occurred_at=T0, actor="t")
    lead.set_consent(given=False, purpose="newsletter", occurred_at=T0, actor="t")
    events = lead.collect_events()
    assert [type(e) for e in events] == [ev.LeadScored, ev.LeadAssigned, ev.LeadContacted,
                                         ev.LeadTouched, ev.LeadConsentWithdrawn]
    assert [e.originator_version for e in events] == list(range(v + 1, v + 6))
    contacted = events[2]
    assert isinstance(contacted, ev.LeadContacted) and contacted.owner == "olivia"
    assert (lead.stage, lead.score, lead.owner, lead.consent) == (Stage.MQL, 64, "olivia", False)


def test_assign_touch_and_contact_refuse_missing_data() -> None:
    lead = given("captured")
    assert_refused(lead, InvalidCommand, lambda: lead.assign(owner="  ", occurred_at=T0, actor="t"))
    assert_refused(lead, InvalidCommand, lambda: lead.touch(channel="", occurred_at=T0, actor="t"))
    error = assert_refused(lead, InvalidCommand, lambda: lead.contact(occurred_at=T0, actor="t"))
    assert "owner" in str(error)


def test_erasing_twice_is_refused() -> None:
    lead = given("won")
    lead.erase_personal_data(occurred_at=T0, actor="t", reason="gdpr")
    (event,) = lead.collect_events()
    assert isinstance(event, ev.LeadPersonalDataErased) and lead.erased
    assert lead.stage is Stage.WON  # the anonymous lifecycle stays
    assert_refused(lead, InvalidCommand, lambda: lead.erase_personal_data(occurred_at=T0, actor="t"))


def test_a_refused_command_in_the_middle_leaves_earlier_pending_events_untouched() -> None:
    lead = new_lead()
    lead.record_score(total=20, occurred_at=T0, actor="t")
    pending = list(lead.pending_events)
    assert_refused(lead, GuardFailed, lambda: fire(lead, "qualify_mql"))
    assert_refused(lead, InvalidTransition, lambda: fire(lead, "win", amount=1.0, currency="EUR"))
    assert lead.pending_events == pending
    assert [e.originator_version for e in lead.collect_events()] == [1, 2]
