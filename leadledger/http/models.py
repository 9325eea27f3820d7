"""What the API answers: orjson bodies, `{"error": ...}`, and the pydantic models that only
document the bodies in the OpenAPI document (docs/contract.md describes every field)."""

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


# Documentation models for the OpenAPI document. Bodies are not validated against them: the
# service's dicts are sent as they are (with the window first, `leadledger.answers`).


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


class Window(_Doc):
    """What every aggregate answer starts with: the window and the instants it describes."""

    mode: Literal["cohort", "period"] = Field(description="cohort: leads captured in [from, to); period: "
                                              "the measured event occurred in [from, to).")
    from_: str | None = Field(alias="from", description="Window start (inclusive), null: unbounded.")
    to: str | None = Field(description="Window end (exclusive), null: unbounded.")
    as_of: str | None = Field(description="Only events that occurred at or before this; null: now.")
    known_at: str | None = Field(description="...and were recorded at or before this; null: whatever is stored.")


class TrendInterval(_Doc):
    label: str = Field(description="2026-W05 (ISO week) or 2026-02 (UTC month).")
    from_: str = Field(alias="from", description="The interval's start (inclusive): the window's start for the first.")
    to: str = Field(description="Its end (exclusive): the window's end for the last.")
    groups: list[FunnelGroup]


class FunnelCompared(_Doc):
    from_: str | None = Field(alias="from", description="The other window's start (inclusive).")
    to: str | None = Field(description="The other window's end (exclusive).")
    groups: list[FunnelGroup]


class Differences(_Doc):
    groups: list[dict[str, Any]] = Field(
        description="Per group key of either window, the group's figures as this window's minus the other's "
        "(null where either is null); a group found in one window only counts 0 in the other, its other figures "
        "are null.")


class FunnelBody(Window):
    by: str | None
    groups: list[FunnelGroup]
    interval: Literal["week", "month"] | None = Field(None, description="With `interval`: week or month.")
    intervals: list[TrendInterval] | None = Field(None, description="With `interval`: one funnel per interval "
                                                   "of the window, in time order.")
    compare: FunnelCompared | None = Field(None, description="With `compare_to`: the other window's funnel.")
    difference: Differences | None = Field(None, description="With `compare_to`: this window minus the other.")


class Stat(_Doc):
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None


class VelocityGroup(_Doc):
    key: str | None
    time_in_stage: dict[str, Stat] = Field(description="Completed stays per stage, in seconds.")
    time_to_stage: dict[str, Stat] = Field(description="First entry minus capture time (mql, sal, sql, won).")


class VelocityCompared(_Doc):
    from_: str | None = Field(alias="from", description="The other window's start (inclusive).")
    to: str | None = Field(description="The other window's end (exclusive).")
    groups: list[VelocityGroup]


class VelocityBody(Window):
    by: str | None
    groups: list[VelocityGroup]
    compare: VelocityCompared | None = Field(None, description="With `compare_to`: the other window's answer.")
    difference: Differences | None = Field(None, description="With `compare_to`: this window minus the other.")


class AttributionGroup(_Doc):
    key: str | None
    conversions: float = Field(description="Attributed conversions (fractional credit).")
    revenue: float | None = Field(
        description="Attributed revenue (amount × credit) in the reporting currency (`currency`), each amount "
        "converted at the rate in effect on its won date; null unless conversion=won."
    )
    unconverted: dict[str, float] | None = Field(
        description="Per currency, the attributed amounts (amount × credit, in that currency) with no rate on "
        'their won date, e.g. {"USD": 1234.5}: never part of `revenue`; null unless conversion=won.'
    )


class AttributionCompared(_Doc):
    from_: str | None = Field(alias="from", description="The other window's start (inclusive).")
    to: str | None = Field(description="The other window's end (exclusive).")
    groups: list[AttributionGroup]


class AttributionBody(Window):
    model: str
    conversion: str
    by: str | None
    currency: str = Field(description="The reporting currency of `revenue` (LEADLEDGER_REPORTING_CURRENCY).")
    groups: list[AttributionGroup]
    compare: AttributionCompared | None = Field(None, description="With `compare_to`: the other window's answer.")
    difference: Differences | None = Field(None, description="With `compare_to`: this window minus the other.")


class SpeedGroup(_Doc):
    key: str | None = Field(description="The owner of the assignment; null without `by`.")
    assignments: int
    contacted: int
    within_5m: int
    p50_s: float | None
    p90_s: float | None


class SpeedBody(Window):
    by: str | None
    groups: list[SpeedGroup]


class DelayStat(_Doc):
    count: int
    p50_s: float | None
    p90_s: float | None


class SpeedSplitGroup(SpeedGroup):
    system_delay: DelayStat = Field(description="An ownerless lead's capture, or its entry into a routing stage "
                                    "while a policy with [routing] is in force, to its first assignment after it.")
    human_delay: DelayStat = Field(description="Assignment to the lead's first contact (the response times).")


class SpeedCompared(_Doc):
    from_: str | None = Field(alias="from", description="The other window's start (inclusive).")
    to: str | None = Field(description="The other window's end (exclusive).")
    groups: list[SpeedSplitGroup]


class SpeedSplitBody(Window):
    by: str | None
    groups: list[SpeedSplitGroup]
    compare: SpeedCompared | None = Field(None, description="With `compare_to`: the other window's answer.")
    difference: Differences | None = Field(None, description="With `compare_to`: this window minus the other.")


class SlaRow(_Doc):
    sla: str = Field(description="The SLA rule id.")
    group: str | None = Field(description="The rule id (by=rule) or the clock's owner (by=owner; null: no owner).")
    started: int
    met: int = Field(description="Stopped at or before the deadline.")
    breached: int = Field(description="The deadline passed without a stop (stopped later, or still running).")
    restarted: int = Field(description="Restarted by a new start before the deadline.")
    open: int = Field(description="Running at the evaluation instant, deadline not passed.")
    at_risk: int = Field(description="Open and past the warning (warn_at × target).")
    compliance: float | None = Field(description="met / (met + breached); null when both are 0.")
    p50_seconds: float | None = Field(description="Nearest-rank median of the counted time of the stopped clocks.")
    p90_seconds: float | None


class SlaBody(_Doc):
    from_: str | None = Field(alias="from", description="Clocks started at or after this; null: unbounded.")
    to: str | None = Field(description="...and before this; null: unbounded.")
    as_of: str | None = Field(description="Only events that occurred at or before this; null: now.")
    known_at: str | None = Field(description="...and were recorded at or before this; null: whatever is stored.")
    evaluated_at: str = Field(description="The instant the clocks were judged at (as_of, else known_at, else now).")
    by: Literal["rule", "owner"]
    policy_version: int | None = Field(description="The latest published policy version (its rules are listed).")
    rules: list[SlaRow]
    note: str | None = Field(description="Why there are no rules (no policy published, or no SLA rules).")


class QualificationRow(_Doc):
    source: Literal["scorer", "external", "override", "all"] = Field(
        description="scorer: leadledger's scorer qualified the lead; override: a person did, with a reason; "
        "external: the guard passed on a score from upstream; all: every source, each lead once."
    )
    entries: int = Field(description="MQL entries that occurred in the window.")
    leads: int = Field(description="The distinct leads among them.")
    won: int = Field(description="Those leads won at or after one of their counted entries.")
    rate: float | None = Field(description="won / leads; null without leads.")


class QualificationBody(_Doc):
    from_: str | None = Field(alias="from", description="MQL entries at or after this; null: unbounded.")
    to: str | None = Field(description="...and before this; null: unbounded.")
    as_of: str | None = Field(description="Only events that occurred at or before this; null: now.")
    known_at: str | None = Field(description="...and were recorded at or before this; null: whatever is stored.")
    sources: list[QualificationRow] = Field(description="scorer, external and override, in that order.")
    total: QualificationRow = Field(description="Over every source (`source` = `all`), each lead once.")


class LeadRow(_Doc):
    lead_id: str
    stage: str
    owner: str | None
    score: int | None
    channel: str | None
    campaign: str | None
    captured_at: str | None
    last_change_at: str | None
    entered_at: str | None = Field(None, description="With `reached`: the time of the entry the funnel counted.")


class LeadsBody(_Doc):
    as_of: str | None
    known_at: str | None
    leads: list[LeadRow] = Field(description="Newest first; with `reached`, by `entered_at`, then lead id.")
    mode: Literal["cohort", "period"] | None = Field(None, description="With `reached`: the funnel's mode.")
    from_: str | None = Field(None, alias="from", description="With `reached`: the funnel's window start.")
    to: str | None = Field(None, description="With `reached`: the funnel's window end.")
    reached: str | None = Field(None, description="With `reached`: the stage of the cell.")
    by: Literal["channel", "campaign", "owner"] | None = Field(None, description="With `reached`: the grouping of the cell.")
    key: str | None = Field(None, description="With `reached`: the group's key (null: every lead).")
    next: str | None = Field(None, description="With `reached`: the `after` of the next page; null on the last.")


class HistoryBody(_Doc):
    lead_id: str
    stage: str | None = Field(description="The lead's stage at `as_of` (null if not yet captured then).")
    as_of: str | None
    known_at: str | None
    events: list[dict[str, Any]] = Field(description="CloudEvents 1.0 envelopes in store order; personal "
                                         "fields read `[sealed]` unless the server hands out personal data.")


class ReasonCount(_Doc):
    reason: str = Field(description="The reason as the event stored it.")
    count: int = Field(description="The group's events that gave it.")
    share: float = Field(description="count / the group's events.")


class ReasonsGroup(_Doc):
    key: str | None = Field(description="Channel or campaign of the lead's capture, or the owner at the event (null: "
                            "no owner); null without `by`.")
    events: int = Field(description="The group's events entering the stage in the window (at least 1).")
    reasons: list[ReasonCount] = Field(description="Most frequent first, then by reason.")


class ReasonsBody(_Doc):
    stage: Literal["lost", "disqualified", "recycled", "rejected"] = Field(
        description="Whose reasons: recycled counts every event entering recycled (LeadRecycled and "
        "LeadRejectedBySales), rejected only LeadRejectedBySales.")
    from_: str | None = Field(alias="from", description="Events that occurred at or after this; null: unbounded.")
    to: str | None = Field(description="...and before this; null: unbounded.")
    as_of: str | None = Field(description="Only events that occurred at or before this; null: now.")
    known_at: str | None = Field(description="...and were recorded at or before this; null: whatever is stored.")
    by: Literal["channel", "campaign", "owner"] | None
    events: int = Field(description="Every group's events: the events entering the stage in the window.")
    groups: list[ReasonsGroup] = Field(description="By key (null last); only groups with events.")


class OpenCounts(_Doc):
    mql: int = Field(description="Leads in mql at as_of.")
    sal: int = Field(description="Leads in sal at as_of.")
    sql: int = Field(description="Leads in sql at as_of.")


class PipelineFigures(_Doc):
    open: OpenCounts = Field(description="The leads open at as_of, per stage (won, lost, recycled and "
                             "disqualified leads are not open).")
    value: float = Field(description="The sum of the expected amounts of the leads in sql (each the amount their "
                         "current stay's SQL entry stated) in the reporting currency (`currency`), each at the rate "
                         "in effect on the SQL entry's date.")
    with_amount: int = Field(description="Leads in sql whose SQL entry stated an expected amount.")
    without_amount: int = Field(description="Leads in sql whose SQL entry stated none.")
    unconverted: dict[str, float] = Field(
        description="Per currency, the expected amounts with no rate on the date of their SQL entry, "
        'e.g. {"USD": 1234.5}: never part of `value`.')


class PipelineGroup(PipelineFigures):
    key: str | None = Field(description="The lead's owner at as_of (null: unowned), or its capture's channel or "
                            "campaign.")


class PipelineBody(_Doc):
    as_of: str | None = Field(description="Only events that occurred at or before this; null: now.")
    known_at: str | None = Field(description="...and were recorded at or before this; null: whatever is stored.")
    by: Literal["owner", "channel", "campaign"]
    currency: str = Field(description="The reporting currency of `value` (LEADLEDGER_REPORTING_CURRENCY).")
    groups: list[PipelineGroup] = Field(description="By key; the unowned group (null) last.")
    total: PipelineFigures = Field(description="Over every group.")


#: every query answers CSV too, for `Accept: text/csv`
CSV_CONTENT: dict[str, Any] = {"text/csv": {"schema": {
    "type": "string",
    "description": "RFC 4180 with a header row: the answer's window columns, what names the group, then `figure` "
                   "(a dotted path into the JSON group) and `value` (empty = null), one row per group and figure (and "
                   "per reason of a reasons group, in the `reason` column); "
                   "the lead list and a history: one row per lead or event."}}}


class Health(_Doc):
    status: Literal["ok"]


# Every error is `ErrorBody` as application/json, whatever the endpoint's own media type (the
# document builder in `app` files them so).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A bad, unknown or repeated parameter; the message names it."},
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (with `WWW-Authenticate: Bearer`)."},
}
SERVER_RESPONSES: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorBody, "description": "The store holds an event the server cannot read, or an internal "
          "error (details only in the server log)."},
    503: {"model": ErrorBody, "description": "The server is not configured for its store, or the read models "
          "belong to another store."},
}
#: what any path answers outside its operations (filed under the document's `components.responses`)
OTHER_RESPONSES: dict[str, tuple[int, str]] = {
    "NotFound": (404, "No such path."),
    "MethodNotAllowed": (405, "The path serves only GET (`Allow: GET`)."),
}


class PlanRates(_Doc):
    mql_sal: float | None = Field(alias="mql->sal", description="The cohort's sal / mql (distinct leads).")
    sal_sql: float | None = Field(alias="sal->sql", description="The cohort's sql / sal.")
    sql_won: float | None = Field(alias="sql->won", description="The cohort's won / sql.")


class PlanGroup(_Doc):
    key: str | None = Field(description="Channel or campaign of the leads' capture; null without `by`.")
    captured: int = Field(description="Leads of the group captured in the lookback window.")
    reached: dict[str, int] = Field(description="How many of them reached mql, sal, sql and won by as_of.")
    won: int = Field(description="Distinct leads of the cohort that reached won.")
    win_rate: float | None = Field(description="won / captured; null without leads.")
    win_rate_low: float | None = Field(description="The 80 % Wilson score interval's lower bound.")
    win_rate_high: float | None = Field(description="...and upper bound.")
    won_revenue: float = Field(description="The converted won amounts of the cohort, in the reporting currency.")
    revenue_per_won: float | None = Field(description="won_revenue over the won leads whose amounts all converted.")
    share: float = Field(description="The group's share of the target: the mix given, else of all groups' won "
                         "revenue.")
    target: float = Field(description="revenue × share.")
    rates: PlanRates = Field(description="The cohort's stage-to-stage rates the stage needs use.")
    time_to_won_p50_s: float | None = Field(description="Nearest-rank median of capture to first won, seconds.")
    time_to_won_p90_s: float | None = Field(description="...and 90th percentile.")
    deals_needed: int | None = Field(description="ceil(target / revenue_per_won); null when `why` says why not.")
    leads_needed: int | None = Field(description="ceil(deals_needed / win_rate).")
    leads_needed_low: int | None = Field(description="ceil(deals_needed / win_rate_high).")
    leads_needed_high: int | None = Field(description="ceil(deals_needed / win_rate_low).")
    capture_by: str | None = Field(description="The period's end minus time_to_won_p50: capture the leads by then.")
    sql_needed: int | None = Field(description="ceil(deals_needed / rate(sql->won)).")
    sal_needed: int | None = Field(description="ceil(sql_needed / rate(sal->sql)).")
    mql_needed: int | None = Field(description="ceil(sal_needed / rate(mql->sal)).")
    why: str | None = Field(description="Why the group cannot be planned (no leads, no wins, no revenue); null "
                            "when it is.")


class PlanTotal(_Doc):
    deals_needed: int
    leads_needed: int
    leads_needed_low: int
    leads_needed_high: int
    mql_needed: int
    sal_needed: int
    sql_needed: int
    target_planned: float = Field(description="The target of the groups that could be planned.")
    target_unplanned: float = Field(description="The target left on groups that cannot be planned.")
    groups_unplanned: int


class PlanRep(_Doc):
    rep: str
    calendar: str
    capacity: int | None = Field(description="Open leads the rep holds at most; null: no limit.")
    working_days: int = Field(description="Working days of the rep's calendar in the period (holidays out).")
    present_days: int = Field(description="...of which the rep is not absent.")
    takes: float | None = Field(description="capacity × period days / open_days × present_days / working_days.")


class PlanCapacity(_Doc):
    policy_version: int | None = Field(description="The published policy checked; null: none, or a file given.")
    sal_needed: int = Field(description="The total SALs needed.")
    working_days: int | None = Field(description="Days of the period on which at least one rep works.")
    sal_per_working_day: float | None
    open_days: float | None = Field(description="The cohort's mean completed sal stay plus mean completed sql stay.")
    sal_capacity: float | None = Field(description="What the reps take in the period, in all.")
    sal_capacity_per_working_day: float | None
    utilization: float | None = Field(description="sal_needed / sal_capacity.")
    fits: bool | None
    why: str | None = Field(description="Why the check is incomplete (no policy, no reps, unlimited capacity, ...).")


class PlanBody(_Doc):
    revenue: float
    currency: str = Field(description="The reporting currency.")
    period_from: str
    period_to: str
    lookback: str
    history_from: str = Field(description="as_of − lookback: the cohort was captured in [history_from, as_of).")
    as_of: str = Field(description="Only events that occurred at or before this count.")
    by: Literal["channel", "campaign"] | None
    mix_given: bool
    groups: list[PlanGroup]
    total: PlanTotal = Field(description="Sums over the groups that could be planned.")
    unconverted: dict[str, float] = Field(description="Won amounts left out, per currency without a rate then.")
    capacity: PlanCapacity
    reps: list[PlanRep] = Field(description="The policy's reps in the period (the capacity check's detail).")
