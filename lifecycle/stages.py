"""The lead stage machine as data: one table, one shared `transitions.Machine`.

Leads never get a machine of their own (100k machines cost tens of seconds and
gigabytes); a command puts the lead's current stage on a tiny holder and fires
the trigger on the one shared machine, which answers "allowed, and to where".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from transitions import Machine, MachineError


class Stage(StrEnum):
    """Where a lead is in its life. The value is the wire name."""

    CAPTURED = "captured"
    NURTURED = "nurtured"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    WON = "won"
    RECYCLED = "recycled"
    LOST = "lost"
    DISQUALIFIED = "disqualified"


#: The main path; conversion rates are reported along it.
MAIN_PATH: tuple[Stage, ...] = (Stage.CAPTURED, Stage.MQL, Stage.SAL, Stage.SQL, Stage.WON)

#: Reported funnel order (all nine stages).
FUNNEL_ORDER: tuple[Stage, ...] = (
    Stage.CAPTURED,
    Stage.NURTURED,
    Stage.MQL,
    Stage.SAL,
    Stage.SQL,
    Stage.WON,
    Stage.RECYCLED,
    Stage.LOST,
    Stage.DISQUALIFIED,
)


@dataclass(frozen=True)
class GuardContext:
    """What a guard may look at: the lead's state and the command's data."""

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

BANT_FIELDS = ("budget", "authority", "need", "timeline")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


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


def won_amount(ctx: GuardContext) -> str | None:
    problems = []
    if ctx.amount is None or not ctx.amount > 0:
        problems.append("an amount > 0 (--amount)")
    if ctx.currency is None or not _CURRENCY.fullmatch(ctx.currency.strip()):
        got = f", got {ctx.currency!r}" if ctx.currency is not None else ""
        problems.append(f"a 3-letter ISO 4217 currency code like EUR (--currency){got}")
    return ("a win needs " + " and ".join(problems)) if problems else None


@dataclass(frozen=True)
class Rule:
    """One row of the stage table."""

    trigger: str
    sources: tuple[Stage, ...]
    dest: Stage
    guard: Guard | None = None


_ALL_BUT_DISQUALIFIED = tuple(s for s in Stage if s is not Stage.DISQUALIFIED)

#: The stage table (SPEC §2). `capture` creates a lead and so is not a trigger here.
TABLE: tuple[Rule, ...] = (
    Rule("nurture", (Stage.CAPTURED, Stage.RECYCLED), Stage.NURTURED),
    Rule("qualify_mql", (Stage.CAPTURED, Stage.NURTURED, Stage.RECYCLED), Stage.MQL, mql_ready),
    Rule("accept", (Stage.MQL,), Stage.SAL, has_owner),
    Rule("reject", (Stage.MQL, Stage.SAL), Stage.RECYCLED, needs_reason),
    Rule("qualify_sql", (Stage.SAL,), Stage.SQL, bant_complete),
    Rule("win", (Stage.SQL,), Stage.WON, won_amount),
    Rule("lose", (Stage.SQL,), Stage.LOST, needs_reason),
    Rule("recycle", (Stage.SAL, Stage.SQL, Stage.WON, Stage.LOST), Stage.RECYCLED, needs_reason),
    Rule("disqualify", _ALL_BUT_DISQUALIFIED, Stage.DISQUALIFIED, needs_reason),
)

RULES: dict[str, Rule] = {rule.trigger: rule for rule in TABLE}
TRIGGERS: tuple[str, ...] = tuple(RULES)


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
