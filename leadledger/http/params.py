"""Request parameters: their OpenAPI declarations (shared by the endpoints) and their parsing
into a `Query`, with errors that name the parameter."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query as Param
from fastapi import Request

from lifecycle.domain.stages import FUNNEL_ORDER
from projections.query import CONVERSIONS, LEAD_BYS, MAX_LIMIT, MODELS, MODES, SPEED_BYS, Query
from schemas.times import TimeFormatError, parse_user_time


class ParameterError(ValueError):
    """A request parameter is malformed; the message starts with the parameter's name."""


_TIME_HELP = (
    "A date (2026-02-01 = 00:00 UTC that day) or an RFC 3339 time with a zone "
    "(2026-02-01T09:30:00Z; write + as %2B)."
)
_AS_OF_HELP = "Only events that occurred at or before this time: the answer a user would have seen then. " + _TIME_HELP
_KNOWN_AT_HELP = "...and were recorded (stored) at or before this time. " + _TIME_HELP

FromParam = Annotated[str | None, Param(alias="from", description="Start of the period (inclusive). " + _TIME_HELP)]
ToParam = Annotated[str | None, Param(description="End of the period (exclusive). " + _TIME_HELP)]
AsOfParam = Annotated[str | None, Param(description=_AS_OF_HELP)]
KnownAtParam = Annotated[str | None, Param(description=_KNOWN_AT_HELP)]
ModeParam = Annotated[str, Param(
    description="cohort (default): the leads captured in [from, to); period: the measured event "
                "(stage entry, end of a stay, conversion, assignment) occurred in [from, to).",
    json_schema_extra={"enum": list(MODES)},
)]
ModelParam = Annotated[str, Param(
    description="Attribution model: first, last, linear (equal), u_shaped (40/20/40), "
                "time_decay (7-day half-life).",
    json_schema_extra={"enum": list(MODELS)},
)]
ConversionParam = Annotated[str, Param(description="The stage whose entries are credited.",
                                       json_schema_extra={"enum": list(CONVERSIONS)})]
LeadsByParam = Annotated[str | None, Param(
    description="Group by the channel or campaign of the lead's capture (first touch).",
    json_schema_extra={"enum": list(LEAD_BYS)},
)]
SpeedByParam = Annotated[str | None, Param(
    description="Group by the owner of the assignment, or the lead's capture channel or campaign.",
    json_schema_extra={"enum": list(SPEED_BYS)},
)]
SlaByParam = Annotated[str, Param(
    description="One row per SLA rule (default), or per rule and owner (the owner at the deadline when "
                "breached, else at the clock's end).",
    json_schema_extra={"enum": ["rule", "owner"]},
)]
StageParam = Annotated[str | None, Param(description="Only leads now (at as_of) in this stage (any case).",
                                         json_schema_extra={"enum": [s.value for s in FUNNEL_ORDER]})]
LimitParam = Annotated[int, Param(description=f"At most this many leads (1 to {MAX_LIMIT:,}), newest first.")]

# a '+' in a query string decodes to a space: "…T09:30:00 01:00" means "…T09:30:00+01:00"
_SPACE_FOR_PLUS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")


def parse_time(value: str | None, name: str) -> datetime | None:
    """The CLI's parser (`schemas.times.parse_user_time`), with HTTP's error wording."""
    if value is None:
        return None
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
    try:
        return parse_user_time(text)
    except TimeFormatError as exc:
        raise ParameterError(f"{name}: {exc}") from None
    except OverflowError:  # year 1 or 9999 moved out of the calendar by its zone
        raise ParameterError(f"{name}: {value!r} is out of range: give a time between years 1 and 9999 "
                             "in UTC") from None


def _query_names(dependant: Any) -> set[str]:
    """The query parameters an endpoint (its dependant and theirs) declares, by their HTTP names."""
    if dependant is None:
        return set()
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def check_known_parameters(request: Request) -> None:
    """A dependency of every endpoint: a parameter the endpoint does not take (`as-of` for
    `as_of`), or one given twice, is a 400 naming it, never silently ignored."""
    known = _query_names(getattr(request.scope.get("route"), "dependant", None))
    given = request.query_params
    unknown = sorted({k for k in given if k not in known})
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise ParameterError(f"{', '.join(unknown)}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                             f"(this endpoint takes {takes})")
    repeated = sorted({k for k in given if len(given.getlist(k)) > 1})
    if repeated:
        raise ParameterError(f"{', '.join(repeated)}: given more than once; give each parameter once")


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")


def http_wording(message: str) -> str:
    """The service words its errors for the CLI (`--as-of`); name the HTTP parameter (`as_of`)."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)


def parse_lead_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ParameterError(f"lead_id: {value!r} is not a lead id (a UUID)") from None


def build_query(*, from_: str | None = None, to: str | None = None, as_of: str | None = None,
                known_at: str | None = None, **rest: Any) -> Query:
    """A Query from request parameters; times are parsed here, the rest is checked by the service."""
    if isinstance(rest.get("stage"), str):
        rest["stage"] = rest["stage"].lower()
    return Query(from_=parse_time(from_, "from"), to=parse_time(to, "to"), as_of=parse_time(as_of, "as_of"),
                 known_at=parse_time(known_at, "known_at"), **rest)
