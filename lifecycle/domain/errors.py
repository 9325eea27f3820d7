"""Errors the lifecycle refuses commands with; each message says what to do."""

from __future__ import annotations

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
