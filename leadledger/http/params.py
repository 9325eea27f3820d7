"""Request parameters: their OpenAPI declarations (shared by the endpoints) and their parsing
into a `Query`, with errors that name the parameter."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Path as PathParam
from fastapi import Query as Param
from fastapi import Request

from projections.query import MAX_LIMIT, Query
from schemas.times import TimeFormatError, parse_user_time, time_pattern


class ParameterError(ValueError):
    """A request parameter is malformed; the message starts with the parameter's name."""


_TIME_HELP = (
    "A date (2026-02-01 = 00:00 UTC that day) or an RFC 3339 time with a zone: date, `T`, HH:MM[:SS[.fraction]] "
    "and `Z` or an offset (2026-02-01T09:30:00Z, 2026-02-01T10:30:00+01:00; write + as %2B, though a + that "
    "decoded to a space is read as +). Years 0001 to 9999, seconds 00-59, a fraction cut to microseconds; a time on "
    "0001-01-01 takes no positive offset and one on 9999-12-31 no negative one (it could leave the calendar in UTC)."
)
#: what a time parameter accepts, exactly: `schemas.times`' syntax, with a space for the + of an offset
TIME_PATTERN = time_pattern(plus="+ ")
_TIME = re.compile(TIME_PATTERN.removesuffix("$") + r"\Z")


def _time_schema(*examples: str) -> dict[str, Any]:
    return {"pattern": TIME_PATTERN, "examples": list(examples)}



_AS_OF_HELP = "Only events that occurred at or before this time: the answer a user would have seen then. " + _TIME_HELP
_KNOWN_AT_HELP = "...and were recorded (stored) at or before this time. " + _TIME_HELP
_WINDOW_HELP = " It must be before `to` when both are given (a 400 otherwise)."

# the examples keep `from` before `to`, as a request must
FromParam = Annotated[str | None, Param(alias="from", description="Start of the period (inclusive)." + _WINDOW_HELP
                                        + " " + _TIME_HELP,
                                        json_schema_extra=_time_schema("2026-01-01", "2026-01-15T09:30:00Z"))]
ToParam = Annotated[str | None, Param(description="End of the period (exclusive). " + _TIME_HELP,
                                      json_schema_extra=_time_schema("2026-04-01", "2026-03-15T17:00:00+01:00"))]
AsOfParam = Annotated[str | None, Param(description=_AS_OF_HELP,
                                        json_schema_extra=_time_schema("2026-06-01", "2026-05-31T23:59:59Z"))]
KnownAtParam = Annotated[str | None, Param(description=_KNOWN_AT_HELP,
                                           json_schema_extra=_time_schema("2099-01-01", "2026-06-01T12:00:00Z"))]

# The choices, as types: FastAPI checks them and the document lists them (tests/unit/http checks
# they are the service's own lists).
Mode = Literal["cohort", "period"]
Model = Literal["first", "last", "linear", "u_shaped", "time_decay"]
Conversion = Literal["mql", "sql", "won"]
LeadsBy = Literal["channel", "campaign"]
SpeedBy = Literal["owner", "channel", "campaign"]
SlaBy = Literal["rule", "owner"]
Stage = Literal["captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified"]

Interval = Literal["week", "month"]
IntervalParam = Annotated[Interval | None, Param(
    description="Also one funnel per ISO week (Monday 00:00 UTC) or UTC calendar month of the window, in "
                "`intervals`: leads captured in it (cohort) or entering a stage in it (period). Without from/to "
                "the window runs from the first to the last interval with data; at most 1,000 intervals (a 400 "
                "otherwise).",
)]
#: `previous` or two times joined by `..`
#: two times joined by `..` (a window), without anchors
_WINDOW = time_pattern(plus="+ ").removeprefix("^").removesuffix("$") + r"\.\." + \
    time_pattern(plus="+ ").removeprefix("^").removesuffix("$")
COMPARE_PATTERN = "^(previous|" + _WINDOW + ")$"
_COMPARE = re.compile(COMPARE_PATTERN.removesuffix("$") + r"\Z")
CompareToParam = Annotated[str | None, Param(
    description="Also answer for another window, in `compare`, and this window minus that one in `difference`: "
                "`previous` (the window of the same length just before `from`; whole calendar months when from "
                "and to are the 1st of a month, so a quarter compares with the previous quarter; needs from and "
                "to; a window that would start before year 1 starts there) or `FROM..TO` (two dates or times as "
                "for `from`, the first before the second). With `interval`, each window has its own intervals.",
    json_schema_extra={"pattern": COMPARE_PATTERN, "examples": ["2026-01-01..2026-04-01"]},
)]
#: two times joined by `..`
PERIOD_PATTERN = "^" + _WINDOW + "$"
PeriodParam = Annotated[str, Param(
    description="The period the revenue is for: FROM..TO, two dates or times as for `from` (TO exclusive, after "
                "FROM, at most 3,653 days later).",
    json_schema_extra={"pattern": PERIOD_PATTERN, "examples": ["2026-07-01..2026-10-01"]},
)]
RevenueParam = Annotated[float, Param(gt=0, le=1e12, description="The revenue target, in the reporting currency "
                                                                "(at most 10^12).",
                                      json_schema_extra={"examples": [500000]})]
LookbackParam = Annotated[str, Param(
    description="The history: the leads captured this long before as_of, a whole number and a unit s, m, h, d or "
                "w (at most 3,653 days).", pattern="^[0-9]{1,9}[smhdw]$")]
MixParam = Annotated[str | None, Param(
    description="Share the target between the groups yourself: group=share pairs joined by commas, the shares "
                "between 0 and 1 and summing to 1 (needs `by`), e.g. paid_search=0.6,webinar=0.4. Default: each "
                "group's share of the won revenue.")]


def parse_period(value: str, name: str = "period") -> tuple[datetime, datetime]:
    """FROM..TO as two parsed times (errors name the parameter `name`)."""
    start, sep, end = value.partition("..")
    if not sep:
        raise ParameterError(f"{name}: {value!r} is not FROM..TO (two dates or RFC 3339 times joined by two dots, "
                             "e.g. 2026-07-01..2026-10-01)")
    a, b = parse_time(start, name), parse_time(end, name)
    assert a is not None and b is not None
    return a, b


ModeParam = Annotated[Mode, Param(
    description="cohort (default): the leads captured in [from, to); period: the measured event "
                "(stage entry, end of a stay, conversion, assignment) occurred in [from, to).",
)]
ModelParam = Annotated[Model, Param(
    description="Attribution model: first, last, linear (equal), u_shaped (40/20/40), "
                "time_decay (7-day half-life).",
)]
ConversionParam = Annotated[Conversion, Param(description="The stage whose entries are credited.")]
FunnelBy = Literal["channel", "campaign", "owner"]
FunnelByParam = Annotated[FunnelBy | None, Param(
    description="Group by the channel or campaign of the lead's capture (first touch), or by the owner the lead "
                "had when it entered each stage (the accepting owner for sal; null before any assignment).",
)]
LeadsByParam = Annotated[LeadsBy | None, Param(
    description="Group by the channel or campaign of the lead's capture (first touch).",
)]
SpeedByParam = Annotated[SpeedBy | None, Param(
    description="Group by the owner of the assignment, or the lead's capture channel or campaign.",
)]
SlaByParam = Annotated[SlaBy, Param(
    description="One row per SLA rule (default), or per rule and owner (the owner at the deadline when "
                "breached, else at the clock's end).",
)]
PipelineBy = Literal["owner", "channel", "campaign"]
PipelineByParam = Annotated[PipelineBy, Param(
    description="Group by the lead's owner at as_of (default; null: unowned), or the channel or campaign of its "
                "capture.",
)]
StageParam = Annotated[Stage | None, Param(description="Only leads now (at as_of) in this stage.")]
LimitParam = Annotated[int, Param(ge=1, le=MAX_LIMIT,
                                  description=f"At most this many leads (1 to {MAX_LIMIT:,}), newest first.")]
ReasonStage = Literal["lost", "disqualified", "recycled", "rejected"]
ReasonsBy = Literal["channel", "campaign", "owner"]
ReasonStageParam = Annotated[ReasonStage, Param(
    description="Whose reasons: lost (LeadLost), disqualified (LeadDisqualified), recycled (every event entering "
                "recycled: LeadRecycled and LeadRejectedBySales) or rejected (LeadRejectedBySales alone: sales "
                "handed the lead back, which enters recycled).",
)]
ReasonsByParam = Annotated[ReasonsBy | None, Param(
    description="Group by the channel or campaign of the lead's capture, or the owner the lead had at the event "
                "(before a rejection or a recycle cleared it; no owner: key null).",
)]
ReachedParam = Annotated[Stage | None, Param(
    description="Drill down: exactly the leads the funnel counts in this stage, of the funnel's window (`mode`, "
                "`from`, `to`, `as_of`, `known_at`) and group (`by`, `key`), ordered by the time of the entry that "
                "counted, then lead id; `limit` per page, `next` names the page after. Without it, `mode`, "
                "`from`, `to`, `by`, `key` and `after` are refused (a 400).",
    json_schema_extra={"examples": ["sal"]},
)]
DrillModeParam = Annotated[Mode | None, Param(
    description="With `reached`: the funnel's mode (default cohort). cohort: the leads captured in [from, to) "
                "that entered the stage by as_of; period: the leads with an entry into the stage in [from, to).",
)]
DrillByParam = Annotated[FunnelBy | None, Param(
    description="With `reached` and `key`: the cell of one group of the funnel grouped by this (default: every lead).",
    json_schema_extra={"examples": ["channel"]},
)]
KeyParam = Annotated[str | None, Param(
    description="With `by`: the group's key as the funnel answer shows it (channel and campaign in any case, an owner "
                "exactly); `(none)` is the leads captured without a campaign, or the entries without an owner.",
    json_schema_extra={"examples": ["webinar", "(none)"]},
)]
AfterParam = Annotated[str | None, Param(
    description="With `reached`: the page after the one whose `next` this is, with the same other parameters "
                "(another cell's cursor, or a text that is not a cursor, is a 400).",
    json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$"},
)]
#: a lead id as the store writes it: a UUID in its hyphenated form (any case)
LEAD_ID_PATTERN = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
_LEAD_ID = re.compile(LEAD_ID_PATTERN.removesuffix("$") + r"\Z")
LeadIdParam = Annotated[str, PathParam(description="The lead id (a UUID, hyphenated).",
                                       json_schema_extra={"format": "uuid", "pattern": LEAD_ID_PATTERN})]

# a '+' in a query string decodes to a space: "…T09:30:00 01:00" means "…T09:30:00+01:00"
_SPACE_FOR_PLUS = re.compile(r" ([0-9]{2}:[0-9]{2})\Z")


def parse_time(value: str | None, name: str) -> datetime | None:
    """The CLI's parser (`schemas.times.parse_user_time`) on exactly what `TIME_PATTERN` admits,
    with HTTP's error wording."""
    if value is None:
        return None
    text = _SPACE_FOR_PLUS.sub(r"+\1", value)
    try:
        parsed = parse_user_time(text)
    except TimeFormatError as exc:
        raise ParameterError(f"{name}: {exc}") from None
    if _TIME.fullmatch(value) is None:  # white space around it: the CLI forgives it, the document does not
        raise ParameterError(f"{name}: {value!r} is not a date (2026-02-01) or an RFC 3339 time "
                             "(2026-02-01T09:30:00Z): remove the white space around it")
    return parsed


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
    if _LEAD_ID.fullmatch(value) is None:
        raise ParameterError(f"lead_id: {value!r} is not a lead id (a hyphenated UUID)")
    return UUID(value)


def parse_compare(value: str | None) -> str | tuple[datetime, datetime] | None:
    """`previous`, or FROM..TO as two parsed times."""
    if value is None or value == "previous":
        return value
    if _COMPARE.fullmatch(value) is None:
        raise ParameterError(f"compare_to: {value!r} is neither previous nor FROM..TO (two dates or RFC 3339 "
                             "times joined by two dots, e.g. 2026-01-01..2026-04-01)")
    return parse_period(value, "compare_to")


def build_query(*, from_: str | None = None, to: str | None = None, as_of: str | None = None,
                known_at: str | None = None, compare_to: str | None = None, **rest: Any) -> Query:
    """A Query from request parameters; times are parsed here, the rest is checked by the service."""
    return Query(from_=parse_time(from_, "from"), to=parse_time(to, "to"), as_of=parse_time(as_of, "as_of"),
                 known_at=parse_time(known_at, "known_at"), compare_to=parse_compare(compare_to), **rest)
