"""Pipeline: the leads open at an instant (in mql, sal or sql) per owner, channel or campaign, and the
expected value of those in sql (docs/contract.md).

One row per *span* of a lead: a stretch of time in one open stage (mql, sal, sql) under one owner,
from the event that started it (`entered_at`) to the next stage change or owner change (`left_at`,
null while it lasts). A lead is open at T in the stage and under the owner of the span with
`entered_at <= T < left_at`, so one table answers "now" (`left_at IS NULL`) and every as-of instant
exactly. A span in sql carries the SQL entry of its stay: when it happened (`sql_at`, whose date picks
the FX rate) and the expected amount and currency it stated (null: none). A span's end depends on a
later event, so the lead's rows are re-derived from all its events whenever it gets a new one (as the
lead list does). Each span keeps the recording times of the events that start and end it
(`recorded_at`, `left_recorded`): for a lead whose facts are known in order, its spans known at K are
its live spans started by then, a span whose end was recorded after K still lasting (`known_columns`);
the other leads (`LATE`) are re-derived from the events visible at (T, K).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from typing import Any, NamedTuple

from lifecycle.domain.stages import OWNER_CLEARING_EVENTS, STAGE_EVENTS, Stage
from projections.base import Changes, Lead, Projection, Table, campaign_key, capture_of, known_in_order
from projections.money import FxTable
from projections.query import Query, Window, check
from schemas.facts import Fact, format_us, us_to_dt

#: The stages a lead is open in: the pipeline's stages, in funnel order.
OPEN_STAGES: tuple[str, ...] = (Stage.MQL.value, Stage.SAL.value, Stage.SQL.value)
PIPELINE_BYS = ("owner", "channel", "campaign")
DEFAULT_BY = "owner"
_DAY_US = 86_400_000_000

SPANS = Table(
    "rm_pipeline_spans",
    (("lead_no", "int"), ("version", "int"), ("stage", "text"), ("owner", "text"), ("entered_at", "int"),
     ("left_at", "int"), ("sql_at", "int"), ("amount", "real"), ("currency", "text"), ("channel", "text"),
     ("campaign", "text"), ("recorded_at", "int"), ("left_recorded", "int")),
    key=("lead_no", "version"),
    indexes=(("left_at",), ("entered_at",)),
)
#: The leads whose facts are not known in order: --known-at re-derives their spans.
LATE = Table("rm_pipeline_late", (("lead_no", "int"),), key=("lead_no",))


class _Open(NamedTuple):
    """The lead's state from one event on: its stage, owner and the SQL entry of its stay in sql."""

    version: int
    stage: str | None
    owner: str | None
    entered_at: int
    sql: Fact | None
    recorded: int  # when the event that started it was recorded


def spans(lead: Lead, facts: Sequence[Fact]) -> list[tuple[Any, ...]]:
    """The lead's span rows from its metric-ordered facts (stage events and assignments)."""
    capture = capture_of(facts)
    channel = capture.channel if capture else None
    campaign = campaign_key(capture.campaign) if capture else None
    rows: list[tuple[Any, ...]] = []
    current: _Open | None = None
    stage: str | None = None
    owner: str | None = None
    sql: Fact | None = None

    def close(end: Fact | None) -> None:
        if current is not None and current.stage in OPEN_STAGES:
            entry = current.sql if current.stage == Stage.SQL.value else None
            rows.append((lead.lead_no, current.version, current.stage, current.owner, current.entered_at,
                         end.occurred if end else None, entry.occurred if entry else None,
                         entry.value if entry else None, entry.currency if entry else None, channel, campaign,
                         current.recorded, end.recorded if end else None))

    for f in facts:
        new_stage, new_owner = stage, owner
        if f.name in STAGE_EVENTS:
            new_stage = f.stage
            if f.name == "LeadAcceptedBySales":
                new_owner = f.owner
            elif f.name in OWNER_CLEARING_EVENTS:
                new_owner = None
            if f.name == "LeadQualifiedAsSQL":
                sql = f
        elif f.name == "LeadAssigned":
            new_owner = f.owner
        else:
            continue
        if f.name in STAGE_EVENTS or new_owner != owner:
            close(f)
            current = _Open(f.version, new_stage, new_owner, f.occurred, sql, f.recorded)
        stage, owner = new_stage, new_owner
    close(None)
    return rows


class Pipeline(Projection):
    name = "pipeline"
    version = 2  # 2: the recording times of a span's ends, and the late leads
    handles = STAGE_EVENTS | frozenset({"LeadAssigned"})
    tables = (SPANS, LATE)
    late = LATE

    def fold(self, lead: Lead, history: list[Fact], new: list[Fact]) -> Changes:
        changes = Changes()
        if new:
            changes.replace_lead = True  # every span of the lead again (and its LATE row, if it is late)
            facts = sorted(history + new)
            for row in spans(lead, facts):
                changes.add(SPANS.name, row)
            if not known_in_order(facts):
                changes.add(LATE.name, (lead.lead_no,))
        return changes

    def derive_rows(self, lead: Lead, facts: Sequence[Fact]) -> Changes:
        changes = Changes()
        changes.rows[SPANS.name] = spans(lead, sorted(facts))
        return changes

    def known_columns(self, table: Table, known_at: int) -> str:
        """A span's columns as known at K (a lead known in order): one whose end was recorded later lasts."""
        ended = f"left_recorded <= {int(known_at)}"
        return ", ".join(f"CASE WHEN {ended} THEN {c} END AS {c}" if c in ("left_at", "left_recorded") else c
                         for c in table.column_names)


# ---- the query ------------------------------------------------------------------


def check_pipeline(q: Query) -> Window:
    """The pipeline's parameters: --by (default owner), --as-of, --known-at."""
    return check(replace(q, by=q.by or DEFAULT_BY), bys=PIPELINE_BYS)


def _open_at(w: Window) -> tuple[str, list[Any]]:
    """The spans open at the as-of instant (now: the spans still lasting)."""
    if w.as_of is None:
        return "left_at IS NULL", []
    return "entered_at <= ? AND (left_at IS NULL OR left_at > ?)", [w.as_of, w.as_of]


def counts_sql(w: Window, table: str) -> tuple[str, list[Any]]:
    """(key, stage, leads, leads with an expected amount) of the open spans."""
    where, params = _open_at(w)
    return (f"SELECT {w.by}, stage, COUNT(*), COUNT(amount) FROM {table} WHERE {where} "
            f"GROUP BY {w.by}, stage"), params


def amounts_sql(w: Window, table: str) -> tuple[str, list[Any]]:
    """(key, currency, day of the SQL entry, summed expected amount) of the open spans in sql."""
    where, params = _open_at(w)
    day = f"sql_at / {_DAY_US}"
    return (f"SELECT {w.by}, currency, {day}, SUM(amount) FROM {table} "
            f"WHERE {where} AND stage = ? AND amount IS NOT NULL GROUP BY {w.by}, currency, {day}"), \
        [*params, Stage.SQL.value]


def _empty() -> dict[str, Any]:
    return {"open": dict.fromkeys(OPEN_STAGES, 0), "value": 0.0, "with_amount": 0, "without_amount": 0,
            "unconverted": {}}


def _add(into: dict[str, Any], figures: dict[str, Any]) -> None:
    for stage in OPEN_STAGES:
        into["open"][stage] += figures["open"][stage]
    into["value"] += figures["value"]
    into["with_amount"] += figures["with_amount"]
    into["without_amount"] += figures["without_amount"]
    for currency, amount in figures["unconverted"].items():
        into["unconverted"][currency] = into["unconverted"].get(currency, 0.0) + amount


def compute(w: Window, table: str, query: Callable[..., list[tuple[Any, ...]]], fx: FxTable) -> dict[str, Any]:
    """The answer: per group the open leads per stage and the value of those in sql in the reporting
    currency (each expected amount at the rate of its SQL entry's date; one without a rate is listed
    under `unconverted` in its own currency, never added), and the total over the groups."""
    groups: dict[str | None, dict[str, Any]] = {}
    text, params = counts_sql(w, table)
    for key, stage, leads, with_amount in query(text, params):
        figures = groups.setdefault(key, _empty())
        figures["open"][stage] += int(leads)
        if stage == Stage.SQL.value:
            figures["with_amount"] += int(with_amount)
            figures["without_amount"] += int(leads) - int(with_amount)
    text, params = amounts_sql(w, table)
    for key, currency, day, amount in query(text, params):
        figures = groups.setdefault(key, _empty())
        rate = fx.rate(currency, _date_of(int(day)))
        if rate is None:
            figures["unconverted"][currency] = figures["unconverted"].get(currency, 0.0) + float(amount)
        else:
            figures["value"] += float(amount) * rate
    return shape(w, groups, fx)


def _date_of(day: int) -> date:
    """The UTC date of day number `day` since the epoch."""
    return us_to_dt(day * _DAY_US).date()


def shape(w: Window, groups: dict[str | None, dict[str, Any]], fx: FxTable) -> dict[str, Any]:
    """The pipeline JSON (docs/contract.md): groups by key (null, unowned, last), then the total."""
    total = _empty()
    out = []
    for key in sorted(groups, key=lambda k: (k is None, k or "")):
        figures = groups[key]
        figures["unconverted"] = dict(sorted(figures["unconverted"].items()))
        _add(total, figures)
        out.append({"key": key, **figures})
    total["unconverted"] = dict(sorted(total["unconverted"].items()))
    return {"as_of": format_us(w.as_of), "known_at": format_us(w.known_at), "by": w.by, "currency": fx.reporting,
            "groups": out, "total": total}
