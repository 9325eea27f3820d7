"""Attribution: credit each conversion (entry into mql, sql or won) to its touches, docs/contract.md

A conversion's touches are the capture and touch events after the lead's
previous entry into the same stage, up to the conversion (metric order); with
none, the lead's latest earlier touch gets the credit. Credits of all five
models are computed when the conversion is folded, one row per (conversion,
channel, campaign), so a query is a filtered SUM.

A won row keeps its amount in the deal's own currency. Revenue is converted into
the reporting currency when it is asked for (projections/money.py: the rate in
effect on the won date), so a changed `[fx]` table needs no rebuild; the SQL sums
per currency and rate period, and an amount with no rate is reported per currency
under `unconverted`, never added to revenue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lifecycle.domain.stages import STAGE_EVENTS, Stage
from projections.base import AppendProjection, Lead, Table, campaign_key
from projections.funnel import in_range, visible
from projections.money import NO_CURRENCY, FxTable
from projections.query import Window
from schemas.facts import SECOND, TOUCH_EVENTS, Fact, format_us

CONVERSION_STAGES = frozenset({Stage.MQL.value, Stage.SQL.value, Stage.WON.value})
HALF_LIFE_US = 7 * 86400 * SECOND

CREDITS = Table(
    "rm_attribution_credits",
    (("lead_no", "int"), ("version", "int"), ("seq", "int"), ("stage", "text"), ("converted_at", "int"),
     ("channel", "text"), ("campaign", "text"), ("c_first", "real"), ("c_last", "real"), ("c_linear", "real"),
     ("c_u_shaped", "real"), ("c_time_decay", "real"), ("amount", "real"), ("captured_at", "int"),
     ("currency", "text"), ("recorded_at", "int")),
    key=("lead_no", "version", "seq"),
    # a query reads one conversion stage: covered by one index range (recorded_at and lead_no: --known-at)
    indexes=(("stage", "channel", "campaign", "converted_at", "captured_at", "c_first", "c_last", "c_linear",
              "c_u_shaped", "c_time_decay", "amount", "currency", "recorded_at", "lead_no"),),
)
#: The leads whose credit rows cut at the recording time are not their rows known then (their
#: conversions and touches not `known_in_order`): --known-at re-derives theirs from their timelines.
LATE = Table("rm_attribution_late", (("lead_no", "int"),), key=("lead_no",))


def model_weights(times: Sequence[int], converted_at: int) -> dict[str, list[float]]:
    """Credit of each touch (by time, oldest first) under each model; each list sums to 1."""
    n = len(times)
    first = [1.0] + [0.0] * (n - 1)
    last = [0.0] * (n - 1) + [1.0]
    linear = [1.0 / n] * n
    if n == 1:
        u = [1.0]
    elif n == 2:
        u = [0.5, 0.5]
    else:
        u = [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]
    decay = [2.0 ** (-(converted_at - t) / HALF_LIFE_US) for t in times]
    total = sum(decay)
    return {"first": first, "last": last, "linear": linear, "u_shaped": u,
            "time_decay": [d / total for d in decay]}


def window(facts: Sequence[Fact], i: int) -> list[Fact]:
    """The touches credited for the conversion facts[i]."""
    stage = facts[i].stage
    touches: list[Fact] = []
    j = i - 1
    while j >= 0 and not (facts[j].name in STAGE_EVENTS and facts[j].stage == stage):
        if facts[j].name in TOUCH_EVENTS:
            touches.append(facts[j])
        j -= 1
    if not touches:
        while j >= 0:
            if facts[j].name in TOUCH_EVENTS:
                return [facts[j]]
            j -= 1
    touches.reverse()
    return touches


class Attribution(AppendProjection):
    name = "attribution"
    version = 3  # 2: won rows keep their currency; 3: recorded_at and the late leads
    handles = STAGE_EVENTS | TOUCH_EVENTS
    tables = (CREDITS, LATE)
    late = LATE

    def rows_for(
        self, lead: Lead, facts: Sequence[Fact], i: int, capture: Fact | None
    ) -> Iterable[tuple[str, tuple[Any, ...]]]:
        f = facts[i]
        if f.name not in STAGE_EVENTS or f.stage not in CONVERSION_STAGES:
            return
        touches = window(facts, i)
        if not touches:
            if capture is None:
                return
            touches = [capture]  # no touch before it at all (the capture happened later)
        weights = model_weights([t.occurred for t in touches], f.occurred)
        merged: dict[tuple[str | None, str], list[float]] = {}
        for k, t in enumerate(touches):
            acc = merged.setdefault((t.channel, campaign_key(t.campaign)), [0.0] * 5)
            for m, model in enumerate(("first", "last", "linear", "u_shaped", "time_decay")):
                acc[m] += weights[model][k]
        won = f.stage == Stage.WON.value
        amount = f.value if won else None
        currency = (f.currency or NO_CURRENCY) if won else None
        cap_at = capture.occurred if capture else None
        for seq, ((channel, campaign), credit) in enumerate(merged.items()):
            yield CREDITS.name, (lead.lead_no, f.version, seq, f.stage, f.occurred, channel, campaign,
                                 *credit, amount, cap_at, currency, f.recorded)


def query_sql(w: Window, model: str, conversion: str, table: str, fx: FxTable,
              late: str | None = None) -> tuple[str, list[Any]]:
    """Per (channel, campaign, currency, rate period): credit, credit × amount, rows. The period
    numbers the currency's rates (1 = its first `from`; 0 = before it, or no rates at all). `late`:
    the live rows at a known-at time, cut at K but for the leads that table lists (`funnel.visible`)."""
    period, params = _period_sql(fx)
    conds: list[str] = ["stage = ?"]
    params.append(conversion)
    visible(w, "converted_at", conds, params, late)
    in_range("captured_at" if w.mode == "cohort" else "converted_at", w, conds, params)
    col = f"c_{model}"
    # grouped in index order (channel, campaign); `shape` adds up to the asked grouping
    text = (f"SELECT channel, campaign, currency, {period} AS fx_period, SUM({col}), SUM({col} * amount), "
            f"COUNT(*) FROM {table} WHERE {' AND '.join(conds)} GROUP BY channel, campaign, currency, fx_period")
    return text, params


def _period_sql(fx: FxTable) -> tuple[str, list[Any]]:
    """The rate period of a row's won date, as SQL (latest start first) and its parameters."""
    starts = fx.period_starts()
    if not starts:
        return "0", []
    params: list[Any] = []
    branches = []
    for currency, begins in sorted(starts.items()):
        steps = " ".join(f"WHEN converted_at >= ? THEN {n}" for n in range(len(begins), 0, -1))
        branches.append(f"WHEN ? THEN CASE {steps} ELSE 0 END")
        params += [currency, *reversed(begins)]
    return f"CASE currency {' '.join(branches)} ELSE 0 END", params


def shape(w: Window, model: str, conversion: str, rows: Iterable[tuple[Any, ...]], fx: FxTable) -> dict[str, Any]:
    """The answer: per group its credit, revenue in the reporting currency and, per currency,
    the credited amounts that had no rate on their won date (never added to revenue)."""
    groups: dict[str | None, tuple[float, float, dict[str, float]]] = {}
    for channel, campaign, currency, period, credit, weighted, _ in rows:
        k = channel if w.by == "channel" else campaign if w.by == "campaign" else None
        c, r, unconverted = groups.get(k, (0.0, 0.0, {}))
        c += float(credit or 0.0)
        if conversion == "won" and weighted is not None:
            rate = fx.period_rate(currency, int(period or 0))
            if rate is None:
                code = currency or NO_CURRENCY
                unconverted[code] = unconverted.get(code, 0.0) + float(weighted)
            else:
                r += float(weighted) * rate
        groups[k] = (c, r, unconverted)
    if w.by is None:
        groups.setdefault(None, (0.0, 0.0, {}))
    won = conversion == "won"
    out = [
        {"key": k, "conversions": groups[k][0], "revenue": groups[k][1] if won else None,
         "unconverted": dict(sorted(groups[k][2].items())) if won else None}
        for k in sorted(groups, key=lambda k: (k is None, k or ""))
    ]
    return {"model": model, "conversion": conversion, "by": w.by, "as_of": format_us(w.as_of),
            "currency": fx.reporting, "groups": out}
