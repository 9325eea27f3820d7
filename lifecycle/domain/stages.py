"""The lead stage machine as data: one table, one shared `transitions.Machine`.

A row of the table is a trigger and everything about it: the stages it fires from, the
stage it leads to, its guard, the event it records and what the command puts in that
event. The Lead, the schema generator and the read models read what they need off it
(which event enters which stage, the main path), so a new trigger is a row here, its
event class in events.py and its name in the published schemas/inbound/transition.v1.json.

Leads never get a machine of their own (100k machines cost tens of seconds and
gigabytes); a command puts the lead's current stage on a tiny holder and fires
the trigger on the one shared machine, which answers "allowed, and to where".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import Machine, MachineError

from lifecycle.domain import events as ev
from lifecycle.domain.stage import Stage

#: Reported funnel order (all stages).
FUNNEL_ORDER: tuple[Stage, ...] = tuple(Stage)


@dataclass(frozen=True)
class GuardContext:
    """What a guard and an event's payload may look at: the lead's state and the command's
    data (reason and currency already trimmed, blank ones None)."""

    score: int | None
    owner: str | None
    mql_threshold: int
    reason: str | None = None
    override: bool = False
    amount: float | None = None
    currency: str | None = None
    bant: Mapping[str, Any] | None = None


#: A guard returns None when satisfied, else a sentence saying what is missing.
Guard = Callable[[GuardContext], "str | None"]
#: The fields a trigger's command contributes to its event (besides from_stage and to_stage).
Payload = Callable[[GuardContext], dict[str, Any]]

BANT_FIELDS = ("budget", "authority", "need", "timeline")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
#: The largest won amount accepted: anything above is a typo or a unit error (and two wins of
#: 1.7e308 would make revenue infinite).
MAX_AMOUNT = 1e12


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


# ---- guards -------------------------------------------------------------------


def needs_reason(ctx: GuardContext) -> str | None:
    return "a non-blank reason is required (--reason)" if _blank(ctx.reason) else None


def mql_ready(ctx: GuardContext) -> str | None:
    if ctx.override:
        if _blank(ctx.reason):
            return "an override needs a non-blank reason (--override --reason ...)"
        return None
    if ctx.score is None:
        return (
            f"the lead has no score yet; it needs a score total >= {ctx.mql_threshold} "
            "(score it first) or an override with a reason"
        )
    if ctx.score < ctx.mql_threshold:
        return (
            f"the lead's latest score total is {ctx.score}, below the MQL threshold "
            f"{ctx.mql_threshold}; score it higher or pass an override with a reason"
        )
    return None


def has_owner(ctx: GuardContext) -> str | None:
    if ctx.owner is None:
        return "no owner is assigned; assign an owner first (leadledger assign)"
    return None


def bant_complete(ctx: GuardContext) -> str | None:
    bant = ctx.bant or {}
    missing = [f for f in BANT_FIELDS if bant.get(f) is None or not str(bant[f]).strip()]
    if missing:
        flags = ", ".join(f"--{f}" for f in missing)
        return f"BANT is incomplete: missing {', '.join(missing)} ({flags})"
    return None


def _amount_problems(ctx: GuardContext) -> list[str]:
    """What is wrong with the command's amount and currency as a deal's value (empty: both valid)."""
    problems = []
    if ctx.amount is None or not 0 < ctx.amount <= MAX_AMOUNT:
        got = f", got {ctx.amount:g}" if ctx.amount is not None else ""
        problems.append(f"an amount > 0 and at most {MAX_AMOUNT:,.0f} (--amount){got}")
    if ctx.currency is None or not _CURRENCY.fullmatch(ctx.currency.strip()):
        got = f", got {ctx.currency!r}" if ctx.currency is not None else ""
        problems.append(f"a 3-letter ISO 4217 currency code like EUR (--currency){got}")
    return problems


def won_amount(ctx: GuardContext) -> str | None:
    problems = _amount_problems(ctx)
    return ("a win needs " + " and ".join(problems)) if problems else None


def sql_ready(ctx: GuardContext) -> str | None:
    """Complete BANT; an expected amount is optional, but when an amount or a currency is given,
    both must be given and valid."""
    missing = bant_complete(ctx)
    if missing is not None:
        return missing
    if ctx.amount is None and ctx.currency is None:
        return None
    problems = _amount_problems(ctx)
    if problems:
        return ("an expected deal amount needs " + " and ".join(problems)
                + " (give an amount and its currency, or neither)")
    return None


# ---- payloads (each runs after its guard passed) ------------------------------


def no_payload(ctx: GuardContext) -> dict[str, Any]:
    return {}


def reason_payload(ctx: GuardContext) -> dict[str, Any]:
    return {"reason": ctx.reason}


def mql_payload(ctx: GuardContext) -> dict[str, Any]:
    return {"score": ctx.score, "override": ctx.override, "reason": ctx.reason}


def owner_payload(ctx: GuardContext) -> dict[str, Any]:
    return {"owner": ctx.owner}


def bant_payload(ctx: GuardContext) -> dict[str, Any]:
    assert ctx.bant is not None  # bant_complete proved it complete
    return {"bant": {f: str(ctx.bant[f]).strip() for f in BANT_FIELDS}}


def deal_payload(ctx: GuardContext) -> dict[str, Any]:
    return {"amount": float(ctx.amount or 0), "currency": (ctx.currency or "").upper()}


def sql_payload(ctx: GuardContext) -> dict[str, Any]:
    """The BANT and, when given, the deal's expected amount and currency (else both None)."""
    expected = deal_payload(ctx) if ctx.amount is not None else {"amount": None, "currency": None}
    return {**bant_payload(ctx), **expected}


# ---- the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One row of the stage table."""

    trigger: str
    sources: tuple[Stage, ...]
    dest: Stage
    event: type[ev.StageChanged]
    guard: Guard | None = None
    payload: Payload = no_payload
    #: a step of the main path, the one conversion rates are reported along
    main: bool = False


_ALL_BUT_DISQUALIFIED = tuple(s for s in Stage if s is not Stage.DISQUALIFIED)

#: The stage table (docs/contract.md). `capture` creates a lead and so is not a trigger here.
TABLE: tuple[Rule, ...] = (
    Rule("nurture", (Stage.CAPTURED, Stage.RECYCLED), Stage.NURTURED, ev.LeadNurtured),
    Rule("qualify_mql", (Stage.CAPTURED, Stage.NURTURED, Stage.RECYCLED), Stage.MQL, ev.LeadQualifiedAsMQL,
         mql_ready, mql_payload, main=True),
    Rule("accept", (Stage.MQL,), Stage.SAL, ev.LeadAcceptedBySales, has_owner, owner_payload, main=True),
    Rule("reject", (Stage.MQL, Stage.SAL), Stage.RECYCLED, ev.LeadRejectedBySales, needs_reason, reason_payload),
    Rule("qualify_sql", (Stage.SAL,), Stage.SQL, ev.LeadQualifiedAsSQL, sql_ready, sql_payload, main=True),
    Rule("win", (Stage.SQL,), Stage.WON, ev.LeadWon, won_amount, deal_payload, main=True),
    Rule("lose", (Stage.SQL,), Stage.LOST, ev.LeadLost, needs_reason, reason_payload),
    Rule("recycle", (Stage.SAL, Stage.SQL, Stage.WON, Stage.LOST), Stage.RECYCLED, ev.LeadRecycled,
         needs_reason, reason_payload),
    Rule("disqualify", _ALL_BUT_DISQUALIFIED, Stage.DISQUALIFIED, ev.LeadDisqualified, needs_reason, reason_payload),
)

RULES: dict[str, Rule] = {rule.trigger: rule for rule in TABLE}
TRIGGERS: tuple[str, ...] = tuple(RULES)


# ---- what the rest of leadledger reads off the table ------------------------------


def _main_path() -> tuple[Stage, ...]:
    """Captured, then the destination of each main-path row in table order (each fires from the last)."""
    path = [Stage.CAPTURED]
    for rule in TABLE:
        if rule.main:
            if path[-1] not in rule.sources:
                raise ValueError(f"stage table: main-path trigger {rule.trigger!r} does not fire from {path[-1]}")
            path.append(rule.dest)
    return tuple(path)


#: The main path (captured, mql, sal, sql, won); conversion rates are reported along it.
MAIN_PATH: tuple[Stage, ...] = _main_path()

#: Names of the events that move a lead into a stage, LeadCaptured (into captured) included.
STAGE_EVENTS: frozenset[str] = frozenset({ev.LeadCaptured.__name__, *(rule.event.__name__ for rule in TABLE)})
#: Names of the stage-changing events after which a lead has no owner.
OWNER_CLEARING_EVENTS: frozenset[str] = frozenset(rule.event.__name__ for rule in TABLE if rule.event.CLEARS_OWNER)
#: The trigger that records each stage-changing event class.
RULE_OF_EVENT: dict[type[ev.StageChanged], Rule] = {rule.event: rule for rule in TABLE}


# ---- the shared machine -----------------------------------------------------------


class _StageHolder:
    """The only model the shared machine ever sees, created per command."""

    __slots__ = ("state",)

    def __init__(self, state: Stage) -> None:
        self.state = state


def _build_machine() -> Machine:
    return Machine(
        model=None,
        states=list(Stage),
        transitions=[
            {"trigger": r.trigger, "source": list(r.sources), "dest": r.dest} for r in TABLE
        ],
        initial=Stage.CAPTURED,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


#: The one machine all leads share.
MACHINE: Machine = _build_machine()


def allowed_triggers(stage: Stage) -> list[str]:
    """Triggers the table allows from `stage`, in table order."""
    return [r.trigger for r in TABLE if stage in r.sources]


def fire(stage: Stage, trigger: str) -> Stage | None:
    """Fire `trigger` from `stage` on the shared machine.

    Returns the destination stage, or None when the table does not allow the
    trigger from that stage (or the trigger is unknown).
    """
    event = MACHINE.events.get(trigger)
    if event is None:
        return None
    holder = _StageHolder(stage)
    try:
        event.trigger(holder)
    except MachineError:
        return None
    dest = holder.state
    return dest if isinstance(dest, Stage) else Stage(dest)
