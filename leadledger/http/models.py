"""What the API answers: orjson bodies, `{"error": ...}`, and the pydantic models that only
document the bodies in the OpenAPI document (SPEC §8)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field


class JSONBody(Response):
    """orjson, like the CLI's `--json` (same numbers, same key order)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"error": message}, status_code=status, headers=headers)


# Documentation models for the OpenAPI document (SPEC §8). Bodies are not validated
# against them: the service's dicts are sent as they are.


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorBody(_Doc):
    error: str = Field(description="What is wrong; for a bad parameter it starts with the parameter's name.")


class FunnelGroup(_Doc):
    key: str | None = Field(description="Channel or campaign of the lead's capture; null without `by`.")
    stages: dict[str, int] = Field(description="Distinct leads per stage (all nine stages).")
    conversion: dict[str, float | None] = Field(
        description="`captured->mql`, `mql->sal`, `sal->sql`, `sql->won`: reached(b) / reached(a), "
        "null when reached(a) = 0."
    )


class FunnelBody(_Doc):
    mode: Literal["cohort", "period"]
    from_: str | None = Field(alias="from")
    to: str | None
    as_of: str | None
    by: str | None
    groups: list[FunnelGroup]


class Stat(_Doc):
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None


class VelocityGroup(_Doc):
    key: str | None
    time_in_stage: dict[str, Stat] = Field(description="Completed stays per stage, in seconds.")
    time_to_stage: dict[str, Stat] = Field(description="First entry minus capture time (mql, sal, sql, won).")


class VelocityBody(_Doc):
    by: str | None
    as_of: str | None
    groups: list[VelocityGroup]


class AttributionGroup(_Doc):
    key: str | None
    conversions: float = Field(description="Attributed conversions (fractional credit).")
    revenue: float | None = Field(description="Attributed revenue (amount × credit); null unless conversion=won.")


class AttributionBody(_Doc):
    model: str
    conversion: str
    by: str | None
    as_of: str | None
    groups: list[AttributionGroup]


class SpeedGroup(_Doc):
    key: str | None = Field(description="The owner of the assignment; null without `by`.")
    assignments: int
    contacted: int
    within_5m: int
    p50_s: float | None
    p90_s: float | None


class SpeedBody(_Doc):
    by: str | None
    as_of: str | None
    groups: list[SpeedGroup]


class LeadRow(_Doc):
    lead_id: str
    stage: str
    owner: str | None
    score: int | None
    channel: str | None
    campaign: str | None
    captured_at: str | None
    last_change_at: str | None


class LeadsBody(_Doc):
    as_of: str | None
    leads: list[LeadRow] = Field(description="Newest first.")


class HistoryBody(_Doc):
    lead_id: str
    stage: str | None = Field(description="The lead's stage at `as_of` (null if not yet captured then).")
    as_of: str | None
    known_at: str | None
    events: list[dict[str, Any]] = Field(description="CloudEvents 1.0 envelopes in store order.")


class Health(_Doc):
    status: Literal["ok"]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A bad parameter; the message names it."},
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
}
