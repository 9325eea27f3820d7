"""Errors the lifecycle refuses commands with; each message says what to do."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID


class LifecycleError(Exception):
    """A command was refused. Nothing was appended."""


class InvalidTransition(LifecycleError):
    """The trigger is not allowed from the lead's current stage."""

    def __init__(self, lead_id: UUID, stage: str, trigger: str, allowed: list[str]) -> None:
        self.lead_id, self.stage, self.trigger, self.allowed = lead_id, stage, trigger, allowed
        allowed_txt = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"lead {lead_id}: trigger '{trigger}' is not allowed from stage '{stage}' "
            f"(allowed from '{stage}': {allowed_txt})"
        )


class UnknownTrigger(LifecycleError):
    def __init__(self, lead_id: UUID, stage: str, trigger: str, known: tuple[str, ...]) -> None:
        self.lead_id, self.stage, self.trigger = lead_id, stage, trigger
        super().__init__(
            f"lead {lead_id}: unknown trigger '{trigger}' (stage '{stage}'); "
            f"known triggers: {', '.join(known)}"
        )


class GuardFailed(LifecycleError):
    """The trigger is allowed from the stage, but its guard is not satisfied."""

    def __init__(self, lead_id: UUID, stage: str, trigger: str, missing: str) -> None:
        self.lead_id, self.stage, self.trigger, self.missing = lead_id, stage, trigger, missing
        super().__init__(f"lead {lead_id}: cannot '{trigger}' from stage '{stage}': {missing}")


class InvalidCommand(LifecycleError):
    """A command's data is wrong (e.g. a score outside 0-100)."""

    def __init__(self, lead_id: UUID | None, problem: str) -> None:
        self.lead_id = lead_id
        where = f"lead {lead_id}: " if lead_id else ""
        super().__init__(f"{where}{problem}")


class ImpossibleTime(InvalidCommand):
    """The command's `occurred_at` is before its lead's capture, or (a stage change) before the
    lead's latest stage change: an impossible history. Late touches, scores, assignments and
    contacts between stage changes are fine."""

    def __init__(self, lead_id: UUID, what: str, occurred_at: datetime, bound: str, bound_at: datetime) -> None:
        self.what, self.occurred_at, self.bound, self.bound_at = what, occurred_at, bound, bound_at
        if bound == "capture":
            why = ("before the lead's capture at {b}: nothing happens to a lead before it is captured "
                   "(check occurred_at)")
        else:
            why = ("before the lead's latest stage change ({bound}) at {b}: stage changes are recorded in "
                   "the order they happened (touches, scores, assignments and contacts may arrive late)")
        super().__init__(lead_id, f"{what} that occurred at {_when(occurred_at)} is refused: it is "
                                  + why.format(bound=bound, b=_when(bound_at)))


def _when(at: datetime) -> str:
    """RFC 3339 in UTC (Z), without the codec (the domain imports nothing of the project)."""
    if at.tzinfo is None:
        return at.isoformat()
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class UnknownLead(LifecycleError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(
            f"unknown lead {ref}: no lead has been captured for it "
            "(capture it first, or check the lead id / e-mail)"
        )


class ConcurrencyConflict(LifecycleError):
    """Another writer kept winning the race for this lead."""

    def __init__(self, lead_id: UUID, attempts: int) -> None:
        self.lead_id = lead_id
        super().__init__(
            f"lead {lead_id}: gave up after {attempts} attempts because other writers "
            "kept changing the lead concurrently; retry the command"
        )
