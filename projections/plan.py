"""Plan: from a revenue target to the deals, leads and stage entries it takes, from your own history.

The history is the cohort of leads captured in the lookback window [as_of − lookback, as_of), counting
only events at or before the as-of time. Per group g (channel, campaign or one group):

- captured n, won w (distinct leads that reached won), win rate w / n with its 80 % Wilson score
  interval (z = Φ⁻¹(0.9));
- revenue per won lead A (each won lead's won amounts summed, in the reporting currency at the rate
  of each won date, averaged over the won leads whose amounts all converted), the revenue share s
  (the group's converted won amount over all groups');
- p50 / p90 (nearest rank) of the time from capture to the first won.

The group's target is revenue × s (or × the share given in the mix); then `deals_needed` =
ceil(target / A), `leads_needed` = ceil(deals_needed / win rate) (low and high from the interval's
upper and lower bound), `capture_by` = end of the period − p50, and the stage entries needed with the
cohort's own rates: `sql_needed` = ceil(deals_needed / rate(sql→won)), `sal_needed` = ceil(sql_needed /
rate(sal→sql)), `mql_needed` = ceil(sal_needed / rate(mql→sal)). A group that cannot be planned (no
wins, no revenue) gets nulls and `why`.

With a policy, the SALs needed per working day of the period are compared with what the reps can take
(`capacity`): a rep holding at most `capacity` open leads, each open for `open_days` on average (the
cohort's mean completed stay in sal plus in sql), takes capacity / open_days new leads a day (Little's
law), on the working days of its calendar it is not absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist
from typing import Any

from lifecycle.operations.calendars import absent_on, from_us, local_date
from lifecycle.operations.policy import Calendar, Policy
from projections.money import FxTable
from projections.query import LEAD_BYS, QueryError
from schemas.facts import dt_to_us, format_us

#: z of the 80 % two-sided interval: Φ⁻¹(0.9)
Z80 = NormalDist().inv_cdf(0.9)
DEFAULT_LOOKBACK = "180d"
#: how far a ceil may look past float noise: 10.000000000000002 deals is 10
_NOISE = 1e-9
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
DAY_US = 86_400_000_000
_YEAR_ONE = dt_to_us(datetime(1, 1, 1, tzinfo=UTC))
#: the largest target a plan takes, and the most leads it may answer that it needs
MAX_REVENUE = 1e12
MAX_NEEDED = 10**15
#: the longest lookback and the longest plan period, in days (ten years)
MAX_DAYS = 3_653

Querier = Callable[[str, list[Any]], Sequence[tuple[Any, ...]]]


class PlanError(QueryError):
    """A plan parameter is wrong (a QueryError: exit 2 on the CLI, 400 on the API)."""


@dataclass(frozen=True)
class PlanQuery:
    """The plan's parameters: the revenue target for [start, end), grouping, lookback and as-of."""

    revenue: float
    start: datetime
    end: datetime
    by: str | None = None
    lookback: str = DEFAULT_LOOKBACK
    as_of: datetime | None = None
    #: group key -> share of the target (summing to 1); None: each group's share of the won revenue
    mix: Mapping[str, float] | None = None


def parse_duration(text: str, flag: str = "--lookback") -> timedelta:
    """`180d`, `26w`, `12h`, `90m`, `30s` (a positive whole number and a unit) as a timedelta."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not found or int(found.group(1)) == 0:
        raise PlanError(f"{flag} must be a positive whole number with a unit s, m, h, d or w (e.g. 180d), "
                        f"got {text!r}")
    seconds = int(found.group(1)) * _UNITS[found.group(2)]
    if seconds > MAX_DAYS * 86_400:
        raise PlanError(f"{flag} may be at most {MAX_DAYS} days, got {text!r}")
    return timedelta(seconds=seconds)


def parse_mix(text: str) -> dict[str, float]:
    """`paid=0.6,email=0.4`: group=share pairs, the shares summing to 1 (a campaign group without a
    campaign is `(none)`)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, share = part.rpartition("=")
        key = key.strip()
        if not sep or not key:
            raise PlanError(f"--mix takes group=share pairs separated by commas (e.g. paid=0.6,email=0.4), "
                            f"got {part!r}")
        try:
            value = float(share)
        except ValueError:
            raise PlanError(f"--mix: the share of {key} must be a number, got {share!r}") from None
        if not 0 <= value <= 1:
            raise PlanError(f"--mix: the share of {key} must be between 0 and 1, got {share}")
        if key in mix:
            raise PlanError(f"--mix names {key} twice")
        mix[key] = value
    return mix


@dataclass(frozen=True)
class PlanWindow:
    """A checked plan in integer microseconds."""

    revenue: float
    start: int
    end: int
    by: str | None
    lookback: timedelta
    history_from: int
    as_of: int
    mix: Mapping[str, float] | None


def check_plan(q: PlanQuery, now: datetime) -> PlanWindow:
    """Validate the plan's parameters; `now` is the as-of time when none is given."""
    if not math.isfinite(q.revenue) or not 0 < q.revenue <= MAX_REVENUE:
        raise PlanError(f"--revenue must be a positive amount in the reporting currency, at most {MAX_REVENUE:.0e}, "
                        f"got {q.revenue}")
    if q.by is not None and q.by not in LEAD_BYS:
        raise PlanError(f"--by must be one of {', '.join(LEAD_BYS)} (or omitted), got {q.by!r}")
    for value, flag in ((q.start, "--period"), (q.end, "--period"), (q.as_of, "--as-of")):
        if value is not None and value.tzinfo is None:
            raise PlanError(f"{flag} {value.isoformat()} has no time zone")
    start, end = dt_to_us(q.start), dt_to_us(q.end)
    if start >= end:
        raise PlanError(f"--period must run forwards: {q.start.isoformat()} is not before {q.end.isoformat()}")
    if end - start > MAX_DAYS * DAY_US:
        raise PlanError(f"--period may be at most {MAX_DAYS} days long (ten years), got "
                        f"{(end - start) / DAY_US:,.1f} days")
    lookback = parse_duration(q.lookback)
    as_of = dt_to_us(q.as_of or now)
    history_from = as_of - lookback // timedelta(microseconds=1)
    if history_from < _YEAR_ONE:
        raise PlanError(f"--lookback {q.lookback} before --as-of would start before the year 1")
    if q.mix is not None:
        total = math.fsum(q.mix.values())
        if abs(total - 1.0) > 1e-9:
            shares = ", ".join(f"{k}={v:g}" for k, v in q.mix.items())
            raise PlanError(f"--mix shares must sum to 1, they sum to {total:.9g} ({shares})")
        if q.by is None:
            raise PlanError("--mix shares the target between groups: give --by channel or --by campaign as well")
    return PlanWindow(q.revenue, start, end, q.by, lookback, history_from, as_of, q.mix)


def wilson(wins: int, n: int, z: float = Z80) -> tuple[float, float]:
    """The Wilson score interval of wins / n (n > 0)."""
    p = wins / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def nearest_rank(values: Sequence[int], p: float) -> int | None:
    """The value at rank ceil(p·n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered))) - 1]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def ceil_noise(x: float) -> int:
    return math.ceil(x - _NOISE * max(1.0, abs(x)))


# ---- what the read models give -------------------------------------------------


def wins_sql(w: PlanWindow, credits: str, firsts: str) -> tuple[str, list[Any]]:
    """Every won conversion of the cohort visible at as-of: lead, time, amount, currency and the
    lead's capture channel and campaign (from its first-won row)."""
    return (f"SELECT c.lead_no, c.converted_at, c.amount, c.currency, f.channel, f.campaign FROM {credits} c "
            f"JOIN {firsts} f ON f.lead_no = c.lead_no AND f.stage = 'won' "
            f"WHERE c.stage = 'won' AND c.seq = 0 AND c.converted_at <= ? AND c.captured_at >= ? "
            f"AND c.captured_at < ? AND c.captured_at <= ?", [w.as_of, w.history_from, w.as_of, w.as_of])


def time_to_won_sql(w: PlanWindow, firsts: str) -> tuple[str, list[Any]]:
    return (f"SELECT channel, campaign, since_capture_us FROM {firsts} WHERE stage = 'won' AND entered_at <= ? "
            f"AND captured_at >= ? AND captured_at < ? AND captured_at <= ?",
            [w.as_of, w.history_from, w.as_of, w.as_of])


def open_time_sql(w: PlanWindow, stays: str) -> tuple[str, list[Any]]:
    """Mean completed stay in sal and in sql of the cohort (a stay left at or before as-of)."""
    return (f"SELECT stage, COUNT(*), SUM(duration_us) FROM {stays} WHERE stage IN ('sal', 'sql') "
            f"AND left_at IS NOT NULL AND left_at <= ? AND captured_at >= ? AND captured_at < ? "
            f"AND captured_at <= ? GROUP BY stage", [w.as_of, w.history_from, w.as_of, w.as_of])


def group_of(by: str | None, channel: str | None, campaign: str | None) -> str | None:
    return channel if by == "channel" else campaign if by == "campaign" else None


# ---- the plan ---------------------------------------------------------------------


@dataclass
class History:
    """What the cohort did, per group."""

    reached: dict[str | None, dict[str, int]]  # group -> stage -> distinct leads (the cohort funnel)
    revenue: dict[str | None, dict[int, float]]  # group -> won lead -> converted won amount
    failed: dict[str | None, set[int]]  # group -> won leads with an amount that could not be converted
    unconverted: dict[str, float]  # currency -> amount left out
    time_to_won: dict[str | None, list[int]]  # group -> µs from capture to first won, per won lead
    open_us: float | None  # mean completed sal stay + mean completed sql stay


def history(w: PlanWindow, funnel_groups: Sequence[Mapping[str, Any]], wins: Sequence[tuple[Any, ...]],
            times: Sequence[tuple[Any, ...]], stays: Sequence[tuple[Any, ...]], fx: FxTable) -> History:
    """Collect the cohort's figures per group from the read models' rows."""
    reached = {g["key"]: dict(g["stages"]) for g in funnel_groups}
    revenue: dict[str | None, dict[int, float]] = {}
    failed: dict[str | None, set[int]] = {}
    unconverted: dict[str, float] = {}
    for lead_no, won_at, amount, currency, channel, campaign in wins:
        key = group_of(w.by, channel, campaign)
        per = revenue.setdefault(key, {})
        per.setdefault(int(lead_no), 0.0)
        code = currency or ""
        rate = fx.rate(code, _utc_date(int(won_at))) if code else None
        if rate is None:
            failed.setdefault(key, set()).add(int(lead_no))
            unconverted[code or "(none)"] = unconverted.get(code or "(none)", 0.0) + float(amount or 0.0)
        else:
            per[int(lead_no)] += float(amount or 0.0) * rate
    time_to_won: dict[str | None, list[int]] = {}
    for channel, campaign, since in times:
        time_to_won.setdefault(group_of(w.by, channel, campaign), []).append(int(since))
    means = [int(total) / int(count) for _, count, total in stays if int(count)]
    open_us = sum(means) if means else None
    return History(reached, revenue, failed, dict(sorted(unconverted.items())), time_to_won, open_us)


def _rate(reached: Mapping[str, int], a: str, b: str) -> float | None:
    return reached.get(b, 0) / reached[a] if reached.get(a) else None


NEEDED = ("deals_needed", "leads_needed", "leads_needed_low", "leads_needed_high", "mql_needed", "sal_needed",
          "sql_needed")


def plan_group(w: PlanWindow, key: str | None, h: History, share: float) -> dict[str, Any]:
    """One group's history and what the target asks of it."""
    reached = h.reached.get(key, {})
    n, won = reached.get("captured", 0), reached.get("won", 0)
    low, high = wilson(won, n) if n else (None, None)
    converted = {lead: amount for lead, amount in h.revenue.get(key, {}).items()
                 if lead not in h.failed.get(key, set())}
    won_revenue = math.fsum(converted.values())
    per_won = won_revenue / len(converted) if converted else None
    times = h.time_to_won.get(key, [])
    p50, p90 = nearest_rank(times, 0.5), nearest_rank(times, 0.9)
    target = w.revenue * share
    out: dict[str, Any] = {
        "key": key, "captured": n, "reached": {s: reached.get(s, 0) for s in ("mql", "sal", "sql", "won")},
        "won": won, "win_rate": won / n if n else None, "win_rate_low": low, "win_rate_high": high,
        "won_revenue": won_revenue, "revenue_per_won": per_won, "share": share, "target": target,
        "rates": {"mql->sal": _rate(reached, "mql", "sal"), "sal->sql": _rate(reached, "sal", "sql"),
                  "sql->won": _rate(reached, "sql", "won")},
        "time_to_won_p50_s": None if p50 is None else p50 / 1e6,
        "time_to_won_p90_s": None if p90 is None else p90 / 1e6,
        "deals_needed": None, "leads_needed": None, "leads_needed_low": None, "leads_needed_high": None,
        "capture_by": None if p50 is None or w.end - p50 < _YEAR_ONE else format_us(w.end - p50),
        "sql_needed": None, "sal_needed": None, "mql_needed": None, "why": None,
    }
    if n == 0:
        out["why"] = "no leads of this group were captured in the lookback window"
    elif won == 0:
        out["why"] = f"none of the {n} leads captured in the lookback window was won: no win rate to plan from"
    elif per_won is None:
        out["why"] = ("every won amount of this group is in a currency without an FX rate on its won date "
                      "(see unconverted): no revenue per won lead")
    elif per_won <= 0 and target > 0:
        out["why"] = "the won deals of this group have no revenue: no number of deals reaches a target"
    if out["why"] is not None:
        return out
    assert low is not None and high is not None and per_won is not None
    deals = 0 if target <= 0 else ceil_noise(target / per_won)
    sql, sal, mql = (reached.get(s, 0) for s in ("sql", "sal", "mql"))
    sql_needed = ceil_div(deals * sql, won)
    sal_needed = ceil_div(sql_needed * sal, sql)
    out.update(deals_needed=deals, leads_needed=ceil_div(deals * n, won),
               leads_needed_low=ceil_noise(deals / high) if deals else 0,
               leads_needed_high=ceil_noise(deals / low) if deals else 0,
               sql_needed=sql_needed, sal_needed=sal_needed,
               mql_needed=ceil_div(sal_needed * mql, sal) if sal else 0)
    if max(out[f] for f in NEEDED) > MAX_NEEDED:
        out.update({f: None for f in NEEDED}, why=f"out of reach: the target needs more than {MAX_NEEDED:.0e} leads "
                   "or stage entries at this group's rates")
    return out


def shares(w: PlanWindow, h: History, keys: Sequence[str | None]) -> dict[str | None, float]:
    """Each group's share of the target: the mix given, else its share of the converted won revenue."""
    if w.mix is not None:
        return {k: float(w.mix.get(k or "", 0.0)) for k in keys}
    per = {k: math.fsum(amount for lead, amount in h.revenue.get(k, {}).items() if lead not in h.failed.get(k, set()))
           for k in keys}
    total = math.fsum(per.values())
    return {k: (per[k] / total if total > 0 else 0.0) for k in keys}


def compute(w: PlanWindow, h: History, fx: FxTable, policy: Policy | None, policy_version: int | None,
            lookback_text: str) -> dict[str, Any]:
    """The plan answer (docs/contract.md)."""
    keys = sorted(set(h.reached) | set(w.mix or {}), key=lambda k: (k is None, k or ""))
    if w.by is None:
        keys = [None]
    share_of = shares(w, h, keys)
    groups = [plan_group(w, k, h, share_of[k]) for k in keys]
    planned = [g for g in groups if g["why"] is None]
    unplanned_share = math.fsum(share_of[g["key"]] for g in groups if g["why"] is not None)
    totals: dict[str, Any] = {f: sum(g[f] for g in planned) for f in NEEDED}
    totals.update(target_planned=math.fsum(g["target"] for g in planned),
                  target_unplanned=w.revenue * unplanned_share,
                  groups_unplanned=len(groups) - len(planned))
    check = capacity(w, totals["sal_needed"], h.open_us, policy, policy_version)
    reps = check.pop("reps")
    return {"revenue": w.revenue, "currency": fx.reporting, "period_from": format_us(w.start),
            "period_to": format_us(w.end), "lookback": lookback_text, "history_from": format_us(w.history_from),
            "as_of": format_us(w.as_of), "by": w.by, "mix_given": w.mix is not None,
            "groups": groups, "total": totals, "unconverted": h.unconverted,
            "capacity": check, "reps": reps}


# ---- capacity ------------------------------------------------------------------------


def _utc_date(us: int) -> date:
    return date(1970, 1, 1) + timedelta(days=us // DAY_US)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days)]


def capacity(w: PlanWindow, sal_needed: int, open_us: float | None, policy: Policy | None,
             version: int | None) -> dict[str, Any]:
    """The SALs needed per working day against what the policy's reps can take in the period."""
    out: dict[str, Any] = {"policy_version": version, "sal_needed": sal_needed, "working_days": None,
                           "sal_per_working_day": None, "open_days": None if open_us is None else open_us / DAY_US,
                           "reps": [], "sal_capacity": None, "sal_capacity_per_working_day": None,
                           "utilization": None, "fits": None, "why": None}
    if policy is None:
        out["why"] = "no policy: publish one with reps (or pass --policy FILE) to check the reps' capacity"
        return out
    if not policy.reps:
        out["why"] = "the policy has no reps"
        return out
    start, last = from_us(w.start), from_us(w.end - 1)
    working: set[date] = set()
    unlimited = False
    total = 0.0
    for rep in sorted(policy.reps.values(), key=lambda r: r.id):
        calendar = policy.calendars[rep.calendar]
        days = [d for d in _days(_local(calendar, start), _local(calendar, last) + timedelta(days=1))
                if calendar.hours[d.weekday()] and d not in calendar.holidays]
        present = [d for d in days if not absent_on(rep, d)]
        working.update(present)
        row: dict[str, Any] = {"rep": rep.id, "calendar": rep.calendar, "capacity": rep.capacity,
                               "working_days": len(days), "present_days": len(present), "takes": None}
        if rep.capacity is None:
            unlimited = True
        elif open_us is not None and open_us > 0:
            # Little's law: capacity / open time new leads per day, over the share of working days present
            period_days = (w.end - w.start) / DAY_US
            row["takes"] = rep.capacity * period_days / (open_us / DAY_US) * (len(present) / len(days) if days else 0.0)
            total += row["takes"]
        out["reps"].append(row)
    out["working_days"] = len(working)
    if working:
        out["sal_per_working_day"] = sal_needed / len(working)
    if unlimited:
        out["why"] = "a rep without a capacity can take any number of leads"
        out["fits"] = True
        return out
    if open_us is None or open_us <= 0:
        out["why"] = "no completed sal or sql stay in the lookback window: how long a lead stays open is unknown"
        return out
    out["sal_capacity"] = total
    if working:
        out["sal_capacity_per_working_day"] = total / len(working)
    out["utilization"] = sal_needed / total if total > 0 else None
    out["fits"] = sal_needed <= total
    if total <= 0:
        out["why"] = "no rep is present on a working day of the period"
    return out



def _local(calendar: Calendar, at: datetime) -> date:
    """The local date at `at`; the UTC date where the zone's offset would leave the calendar (year 1, 9999)."""
    try:
        return local_date(calendar, at)
    except OverflowError:
        return at.date()
